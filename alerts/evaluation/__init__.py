"""Rule evaluation: datasources behind one contract, chosen through a registry.

`DATASOURCES` maps each AlertRule.datasource value to its datasource; the model's
choices (alerts.choices.Datasource) name the same keys.
"""

from __future__ import annotations

from .base import Datasource, QueryError, Sample
from .external import ExternalDatasource
from .prometheus import PrometheusDatasource
from .sql import SqlDatasource

DATASOURCES: dict[str, Datasource] = {
    source.name: source
    for source in (SqlDatasource(), PrometheusDatasource(), ExternalDatasource())
}


def get_datasource(name: str) -> Datasource:
    """The datasource registered under `name`; QueryError for an unknown one."""
    try:
        return DATASOURCES[name]
    except KeyError:
        raise QueryError(
            f"unknown datasource {name!r}; expected one of {', '.join(DATASOURCES)}"
        ) from None


__all__ = ["DATASOURCES", "Datasource", "QueryError", "Sample", "get_datasource"]
