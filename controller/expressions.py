"""Safe arithmetic expressions of the parameters, for per-experiment costs.

An instrument's cost may depend on what it is asked to do, e.g. a synthesis
that costs more the longer it runs::

    cost: "0.5 + residence_time / 10"

Only numbers, parameter names, ``+ - * / **``, parentheses and the functions
``min max abs exp log sqrt`` are allowed; anything else is refused when the
config loads, never executed. So is an expression longer than
:data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`.

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

from selflab.planners.space import brief

MAX_LENGTH = 1000
"""Characters an expression may have."""
MAX_DEPTH = 100
"""Levels of nesting (operators, calls, parentheses) an expression may have."""
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
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"{brief(text)} is {len(text)} characters long; an expression may have at most {MAX_LENGTH}")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot read {brief(text)}: {exc.msg}") from None
        except ValueError as exc:  # e.g. a null byte
            raise ExpressionError(f"cannot read {brief(text)}: {exc}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"{brief(text)} is nested too deeply to read; simplify it") from None
        if _depth(tree) > MAX_DEPTH:
            raise ExpressionError(f"{brief(text)} is nested more than {MAX_DEPTH} levels deep; simplify it")
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id not in _FUNCTIONS:
                    names.add(node.id)
            elif isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                    raise ExpressionError(f"{brief(text)}: only {', '.join(_FUNCTIONS)} may be called")
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                    raise ExpressionError(f"{brief(text)}: {brief(node.value)} is not a number")
            elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Load, *_BINARY, *_UNARY)):
                raise ExpressionError(f"{brief(text)}: {type(node).__name__} is not allowed; use numbers, parameters, + - * / ** and {', '.join(_FUNCTIONS)}")
        return cls(text, tree, frozenset(names))

    def evaluate(self, values: Mapping[str, Any]) -> float:
        """The value for ``values`` (parameter name -> number); raises
        :class:`ExpressionError` when it cannot be computed or is not finite."""
        try:
            result = float(_eval(self.tree.body, values))
        except (ArithmeticError, ValueError, TypeError, KeyError) as exc:
            raise ExpressionError(f"{brief(self.text)} cannot be evaluated at {format_point(values)}: {exc}") from None
        if not math.isfinite(result):
            raise ExpressionError(f"{brief(self.text)} is not finite ({result}) at {format_point(values)}")
        return result


def format_point(values: Mapping[str, Any]) -> str:
    """``x1=2.5, x2=7.5``: a point for an error message, each value kept short."""
    shown = [f"{name}={brief(value)}" for name, value in list(values.items())[:20]]
    return ", ".join(shown) + (", ..." if len(values) > 20 else "")


def _depth(tree: ast.AST) -> int:
    """How deeply ``tree`` nests, found without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


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
