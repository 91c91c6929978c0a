"""Just enough PromQL lexing to reason about the dashboards' and rules' expressions.

Not a PromQL parser: Prometheus parses and evaluates (the end-to-end test sends every
expression to a real one). This module answers three questions a parser is not needed
for: which metric names an expression reads, what it becomes once Grafana's variables are
substituted, and which sub-expressions feed a rule's comparison (an alert expression such
as `rate(x[5m]) > 10` is rightly empty while nothing is wrong, but `rate(x[5m])` must not be).
"""

from __future__ import annotations

import re

# Words that look like identifiers but are not metric names.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "start", "end", "atan2"}
)
# Keywords followed by a parenthesised label list (not a function call).
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
SET_OPERATORS = ("or", "and", "unless")
# Functions whose result is empty exactly when their argument is not (absence checks).
ABSENCE_FUNCTIONS = ("absent", "absent_over_time")

_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[a-zA-Z0-9]*")
_NUMBER_LITERAL = re.compile(r"^[+-]?(?:[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|inf|nan|Inf|NaN)$")
_VARIABLE = re.compile(r"\$(?:\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|([a-zA-Z0-9_]+))")


class PromQLSyntaxError(ValueError):
    """The expression is unbalanced or has an unterminated string (Prometheus would refuse it)."""


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLSyntaxError(f"unterminated string in {expr!r}")


def _skip_group(expr: str, i: int, close: str) -> int:
    """From an opening bracket at i, return the index after its closing one."""
    opening = expr[i]
    depth = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
            continue
        if char == opening:
            depth += 1
        elif char == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLSyntaxError(f"unbalanced {opening!r} in {expr!r}")


def _next_non_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (`foo`, `foo{a="b"}`, `{__name__="foo"}`)."""
    names: set[str] = set()
    depth = 0
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "()":
            depth += 1 if char == "(" else -1
            if depth < 0:
                raise PromQLSyntaxError(f"unbalanced ')' in {expr!r}")
            i += 1
        elif char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "{":
            end = _skip_group(expr, i, "}")
            names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', expr[i:end]))
            i = end
        elif char == "[":
            i = _skip_group(expr, i, "]")
        elif char == "#":  # a comment runs to the end of the line
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            i = _NUMBER.match(expr, i).end()
        elif match := _IDENT.match(expr, i):
            word = match.group(0)
            i = match.end()
            after = _next_non_space(expr, i)
            followed_by_paren = after < len(expr) and expr[after] == "("
            next_word = _IDENT.match(expr, after)
            grouped = next_word and next_word.group(0).lower() in ("by", "without")
            if word.lower() in LABEL_LIST_KEYWORDS and followed_by_paren:
                i = _skip_group(expr, after, ")")
            elif followed_by_paren or word.lower() in KEYWORDS:
                continue  # a function call or an operator keyword
            elif word.lower() in AGGREGATIONS and grouped:
                continue  # `sum by (le) (...)`
            else:
                names.add(word)
        else:
            i += 1
    if depth:
        raise PromQLSyntaxError(f"unbalanced '(' in {expr!r}")
    return names


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (`$name`, `${name}`, `${name:fmt}`) by the given values."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def variables_of(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)}


def _top_level_operators(expr: str, operators: tuple[str, ...]) -> list[tuple[int, str]]:
    """(position, operator) of each binary operator outside any bracket or string."""
    found = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
        elif char in "({[":
            i = _skip_group(expr, i, {"(": ")", "{": "}", "[": "]"}[char])
        elif char.isalpha() or char == "_":
            match = _IDENT.match(expr, i)
            word = match.group(0)
            if word.lower() in operators:
                found.append((i, word.lower()))
            i = match.end()
        else:
            for op in operators:
                if not op.isalpha() and expr.startswith(op, i):
                    found.append((i, op))
                    i += len(op)
                    break
            else:
                i += 1
    return found


def _skip_modifiers(expr: str) -> str:
    """Drop `bool`, `on(...)`, `ignoring(...)`, `group_left(...)` at the start of an operand."""
    rest = expr.lstrip()
    while True:
        match = _IDENT.match(rest)
        if not match or match.group(0).lower() not in (LABEL_LIST_KEYWORDS | {"bool"}):
            return rest
        rest = rest[match.end() :].lstrip()
        if rest.startswith("("):
            rest = rest[_skip_group(rest, 0, ")") :].lstrip()


def _strip_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and _skip_group(expr, 0, ")") == len(expr):
        expr = expr[1:-1].strip()
    return expr


def _split(expr: str, operators: tuple[str, ...]) -> tuple[list[str], list[str]]:
    positions = _top_level_operators(expr, operators)
    parts, ops, start = [], [], 0
    for position, op in positions:
        parts.append(expr[start:position])
        ops.append(op)
        start = position + len(op)
    parts.append(expr[start:])
    return [_skip_modifiers(part).strip() for part in parts], ops


def data_expressions(expr: str) -> list[str]:
    """The queries that must each return data for a rule expression to be meaningful.

    The comparisons and absence checks that make an alert rightly empty while nothing is
    wrong are taken off: `a > 5` -> [a]; `a > on(x) b` -> [a, b]; `absent(up{job="x"})`
    -> [up{job="x"}]. `a and b` needs both -> [a, b]; `a unless b` -> [a] (b only
    excludes); `a or b` needs either -> ["(a) or (b)"]. An expression without any of
    these is its own data expression.
    """
    expr = _strip_parens(expr)
    parts, ops = _split(expr, ("or",))
    if ops:
        alternatives = [q for part in parts for q in data_expressions(part)]
        return [" or ".join(f"({q})" for q in alternatives)]
    parts, ops = _split(expr, ("and", "unless"))
    if ops:
        kept = [parts[0]] + [part for part, op in zip(parts[1:], ops, strict=True) if op == "and"]
        return [e for part in kept for e in data_expressions(part)]
    parts, ops = _split(expr, COMPARISONS)
    if ops:
        operands = [part for part in parts if not _NUMBER_LITERAL.match(_strip_parens(part))]
        return [e for part in operands for e in data_expressions(part)]
    for function in ABSENCE_FUNCTIONS:
        match = re.match(rf"{function}\s*\(", expr)
        if match and _skip_group(expr, match.end() - 1, ")") == len(expr):
            inner = expr[match.end() : -1].strip()
            return data_expressions(re.sub(r"\[[^\]]*\]\s*$", "", inner))
    return [expr]
