"""The `external` datasource: alerts pushed in by Prometheus or Alertmanager.

Nothing is polled. The receivers (/api/v2/alerts, /webhook/alerts) hand each pushed
alert to `alerts.evaluation.state.apply_samples(rule, samples)` (an incomplete result:
instances that are not in a push are left alone) and a resolved one to
`state.resolve_instance(instance)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.choices import Datasource as DatasourceChoice

from .base import Datasource, QueryError, Sample

if TYPE_CHECKING:
    from alerts.models import AlertRule


class ExternalDatasource(Datasource):
    name = DatasourceChoice.EXTERNAL
    polled = False
    requires_query = False

    def validate(self, query: str, *, global_rule: bool | None = None) -> None:
        # The query is documentation only (the expression Prometheus evaluates).
        if query is not None and not isinstance(query, str):
            raise QueryError("the query must be text")

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        raise QueryError("external rules are not evaluated here: their alerts are pushed in")
