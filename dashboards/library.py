"""The shipped Grafana dashboards: loading them, walking their panels, rendering per tenant.

The JSON files under `dashboards/grafana/` are the source of truth: Grafana provisions them
as they are (deploy/grafana/provisioning/dashboards/), and `push_dashboards` derives the
tenant dashboards of the guide's §Dynamic Dashboards from the overview.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GRAFANA_DIR = Path(__file__).resolve().parent / "grafana"

#: uid -> file name; the uids are the guide's URLs (/d/traversion-overview ...).
DASHBOARDS = {
    "traversion-overview": "traversion-overview.json",
    "traversion-causality": "traversion-causality.json",
    "traversion-security": "traversion-security.json",
}
OVERVIEW_UID = "traversion-overview"
TENANT_VARIABLE = "tenant"
# How every tenant-scoped query selects the tenant; rendering for one tenant rewrites it.
TENANT_MATCHER = 'tenant_id=~"$tenant"'
TENANT_UID_PREFIX = "traversion-tenant-"
GRAFANA_UID_MAX_LENGTH = 40  # Grafana refuses longer uids

Dashboard = dict[str, Any]
Panel = dict[str, Any]


def load(uid: str) -> Dashboard:
    """One shipped dashboard by uid."""
    try:
        name = DASHBOARDS[uid]
    except KeyError:
        raise KeyError(f"unknown dashboard {uid!r}; known: {', '.join(DASHBOARDS)}") from None
    return json.loads((GRAFANA_DIR / name).read_text())


def load_all() -> dict[str, Dashboard]:
    return {uid: load(uid) for uid in DASHBOARDS}


def panels(dashboard: Dashboard) -> Iterator[Panel]:
    """Every non-row panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels", []) if p.get("type") != "row")
        else:
            yield panel


def exprs(panel: Panel) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if t.get("expr", "").strip()]


def is_tenant_scoped(expr: str) -> bool:
    return TENANT_MATCHER in expr


def tenant_dashboard_uid(slug: str) -> str:
    """`traversion-tenant-<slug>`, shortened with a hash when Grafana's 40 chars are exceeded."""
    uid = TENANT_UID_PREFIX + slug
    if len(uid) <= GRAFANA_UID_MAX_LENGTH:
        return uid
    digest = hashlib.sha256(slug.encode()).hexdigest()[:8]
    room = GRAFANA_UID_MAX_LENGTH - len(TENANT_UID_PREFIX) - len(digest) - 1
    return f"{TENANT_UID_PREFIX}{slug[:room]}-{digest}"


def render_for_tenant(dashboard: Dashboard, *, label: str, slug: str, name: str) -> Dashboard:
    """The dashboard narrowed to one tenant.

    `label` is the tenant's `tenant_id` label value (metrics.labels.tenant_label), `slug`
    names the dashboard's uid and `name` its title. Only tenant-scoped panels are kept (a
    panel about the whole platform, such as process memory, says nothing about one tenant
    and would show other tenants' load); each of their queries selects
    `tenant_id="<label>"`; the tenant variable becomes a hidden constant; rows left empty
    are dropped.
    """
    for value in (label, slug):
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", value):
            raise ValueError(f"invalid tenant label or slug {value!r}")
    source = copy.deepcopy(dashboard)
    kept: list[Panel] = []
    pending_row: Panel | None = None
    for panel in source.get("panels", []):
        if panel.get("type") == "row":
            pending_row = panel
            continue
        queries = exprs(panel)
        if not queries or not all(is_tenant_scoped(q) for q in queries):
            continue
        for target in panel.get("targets", []):
            target["expr"] = target["expr"].replace(TENANT_MATCHER, f'tenant_id="{label}"')
        if pending_row is not None:
            kept.append(pending_row)
            pending_row = None
        kept.append(panel)
    source["panels"] = kept
    for variable in source.get("templating", {}).get("list", []):
        if variable.get("name") == TENANT_VARIABLE:
            variable.clear()
            variable.update(
                {
                    "type": "constant",
                    "name": TENANT_VARIABLE,
                    "label": "Tenant",
                    "query": label,
                    "hide": 2,
                    "current": {"text": label, "value": label},
                    "options": [{"text": label, "value": label, "selected": True}],
                }
            )
    source.update(
        {
            "id": None,
            "uid": tenant_dashboard_uid(slug),
            "title": f"Tenant {name} Dashboard",
            "tags": [*source.get("tags", []), "tenant", f"tenant:{slug}"],
            "links": [],
            "version": 1,
        }
    )
    return source
