"""Summary and description templates: Django template syntax, rendered in a sandbox.

A rule's annotations are templates over the instance only:

    {{ labels.service_id }}  {{ value|floatformat:2 }}  {{ alertname }}  {{ severity }}

The sandbox engine knows a short list of tags (if, for, with, firstof, ...) and filters
(default, floatformat, upper, truncatechars, ...); `{% load %}`, `{% include %}`,
`{% debug %}` and filters that can blow up (ljust:1000000000) do not exist in it. The
context holds plain copies (dicts, strings, a number): no model, no attribute reaching
further than the labels. Bad templates are refused at save time (`validate_template`).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.template import (
    Context,
    Engine,
    Library,
    TemplateSyntaxError,
    defaultfilters,
    defaulttags,
)

if TYPE_CHECKING:
    from alerts.models import AlertRule

logger = logging.getLogger(__name__)

MAX_TEMPLATE_LENGTH = 4_000
MAX_RENDERED_LENGTH = 4_000
ANNOTATION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

ALLOWED_TAGS = (
    "autoescape", "comment", "cycle", "filter", "firstof", "for", "if", "ifchanged", "now",
    "spaceless", "templatetag", "verbatim", "with",
)  # fmt: skip
ALLOWED_FILTERS = (
    "add", "capfirst", "cut", "date", "default", "default_if_none", "divisibleby", "escape",
    "filesizeformat", "first", "join", "last", "length", "linebreaksbr", "lower",
    "make_list", "pluralize", "safe", "slice", "slugify", "striptags", "time", "timesince",
    "title", "truncatechars", "truncatewords", "upper", "urlencode", "wordcount", "yesno",
)  # fmt: skip
#: floatformat's precision is clamped: floatformat:100000000 would be a memory bomb.
MAX_FLOAT_DIGITS = 12


def _floatformat(value, arg=-1):
    try:
        digits = int(str(arg).rstrip("gu") or -1)
    except ValueError:
        digits = -1
    digits = max(-MAX_FLOAT_DIGITS, min(MAX_FLOAT_DIGITS, digits))
    return defaultfilters.floatformat(value, digits)


def _sandbox_library() -> Library:
    library = Library()
    for name in ALLOWED_TAGS:
        library.tags[name] = defaulttags.register.tags[name]
    for name in ALLOWED_FILTERS:
        library.filters[name] = defaultfilters.register.filters[name]
    library.filter("floatformat", _floatformat, is_safe=True)
    return library


class SandboxEngine(Engine):
    """A template engine with only the sandbox library: no loaders, no {% load %}."""

    def get_template_builtins(self, builtins):
        return [_sandbox_library()]

    def get_template_libraries(self, libraries):
        return {}


ENGINE = SandboxEngine(dirs=[], app_dirs=False, loaders=[], autoescape=False, debug=False)


@lru_cache(maxsize=2048)
def _compile(text: str):
    return ENGINE.from_string(text)


def validate_template(text) -> None:
    """Raise ValidationError saying why `text` is not a usable annotation template."""
    if not isinstance(text, str):
        raise ValidationError("a template must be text")
    if len(text) > MAX_TEMPLATE_LENGTH:
        raise ValidationError(f"a template is limited to {MAX_TEMPLATE_LENGTH} characters")
    try:
        _compile(text)
    except TemplateSyntaxError as exc:
        raise ValidationError(f"invalid template: {exc}") from None


def validate_annotations(annotations) -> None:
    """Annotations are {name: template}; every template must compile in the sandbox."""
    if annotations in (None, ""):
        return
    if not isinstance(annotations, dict):
        raise ValidationError("annotations must be an object of name: template")
    errors = []
    for name, text in annotations.items():
        if not isinstance(name, str) or not ANNOTATION_NAME.match(name):
            errors.append(f"{name!r} is not a valid annotation name")
            continue
        try:
            validate_template(text)
        except ValidationError as exc:
            errors.append(f"{name}: {exc.messages[0]}")
    if errors:
        raise ValidationError(errors)


def render_template(text: str, context: dict) -> str:
    """Render in the sandbox; a template that fails at render time yields its source."""
    try:
        rendered = _compile(text).render(Context(context, autoescape=False))
    except Exception:  # a template error must never stop an alert from being recorded
        logger.warning("annotation template failed to render: %r", text, exc_info=True)
        rendered = text
    return rendered[:MAX_RENDERED_LENGTH]


def template_context(rule: AlertRule, labels: dict, value: float | None) -> dict:
    """The whole context: copies of the instance's labels and value, and the rule's name."""
    return {
        "labels": dict(labels),
        "value": value,
        "alertname": rule.name,
        "severity": rule.severity,
        "rule": {"name": rule.name, "severity": rule.severity},
    }


def render_annotations(rule: AlertRule, labels: dict, value: float | None) -> dict:
    """The instance's annotations: the rule's templates rendered, plus defaults.

    `summary` defaults to the rule's name, `description` to the rule's description;
    `runbook_url` is the rule's.
    """
    context = template_context(rule, labels, value)
    templates = rule.annotations if isinstance(rule.annotations, dict) else {}
    rendered = {
        str(name): render_template(text, context)
        for name, text in templates.items()
        if isinstance(text, str)
    }
    rendered.setdefault("summary", rule.name)
    if rule.description:
        rendered.setdefault("description", rule.description)
    if rule.runbook_url:
        rendered.setdefault("runbook_url", rule.runbook_url)
    return rendered
