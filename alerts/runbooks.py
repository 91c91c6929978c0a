"""/docs/runbooks/: docs/runbooks.md as a page, so that every rule's runbook link works.

A deliberately small renderer for the subset that file uses (headings, paragraphs,
**bold**, `code`): each `## name` heading gets `id="name"`, the anchor of the rule's
`runbook_url`. Everything is HTML-escaped first.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET

RUNBOOKS = Path(settings.BASE_DIR) / "docs" / "runbooks.md"
HEADING = re.compile(r"^(#{1,3}) (.+)$")


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


@lru_cache(maxsize=4)
def render(source: str) -> str:
    parts, paragraph = [], []

    def close() -> None:
        if paragraph:
            parts.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    for line in source.splitlines():
        heading = HEADING.match(line)
        if heading:
            close()
            level, title = len(heading.group(1)), heading.group(2).strip()
            anchor = re.sub(r"[^a-z0-9_-]", "-", title.lower())
            parts.append(f'<h{level} id="{anchor}">{_inline(title)}</h{level}>')
        elif line.strip():
            paragraph.append(line.strip())
        else:
            close()
    close()
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Traversion runbooks</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}"
        "code{background:#f3f3f3;padding:0 .2em}h2{border-top:1px solid #ddd;padding-top:1em}"
        "</style></head><body>" + "\n".join(parts) + "</body></html>"
    )


@require_GET
def runbooks(request):
    return HttpResponse(render(RUNBOOKS.read_text()), content_type="text/html; charset=utf-8")
