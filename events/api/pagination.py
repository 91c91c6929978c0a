"""Keyset cursor pagination on (timestamp, id), newest first.

DRF's CursorPagination positions on one field plus an offset capped at 1,000 rows, but a
batch ingested without timestamps gives 1,000 events the same time. Positioning on the
pair (timestamp, id) is exact however many events share a time, and each page is an
index range scan however deep the client pages.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from django.db.models import Q
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from ..ingest import to_utc

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


def encode_cursor(timestamp: datetime, pk: int) -> str:
    raw = f"{timestamp.isoformat()}|{pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        timestamp, pk = raw.split("|")
        parsed = datetime.fromisoformat(timestamp)
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        return to_utc(parsed), int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValidationError({"cursor": ["Invalid cursor."]}) from None


class TimeKeysetPagination(BasePagination):
    cursor_query_param = "cursor"
    limit_query_param = "limit"

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self._limit(request)
        queryset = queryset.order_by("-timestamp", "-id")
        cursor = request.query_params.get(self.cursor_query_param)
        if cursor:
            timestamp, pk = decode_cursor(cursor)
            queryset = queryset.filter(
                Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=pk)
            )
        page = list(queryset[: self.limit + 1])
        self.has_next = len(page) > self.limit
        page = page[: self.limit]
        self.next_cursor = encode_cursor(page[-1].timestamp, page[-1].pk) if self.has_next else None
        return page

    def _limit(self, request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None:
            return DEFAULT_LIMIT
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError({"limit": [f"Expected an integer from 1 to {MAX_LIMIT}."]})
        return limit

    def get_next_link(self) -> str | None:
        if not self.next_cursor:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, self.next_cursor)

    def get_paginated_response(self, data):
        return Response(
            {"next": self.get_next_link(), "next_cursor": self.next_cursor, "results": data}
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["next", "next_cursor", "results"],
            "properties": {
                "next": {"type": "string", "format": "uri", "nullable": True},
                "next_cursor": {"type": "string", "nullable": True},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Opaque position from the previous page's next_cursor.",
                "schema": {"type": "string"},
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Events per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
        ]
