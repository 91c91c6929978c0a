"""The PromQL helpers the dashboard and end-to-end tests rely on."""

from __future__ import annotations

import pytest

from dashboards import promql


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (le) (rate(a_bucket{tenant_id=~"$tenant"}[$__rate_interval]))', {"a_bucket"}),
        ("histogram_quantile(0.95, sum by (le, endpoint) (rate(b_bucket[5m])))", {"b_bucket"}),
        ('1 - (sum(rate(c_total{x!~"5.."}[1m])) / sum(rate(c_total[1m])))', {"c_total"}),
        ("time() - max(d)", {"d"}),
        ("a > on(tenant_id) group_left(role) b unless ignoring(x) c offset 5m", {"a", "b", "c"}),
        ('{__name__="e", job="x"}', {"e"}),
        ("sum(f) by (job) and bool g", {"f", "g"}),
        ("topk(10, h) or vector(0) # trailing comment mentions i", {"h"}),
        ('absent_over_time(j{a="b,c}"}[5m])', {"j"}),
        ("1e-9 + 0x1f * Inf", set()),
    ],
)
def test_metric_names(expr, names):
    assert promql.metric_names(expr) == names


def test_metric_names_rejects_unbalanced():
    with pytest.raises(promql.PromQLSyntaxError):
        promql.metric_names("sum(rate(a[5m])")


def test_substitute_variables():
    expr = 'rate(a{tenant_id=~"$tenant"}[$__rate_interval]) + b{t="${tenant}"}'
    assert promql.variables_of(expr) == {"tenant", "__rate_interval"}
    assert promql.substitute(expr, {"tenant": ".*", "__rate_interval": "1m"}) == (
        'rate(a{tenant_id=~".*"}[1m]) + b{t=".*"}'
    )
    with pytest.raises(KeyError):
        promql.substitute(expr, {"tenant": ".*"})


@pytest.mark.parametrize(
    ("expr", "data"),
    [
        ("rate(a[5m]) > 10", ["rate(a[5m])"]),
        ("(sum(rate(a[5m])) / sum(rate(b[5m]))) > 0.05", ["sum(rate(a[5m])) / sum(rate(b[5m]))"]),
        ("a >= bool 1", ["a"]),
        ("0.9 < a", ["a"]),
        ("a > on(tenant_id) group_left 0.9 * b", ["a", "0.9 * b"]),
        ('a{x=">"} == 0', ['a{x=">"}']),
        ("a > 1 and b < 2", ["a", "b"]),
        ("a > 1 or b != 2", ["(a) or (b)"]),
        ("(sum(rate(x[1m])) or vector(0)) > 10", ["(sum(rate(x[1m]))) or (vector(0))"]),
        ("(a or b * 0) > 0 and c", ["(a) or (b * 0)", "c"]),
        ("a > 1 unless on(x) c", ["a"]),
        ('absent(up{job="web"})', ['up{job="web"}']),
        ('absent_over_time(up{job="web"}[2m])', ['up{job="web"}']),
        ("sum(rate(a[5m]))", ["sum(rate(a[5m]))"]),
        ("increase(x[10m]) > 20", ["increase(x[10m])"]),
    ],
)
def test_data_expressions_strip_the_outermost_comparison(expr, data):
    assert promql.data_expressions(expr) == data
