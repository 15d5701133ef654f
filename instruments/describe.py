"""What ``selflab drivers`` shows about a driver: its options and declared limits.

:func:`describe_driver` reads a driver class without connecting to anything:

* ``options``: the keyword arguments of ``__init__`` (name, annotation as
  written, default, whether required), i.e. what a config's ``options:`` may
  hold;
* ``limits``, ``capacity``, ``inputs``, ``outputs``: from an instance built with the
  default options when that works without arguments (building never touches a
  device), else from class attributes and a static ``describe()``; ``None``
  when not declared.

The result is plain JSON data.

Example::

    >>> from selflab.simulators.benchmarks import BraninInstrument
    >>> info = describe_driver(BraninInstrument)
    >>> info["limits"]
    {'x1': [-5.0, 10.0], 'x2': [0.0, 15.0]}
    >>> [o["name"] for o in info["options"]]
    ['noise_std', 'seed', 'duration_s']
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from selflab.instruments.protocol import declared_inputs, declared_limits

__all__ = ["describe_driver"]


def describe_driver(cls: type) -> dict[str, Any]:
    """Options, limits, capacity and outputs of the driver class ``cls`` as JSON data."""
    source: Any = cls
    try:
        source = cls()
    except Exception:  # noqa: BLE001 - required options or failing checks: fall back to the class
        pass
    describe = getattr(source, "describe", None)
    static = isinstance(inspect.getattr_static(cls, "describe", None), (staticmethod, classmethod))
    outputs = None
    if (source is not cls or static) and callable(describe):
        try:
            outputs = {str(k): str(v) for k, v in describe().items()}
        except Exception:  # noqa: BLE001 - describe() may need a connection
            outputs = None
    limits = declared_limits(source) if isinstance(getattr(source, "limits", None), dict) else None
    capacity = getattr(source, "capacity", None)
    inputs = declared_inputs(source)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "summary": (inspect.getdoc(cls) or "").split("\n", 1)[0],
        "options": _options(cls),
        "limits": None if limits is None else {k: [low, high] for k, (low, high) in limits.items()},
        "capacity": capacity if isinstance(capacity, int) else None,
        "inputs": None if inputs is None else list(inputs),
        "outputs": outputs,
    }


def _options(cls: type) -> list[dict[str, Any]]:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: show them as written
        hints = {}
    options = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        required = param.default is param.empty
        options.append({
            "name": param.name,
            "type": None if param.annotation is param.empty else _type_name(hints.get(param.name, param.annotation)),
            "default": None if required else _json(param.default),
            "required": required,
        })
    return options


def _type_name(annotation: Any) -> str:
    """``float > 0`` for ``Annotated[float, Field(gt=0)]``, ``int`` for ``int``, and so on."""
    if isinstance(annotation, str):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        bounds = [f"{op} {getattr(m, attr)}" for extra in extras for m in getattr(extra, "metadata", [extra])
                  for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if hasattr(m, attr)]
        return " ".join([_type_name(base), *bounds]) if bounds else _type_name(base)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return repr(value)
