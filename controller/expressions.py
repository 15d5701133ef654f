"""Safe arithmetic expressions of the parameters, for per-experiment costs.

An instrument's cost may depend on what it is asked to do, e.g. a synthesis
that costs more the longer it runs::

    cost: "0.5 + residence_time / 10"

Only numbers, parameter names, ``+ - * / **``, parentheses and the functions
``min max abs exp log sqrt`` are allowed; anything else is refused when the
config loads, never executed.

>>> Expression.parse("2 + 3 * x").evaluate({"x": 2.0})
8.0
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "exp": math.exp, "log": math.log, "sqrt": math.sqrt,
}


class ExpressionError(ValueError):
    """An expression that is not allowed, or that cannot be evaluated."""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; ``names`` are the variables it reads."""

    text: str
    tree: ast.Expression
    names: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Expression:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot read {text!r}: {exc.msg}") from None
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id not in _FUNCTIONS:
                    names.add(node.id)
            elif isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                    raise ExpressionError(f"{text!r}: only {', '.join(_FUNCTIONS)} may be called")
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                    raise ExpressionError(f"{text!r}: {node.value!r} is not a number")
            elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *_BINARY, *_UNARY)):
                raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed; use numbers, parameters, + - * / ** and {', '.join(_FUNCTIONS)}")
        return cls(text, tree, frozenset(names))

    def evaluate(self, values: Mapping[str, Any]) -> float:
        """The value for ``values`` (parameter name -> number)."""
        try:
            result = float(_eval(self.tree.body, values))
        except (ArithmeticError, ValueError, TypeError, KeyError) as exc:
            raise ExpressionError(f"{self.text!r} cannot be evaluated for {dict(values)}: {exc}") from None
        if not math.isfinite(result):
            raise ExpressionError(f"{self.text!r} is not finite for {dict(values)}")
        return result


def _eval(node: ast.expr, values: Mapping[str, Any]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _FUNCTIONS[node.func.id](*(_eval(arg, values) for arg in node.args))
    raise ExpressionError(f"unexpected {type(node).__name__}")
