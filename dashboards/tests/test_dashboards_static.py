"""The shipped dashboards load, follow Grafana's current model, and query only real metrics."""

from __future__ import annotations

import json

import pytest

from dashboards import library, promql
from dashboards.tests.known_metrics import known_names, tenant_scoped_names

CURRENT_PANEL_TYPES = {
    "timeseries",
    "stat",
    "table",
    "piechart",
    "heatmap",
    "histogram",
    "bargauge",
    "gauge",
}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# Panels the guide's §Grafana Dashboards lists, by dashboard (matched against titles).
GUIDE_PANELS = {
    "traversion-overview": [
        "Dependencies",
        "Events/sec",
        "Request rate by status",
        "Request latency",
        "Firing alerts",
        "Memory",
        "CPU",
        "WebSocket connections",
        "Rule evaluations/s",
        "Notifications/s",
    ],
    "traversion-causality": [
        "Causality detection rate",
        "Confidence distribution",
        "Patterns detected",
        "Chain length",
        "Causality engine speed",
    ],
    "traversion-security": [
        "Authentication attempts",
        "Failing IPs",
        "Permission violations",
        "Active sessions",
        "Audit events",
    ],
}


@pytest.fixture(scope="module")
def dashboards():
    return library.load_all()


def all_panels(dashboards):
    return [
        (uid, panel) for uid, dashboard in dashboards.items() for panel in library.panels(dashboard)
    ]


def test_each_file_is_json_with_its_uid():
    assert sorted(p.name for p in library.GRAFANA_DIR.glob("*.json")) == sorted(
        library.DASHBOARDS.values()
    )
    for uid, name in library.DASHBOARDS.items():
        dashboard = json.loads((library.GRAFANA_DIR / name).read_text())
        assert dashboard["uid"] == uid
        assert dashboard["title"].startswith("Traversion ")
        # Provisioned dashboards must not carry a database id.
        assert dashboard.get("id") is None


def test_datasource_and_tenant_variables(dashboards):
    for uid, dashboard in dashboards.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", uid
        assert variables["datasource"]["query"] == "prometheus", uid
        tenant = variables["tenant"]
        assert tenant["type"] == "query", uid
        assert tenant["datasource"] == DATASOURCE_REF, uid
        assert tenant["query"]["query"] == "label_values(traversion_http_requests_total, tenant_id)"
        assert tenant["includeAll"] is True and tenant["allValue"] == ".*", uid


def test_every_panel_has_the_datasource_variable_and_a_query(dashboards):
    panels = all_panels(dashboards)
    assert len(panels) >= 60
    for uid, panel in panels:
        where = f"{uid} / {panel['title']!r}"
        assert panel["type"] in CURRENT_PANEL_TYPES, where
        assert panel["datasource"] == DATASOURCE_REF, where
        assert library.exprs(panel), f"{where} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_REF, where
        assert panel.get("description"), f"{where} has no description"


def test_no_deprecated_graph_panel_anywhere(dashboards):
    def walk(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    types = {n.get("type") for d in dashboards.values() for n in walk(d.get("panels", []))}
    assert "graph" not in types
    assert "singlestat" not in types and "grafana-piechart-panel" not in types


def test_panel_ids_unique_and_grid_within_24_columns(dashboards):
    for uid, dashboard in dashboards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), uid
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (uid, panel["title"])


def test_guide_panels_present(dashboards):
    for uid, titles in GUIDE_PANELS.items():
        present = {p["title"] for p in library.panels(dashboards[uid])}
        missing = [t for t in titles if t not in present]
        assert not missing, f"{uid} lacks {missing}"


def test_every_metric_is_one_the_app_or_its_exporters_emit(dashboards):
    known = known_names()
    unknown = {}
    for uid, panel in all_panels(dashboards):
        for expr in library.exprs(panel):
            for name in promql.metric_names(expr) - known:
                unknown.setdefault(name, []).append(f"{uid} / {panel['title']}")
    assert not unknown, f"metrics nothing emits: {unknown}"


def test_tenant_scoped_families_are_filtered_by_the_tenant_variable(dashboards):
    tenant_scoped_families = tenant_scoped_names()
    checked = 0
    for uid, panel in all_panels(dashboards):
        for expr in library.exprs(panel):
            assert promql.variables_of(expr) <= {"tenant", "__rate_interval", "__range"}, expr
            tenant_scoped = promql.metric_names(expr) & tenant_scoped_families
            if tenant_scoped:
                # Every selector of a tenant-scoped family carries the matcher.
                for name in tenant_scoped:
                    assert expr.count(f"{name}{{") == expr.count(
                        f"{name}{{{library.TENANT_MATCHER}"
                    ), f"{uid} / {panel['title']}: {name} not narrowed to $tenant in {expr}"
                    assert f"{name}[" not in expr and f"{name})" not in expr, expr
                checked += 1
    assert checked >= 30
