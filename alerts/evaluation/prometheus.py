"""The `prometheus` datasource: a PromQL instant query to PROMETHEUS_URL.

Each series of the result is one sample with its labels (`__name__` dropped, as
Prometheus does for alerts). A `tenant_id` label (the tenant's id as text, as in every
`traversion_*` family) makes the instance that tenant's. PromQL reads every
tenant's metrics, so only global rules (operators) may use this datasource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests
from django.conf import settings

from alerts.choices import Datasource as DatasourceChoice

from .base import Datasource, QueryError, Sample, clean_labels, clean_value

if TYPE_CHECKING:
    from alerts.models import AlertRule

MAX_QUERY_LENGTH = 10_000
MAX_SERIES = 10_000
BRACKETS = {"(": ")", "[": "]", "{": "}"}


def _check_balanced(query: str) -> None:
    """A cheap syntax check at save time; Prometheus parses the rest at evaluation."""
    stack: list[str] = []
    quote = None
    escaped = False
    for char in query:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'`":
            quote = char
        elif char in BRACKETS:
            stack.append(BRACKETS[char])
        elif char in BRACKETS.values():
            if not stack or stack.pop() != char:
                raise QueryError(f"unbalanced {char!r} in the PromQL expression")
    if quote:
        raise QueryError("unterminated string in the PromQL expression")
    if stack:
        raise QueryError(f"missing {stack[-1]!r} in the PromQL expression")


class PrometheusDatasource(Datasource):
    """PromQL instant queries against PROMETHEUS_URL, with a timeout."""

    name = DatasourceChoice.PROMETHEUS

    def validate(self, query: str, *, global_rule: bool | None = None) -> None:
        if not isinstance(query, str) or not query.strip():
            raise QueryError("the PromQL expression is empty")
        if len(query) > MAX_QUERY_LENGTH:
            raise QueryError(f"the PromQL expression is longer than {MAX_QUERY_LENGTH} characters")
        if global_rule is False:
            raise QueryError(
                "PromQL reads every tenant's metrics: only global rules (operators) can use "
                "the prometheus datasource; use the sql datasource for a tenant's rule"
            )
        _check_balanced(query)

    def query(self, expression: str) -> dict:
        """The `data` of a successful instant query, or QueryError saying what failed."""
        url = f"{settings.PROMETHEUS_URL}/api/v1/query"
        timeout = settings.ALERT_PROMETHEUS_TIMEOUT_MS / 1000
        try:
            response = requests.get(
                url,
                params={"query": expression, "timeout": f"{timeout:g}s"},
                timeout=timeout,
                headers={"Accept": "application/json"},
            )
        except requests.Timeout:
            raise QueryError(f"Prometheus at {url} did not answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise QueryError(f"Prometheus at {url} is unreachable: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError:
            raise QueryError(
                f"Prometheus answered HTTP {response.status_code} without JSON"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "") if isinstance(body, dict) else ""
            kind = body.get("errorType", "") if isinstance(body, dict) else ""
            raise QueryError(
                f"Prometheus refused the query (HTTP {response.status_code}"
                f"{', ' + kind if kind else ''}): {error or 'no error message'}"
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise QueryError("Prometheus answered without data")
        return data

    def evaluate(self, rule: AlertRule) -> list[Sample]:
        if rule.tenant_id is not None:
            raise QueryError("only global rules can use the prometheus datasource")
        data = self.query(rule.query)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [Sample(labels={}, value=clean_value(result[1]), tenant_id=None)]
        if kind != "vector":
            raise QueryError(
                f"the expression returns a {kind}; an alert rule needs an instant vector"
            )
        if len(result) > MAX_SERIES:
            raise QueryError(f"the expression returned more than {MAX_SERIES} series")
        from tenants.models import Tenant

        # tenant_id is the tenant's id as text in every traversion_* family; a slug is
        # accepted too (series written by hand or relabelled).
        names = {s.get("metric", {}).get("tenant_id") for s in result} - {None, ""}
        ids = {int(n) for n in names if n.isdigit()}
        tenants = {
            str(pk): pk for pk in Tenant.objects.filter(pk__in=ids).values_list("pk", flat=True)
        }
        tenants.update(Tenant.objects.filter(slug__in=names).values_list("slug", "pk"))
        samples = []
        for series in result:
            metric = series.get("metric", {})
            labels = clean_labels((k, v) for k, v in metric.items() if k != "__name__")
            value = clean_value(series.get("value", [None, None])[1])
            samples.append(
                Sample(labels=labels, value=value, tenant_id=tenants.get(metric.get("tenant_id")))
            )
        return samples
