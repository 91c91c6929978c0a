"""A rule's condition: an operator and a threshold on the value, or "every row fires"."""

from __future__ import annotations

import math
import operator as op

from alerts.choices import Operator

OPERATORS = {
    Operator.GT: op.gt,
    Operator.GE: op.ge,
    Operator.LT: op.lt,
    Operator.LE: op.le,
    Operator.EQ: op.eq,
    Operator.NE: op.ne,
}


def condition_holds(operator: str, threshold: float | None, value: float | None) -> bool:
    """Whether a row with `value` makes the rule's condition true.

    An empty operator means every returned row or series fires, whatever its value.
    Otherwise a missing or NaN value never holds (as in SQL and PromQL comparisons).
    """
    if not operator:
        return True
    compare = OPERATORS.get(operator)
    if compare is None:
        raise ValueError(f"unknown operator {operator!r}")
    if value is None or threshold is None:
        return False
    value = float(value)
    if math.isnan(value):
        return False
    return bool(compare(value, float(threshold)))
