"""Reading a config file: its text (no more than :data:`MAX_CONFIG_BYTES`)
and its YAML, by PyYAML's safe loader bounded in depth and in the values its
aliases expand to. Each failure is a :class:`ConfigError` with one fault that
says where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from selflab.controller.config_faults import ConfigError, ConfigFault, clip

MAX_CONFIG_BYTES = 1_000_000
"""A config file larger than this is refused unread."""
MAX_YAML_DEPTH = 64
"""Levels of nesting a config's YAML may have."""
MAX_YAML_NODES = 1_000_000
"""Values (scalars and collections) a config's YAML may hold once its aliases
are expanded: a small file with nested aliases ("billion laughs") is refused."""


def read_text(path: Path) -> str:
    """The file's text, read no further than :data:`MAX_CONFIG_BYTES`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError([ConfigFault(loc="", message=f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; a config names "
                                                           "parameters and instruments, keep bulk data in files a driver reads")])
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: cannot read ({clip(str(exc))})")]) from None


def read_yaml(path: Path, text: str) -> Any:
    """Parsed YAML, or :class:`ConfigError` with one fault saying where it went wrong."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except _YamlTooLarge as exc:
        raise ConfigError([ConfigFault(loc="", message=f"{_where(path, exc)}: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([ConfigFault(loc="", message=f"{_where(path, exc)}: YAML syntax error: {clip(problem)}")]) from None
    except RecursionError:
        raise ConfigError([ConfigFault(loc="", message=f"{path}: YAML nested too deeply; flatten it")]) from None
    except ValueError as exc:  # a value the YAML constructor cannot build, e.g. an integer of 5,000 digits
        raise ConfigError([ConfigFault(loc="", message=f"{path}: cannot read a value ({clip(str(exc))})")]) from None


def _where(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)


class _YamlTooLarge(yaml.MarkedYAMLError):
    """YAML nested too deeply, or whose aliases expand to too many values."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing while it composes any document nested
    deeper than :data:`MAX_YAML_DEPTH` levels, holding more than
    :data:`MAX_YAML_NODES` values with its aliases expanded, or with an alias
    inside the collection it names (a cycle).

    Each composed node's expanded size (itself plus its children's sizes, an
    alias counting as the whole node it names) is kept by ``id``, so the
    check costs one pass over the nodes actually written."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            named = self.anchors.get(event.anchor)
            if named is not None and id(named) not in self._sizes:
                raise _YamlTooLarge(problem=f"alias *{clip(event.anchor, 40)} is inside the collection it names; "
                                            "a config cannot contain itself", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise _YamlTooLarge(problem=f"YAML nested more than {MAX_YAML_DEPTH} levels deep; flatten it", problem_mark=event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        if size > MAX_YAML_NODES:
            raise _YamlTooLarge(problem=f"YAML aliases expand to more than {MAX_YAML_NODES:,} values; "
                                        "write the values out or use fewer aliases", problem_mark=node.start_mark)
        self._sizes[id(node)] = size
        return node
