"""A config's faults, one line each naming its field the way a user would
write it (``instruments[0].capacity: must be >= 1``): :class:`ConfigFault`,
:class:`ConfigError`, and :func:`pydantic_fault`, which words a pydantic error
of validating a config (or a planner's options) so.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict

from selflab.controller.config_models import LabConfig, not_finite
from selflab.planners.space import brief


class ConfigFault(BaseModel):
    """One problem with a config: where, and what to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class ConfigError(Exception):
    """A config with one or more faults."""

    def __init__(self, faults: Sequence[ConfigFault], source: str = "") -> None:
        self.faults = list(faults)
        self.source = source
        super().__init__("\n".join(map(str, self.faults)))


def clip(text: str, width: int = 200) -> str:
    """``text`` cut to ``width`` characters, for a message quoting another message."""
    return text if len(text) <= width else text[: width - 3] + "..."



def pydantic_fault(err: Mapping[str, Any], root: type[BaseModel] = LabConfig) -> ConfigFault:
    """One pydantic error of validating ``root`` (a config, or a planner's
    options) as one line naming its field."""
    loc, model = format_loc(tuple(err["loc"]), root)
    kind, ctx, msg = err["type"], err.get("ctx") or {}, str(err["msg"])
    if kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model is not None else []
        last = str(err["loc"][-1])[:100]
        close = difflib.get_close_matches(last, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        message = f"unknown field; {hint}allowed: {', '.join(allowed)}" if allowed else "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        message = f"must be {op} {bound} (got {brief(err.get('input'))})"
    elif kind == "finite_number":
        message = not_finite(err.get("input"))
    elif kind == "string_pattern_mismatch":
        message = f"{brief(err.get('input'))} is not a valid name: start with a letter or digit, then letters, digits, '_' (and '.', '-' for campaign and instrument names)"
    elif kind == "union_tag_invalid":
        loc += ".type"
        message = f"must be one of {ctx.get('expected_tags')} (got {brief(ctx.get('tag'))})"
    elif kind == "value_error":
        message = str(ctx.get("error", msg.removeprefix("Value error, ")))
    else:
        message = msg.replace("Input should be", "must be").replace("String should", "must")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {brief(err['input'])})"
    return ConfigFault(loc=loc, message=message)


def format_loc(loc: tuple[Any, ...], root: type[BaseModel] = LabConfig) -> tuple[str, type[BaseModel] | None]:
    """``('instruments', 0, 'capacity')`` -> ``'instruments[0].capacity'``.

    Walks the model tree alongside, to drop discriminator tags from the path
    and to return the model that owns the last field.
    """
    out = ""
    owner: type[BaseModel] | None = root
    ann: Any = None
    for part in loc:
        pair = _fixed_tuple(ann)
        if isinstance(part, int) and pair:  # a (low, high) pair is one value to the user: name it whole
            ann = pair[part] if part < len(pair) else None
            continue
        if isinstance(part, int):
            out += f"[{part}]"
            ann = _item_type(ann)
            continue
        values = _dict_value_type(ann)
        if values is not None:  # a key of a dict field, e.g. limits.x1
            out += f".{part}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)) else f"[{brief(str(part))}]"
            ann = values
            continue
        tagged = _union_member(ann, part)
        if tagged is not None:
            ann = tagged
            continue
        model = _as_model(ann) if ann is not None else owner
        if model is not None and part in model.model_fields:
            owner = model
            ann = model.model_fields[part].annotation
        else:
            owner = model
            ann = None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f"[{brief(str(part))}]"  # a key a user could not type as a field: show it (kept short)
        else:
            out += f".{part}" if out else str(part)
    return out, owner


def _unwrap(ann: Any) -> list[Any]:
    origin = typing.get_origin(ann)
    if origin is Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(ann) for a in _unwrap(arg)]
    return [ann]


def _fixed_tuple(ann: Any) -> tuple[Any, ...]:
    """The item types of a fixed-size tuple annotation such as ``tuple[float, float]``, else ``()``."""
    for a in _unwrap(ann):
        args = typing.get_args(a)
        if typing.get_origin(a) is tuple and args and Ellipsis not in args:
            return args
    return ()


def _dict_value_type(ann: Any) -> Any:
    """The value type of a ``dict[K, V]`` annotation, else ``None``."""
    for a in _unwrap(ann):
        if typing.get_origin(a) is dict and len(typing.get_args(a)) == 2:
            return typing.get_args(a)[1]
    return None


def _item_type(ann: Any) -> Any:
    for a in _unwrap(ann):
        if typing.get_origin(a) in (list, tuple) and typing.get_args(a):
            return typing.get_args(a)[0]
    return None


def _as_model(ann: Any) -> type[BaseModel] | None:
    models = [a for a in _unwrap(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _union_member(ann: Any, tag: Any) -> Any:
    for a in _unwrap(ann):
        if isinstance(a, type) and issubclass(a, BaseModel) and "type" in a.model_fields:
            if a.model_fields["type"].default == tag:
                return a
    return None
