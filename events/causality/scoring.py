"""How likely an earlier event caused a later one (docs/causality.md has the derivation).

    d    = exp(-Δt / τ)                         temporal proximity, 1 when simultaneous
    s    = 1 if same service else λ             service affinity
    c    = 1 if both carry the same correlation id else 0
    conf = d * (1 - (1 - p·s) * (1 - β·c))      p = prior of (cause type, effect type)

The prior and the shared correlation id are two independent pieces of evidence combined
as a noisy-OR; temporal proximity scales both. A link is kept when conf >= θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..choices import CausalityType, EventType


@dataclass(frozen=True)
class CausalityParams:
    """Every tunable of the engine, in one place (defaults documented in docs/causality.md)."""

    #: τ: seconds after which temporal proximity has decayed to 1/e.
    time_decay_seconds: float = 600.0
    #: λ: weight of the type prior when cause and effect are on different services.
    cross_service_factor: float = 0.25
    #: β: strength of a shared correlation id as evidence on its own.
    correlation_strength: float = 0.8
    #: θ: links below this confidence are not stored.
    min_confidence: float = 0.3
    #: K: at most this many causes are stored per event (the most confident).
    max_causes_per_event: int = 3
    #: M: per (service, cause type) and per correlation id, the most recent M earlier
    #: events are scored; older ones cannot beat them on temporal proximity.
    candidates_per_key: int = 20
    #: N and window of the pattern detector.
    pattern_min_occurrences: int = 5
    pattern_window_seconds: float = 3600.0
    #: Root-cause walks stop this many links back.
    root_cause_max_depth: int = 10

    @property
    def horizon_seconds(self) -> float:
        """The look-back window: beyond it even a perfect cause scores below θ (d < θ)."""
        return self.time_decay_seconds * math.log(1 / self.min_confidence)


DEFAULT_PARAMS = CausalityParams()

#: (cause type, effect type) -> (prior p, causality type). Pairs not listed have p = 0:
#: they can only be linked by a shared correlation id (causality type `correlation`).
PRIORS: dict[tuple[str, str], tuple[float, str]] = {
    (EventType.DEPLOY, EventType.ERROR): (0.9, CausalityType.DEPLOYMENT),
    (EventType.DEPLOY, EventType.EXCEPTION): (0.9, CausalityType.DEPLOYMENT),
    (EventType.DEPLOY, EventType.ALERT): (0.7, CausalityType.DEPLOYMENT),
    (EventType.DEPLOY, EventType.METRIC): (0.3, CausalityType.DEPLOYMENT),
    (EventType.CONFIG_CHANGE, EventType.ERROR): (0.85, CausalityType.CONFIGURATION),
    (EventType.CONFIG_CHANGE, EventType.EXCEPTION): (0.85, CausalityType.CONFIGURATION),
    (EventType.CONFIG_CHANGE, EventType.ALERT): (0.65, CausalityType.CONFIGURATION),
    (EventType.CONFIG_CHANGE, EventType.SECURITY): (0.4, CausalityType.CONFIGURATION),
    (EventType.ERROR, EventType.ALERT): (0.85, CausalityType.ALERT_TRIGGER),
    (EventType.EXCEPTION, EventType.ALERT): (0.85, CausalityType.ALERT_TRIGGER),
    (EventType.METRIC, EventType.ALERT): (0.6, CausalityType.ALERT_TRIGGER),
    (EventType.SECURITY, EventType.ALERT): (0.8, CausalityType.ALERT_TRIGGER),
    (EventType.ERROR, EventType.ERROR): (0.4, CausalityType.ERROR_PROPAGATION),
    (EventType.ERROR, EventType.EXCEPTION): (0.4, CausalityType.ERROR_PROPAGATION),
    (EventType.EXCEPTION, EventType.ERROR): (0.5, CausalityType.ERROR_PROPAGATION),
    (EventType.EXCEPTION, EventType.EXCEPTION): (0.4, CausalityType.ERROR_PROPAGATION),
    (EventType.AUTH, EventType.SECURITY): (0.6, CausalityType.SECURITY),
}


def _causes_by_effect() -> dict[str, tuple[str, ...]]:
    causes: dict[str, list[str]] = {}
    for cause_type, effect_type in PRIORS:
        causes.setdefault(effect_type, []).append(cause_type)
    return {effect: tuple(sorted(types)) for effect, types in causes.items()}


#: effect type -> the cause types with a prior for it.
CAUSE_TYPES = _causes_by_effect()


def evidence(
    cause_type: str,
    effect_type: str,
    same_service: bool,
    correlated: bool,
    params: CausalityParams = DEFAULT_PARAMS,
) -> tuple[float, str]:
    """(1 - (1 - p*s) * (1 - beta*c), causality type): the confidence before proximity."""
    prior, causality_type = PRIORS.get((cause_type, effect_type), (0.0, CausalityType.CORRELATION))
    affinity = 1.0 if same_service else params.cross_service_factor
    combined = 1.0 - (1.0 - prior * affinity) * (
        1.0 - (params.correlation_strength if correlated else 0.0)
    )
    return combined, causality_type


def reach_seconds(strength: float, params: CausalityParams = DEFAULT_PARAMS) -> float:
    """The largest time gap at which evidence `strength` still scores >= theta (< 0: none)."""
    if strength <= 0:
        return -1.0
    return params.time_decay_seconds * math.log(strength / params.min_confidence)


def proximity(delta_seconds: float, params: CausalityParams = DEFAULT_PARAMS) -> float:
    return math.exp(-max(delta_seconds, 0.0) / params.time_decay_seconds)


def score(
    cause_type: str,
    effect_type: str,
    delta_seconds: float,
    same_service: bool,
    correlated: bool,
    params: CausalityParams = DEFAULT_PARAMS,
) -> tuple[float, str]:
    """(confidence, causality type) of `cause` -> `effect`, `delta_seconds` >= 0 apart."""
    strength, causality_type = evidence(cause_type, effect_type, same_service, correlated, params)
    return min(1.0, proximity(delta_seconds, params) * strength), causality_type
