"""Annotation templates: Django syntax, the instance's context only, bad ones refused."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from alerts.models import AlertRule
from alerts.templating import render_annotations, render_template, validate_template


def rule(**fields) -> AlertRule:
    return AlertRule(
        name="errors_high",
        severity="critical",
        description="Too many errors.",
        runbook_url="https://runbooks.example/errors",
        **fields,
    )


def test_labels_value_and_rule_render():
    annotations = render_annotations(
        rule(
            annotations={
                "summary": "{{ labels.service|upper }} at {{ value|floatformat:2 }}",
                "description": "{% if value > 10 %}{{ alertname }} is {{ severity }}{% endif %}",
            }
        ),
        {"service": "api"},
        12.3456,
    )
    assert annotations == {
        "summary": "API at 12.35",
        "description": "errors_high is critical",
        "runbook_url": "https://runbooks.example/errors",
    }


def test_defaults_and_no_html_escaping():
    assert render_annotations(rule(), {}, None) == {
        "summary": "errors_high",
        "description": "Too many errors.",
        "runbook_url": "https://runbooks.example/errors",
    }
    assert render_template("{{ labels.path }}", {"labels": {"path": "<a>&"}}) == "<a>&"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% if value %}unclosed", "invalid template"),
        ("{% load static %}", "invalid template"),
        ("{% include 'x.html' %}", "invalid template"),
        ("{% extends 'base.html' %}", "invalid template"),
        ("{% debug %}", "invalid template"),
        ("{% lorem 100000000 w %}", "invalid template"),
        ("{% widthratio value 1 100000000000 %}", "invalid template"),
        ("{{ value|ljust:'1000000000' }}", "invalid template"),
        ("{{ value|stringformat:'1000000000d' }}", "invalid template"),
        ("{{ labels.__class__ }}", "invalid template"),
        ("x" * 5000, "limited to 4000 characters"),
    ],
)
def test_dangerous_or_broken_templates_are_refused(template, message):
    with pytest.raises(ValidationError, match=message):
        validate_template(template)


def test_the_context_holds_copies_only():
    labels = {"service": "api"}
    # dict.clear is callable from a template; it empties the copy, never the instance's.
    assert (
        render_template("{{ labels.clear }}{{ labels.service }}", {"labels": dict(labels)})
        == "None"
    )
    render_annotations(rule(annotations={"summary": "{{ labels.clear }}"}), labels, 1)
    assert labels == {"service": "api"}


def test_precision_of_floatformat_is_clamped():
    assert render_template("{{ value|floatformat:100000000 }}", {"value": 1.5}) == "1.500000000000"


@pytest.mark.django_db
def test_a_rule_with_a_bad_template_or_query_does_not_validate(tenant_a):
    bad = AlertRule(
        tenant=tenant_a,
        name="bad",
        query="SELECT pg_sleep(1)",
        annotations={"summary": "{% include 'secrets.txt' %}", "9bad": "x"},
    )
    with pytest.raises(ValidationError) as caught:
        bad.full_clean()
    errors = caught.value.message_dict
    assert errors["query"] == [
        "function pg_sleep() is not allowed; a rule may use aggregate, date/time, math, "
        "string, JSON and window functions of the allow-list (docs/alerting.md, SQL sandbox)"
    ]
    assert errors["annotations"][0].startswith("summary: invalid template")
    assert errors["annotations"][1] == "'9bad' is not a valid annotation name"
    # PromQL is for global rules only.
    promql = AlertRule(tenant=tenant_a, name="p", datasource="prometheus", query="up")
    with pytest.raises(ValidationError, match="only global rules"):
        promql.full_clean()
