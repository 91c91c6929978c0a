"""The stand-in every catalogue family becomes when ENABLE_METRICS=false."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _NullTimer:
    """`with metric.time():` and `@metric.time()` that measure nothing."""

    def __enter__(self) -> _NullTimer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __call__(self, func: Callable) -> Callable:
        return func


_NULL_TIMER = _NullTimer()


class DisabledMetric:
    """Same interface as a prometheus_client metric (and its children); records nothing.

    It keeps the family's name, type and label names so `metrics.custom` still rejects
    an unknown label set with collection off: a mistake shows up in development whatever
    the setting.
    """

    def __init__(self, typ: str, name: str, documentation: str, labelnames: tuple[str, ...]):
        self._type = typ
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames

    def __repr__(self) -> str:
        return f"<DisabledMetric {self._type} {self._name}>"

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> DisabledMetric:
        return self

    def inc(self, amount: float = 1, exemplar: Any = None) -> None:
        return None

    def dec(self, amount: float = 1) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def set_to_current_time(self) -> None:
        return None

    def observe(self, amount: float, exemplar: Any = None) -> None:
        return None

    def time(self) -> _NullTimer:
        return _NULL_TIMER

    def count_exceptions(self, exception: Any = Exception) -> _NullTimer:
        return _NULL_TIMER

    def track_inprogress(self) -> _NullTimer:
        return _NULL_TIMER

    def remove(self, *labelvalues: Any) -> None:
        return None

    def clear(self) -> None:
        return None
