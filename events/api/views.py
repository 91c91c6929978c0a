"""The events API: ingest (POST), query (GET list, detail), root-cause analysis."""

from __future__ import annotations

import time

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from metrics.catalogue import QUERIES, QUERY_DURATION, ROOT_CAUSE_ANALYSIS_DURATION
from metrics.labels import tenant_label
from tenants.api.views import TenantScopedViewSetMixin
from tenants.choices import Role

from ..causality.rootcause import root_causes
from ..choices import MAX_BATCH_SIZE, QueryType
from ..filtersets import EventFilterSet
from ..ingest import InvalidEvents, InvalidPayload, QuotaExceeded, ingest
from ..models import Event
from .pagination import TimeKeysetPagination
from .serializers import (
    EventInSerializer,
    EventSerializer,
    IngestErrorSerializer,
    IngestResultSerializer,
    QuotaExceededSerializer,
    RootCauseSerializer,
)

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off", ""}
MAX_ROOT_CANDIDATES = 10


class BoundedJSONParser(JSONParser):
    """JSONParser that answers 400, not 500, to JSON nested too deep for the decoder."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class QueryMetricsMixin:
    """Every GET that reached a tenant counts in traversion_queries_total and its duration."""

    query_types = {
        "list": QueryType.LIST,
        "retrieve": QueryType.RETRIEVE,
        "root_cause": QueryType.ROOT_CAUSE,
    }

    def initial(self, request, *args, **kwargs):
        self._query_started = time.perf_counter()
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        query_type = self.query_types.get(getattr(self, "action", None))
        tenant = getattr(request, "tenant", None)
        if request.method == "GET" and query_type and tenant is not None:
            elapsed = time.perf_counter() - getattr(self, "_query_started", time.perf_counter())
            label = tenant_label(tenant)
            QUERIES.labels(label, query_type).inc()
            QUERY_DURATION.labels(label, query_type).observe(elapsed)
        return super().finalize_response(request, response, *args, **kwargs)


def partial_flag(request) -> bool:
    raw = request.query_params.get("partial", "").strip().lower()
    if raw in TRUE_VALUES:
        return True
    if raw in FALSE_VALUES:
        return False
    raise ValidationError({"partial": ["Expected true or false."]})


@extend_schema_view(
    list=extend_schema(summary="Query events (newest first, cursor pages)"),
    retrieve=extend_schema(summary="One event"),
)
class EventViewSet(
    QueryMetricsMixin,
    TenantScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """A tenant's events. Services post them with an API key (role member or above)."""

    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = EventFilterSet
    pagination_class = TimeKeysetPagination
    parser_classes = [BoundedJSONParser]
    read_role = Role.VIEWER
    write_role = Role.MEMBER

    @extend_schema(
        summary="Ingest one event or a batch",
        description=(
            f"Body: one event object, or a list of 1 to {MAX_BATCH_SIZE}. By default a batch "
            "is all or nothing: any invalid item answers 400 with per-item errors and "
            "nothing is stored. With `?partial=true` the valid items are stored (201) and "
            "the invalid ones reported in `errors`. Over the tenant's storage quota: 429, "
            "nothing stored. Causes are linked asynchronously after the response."
        ),
        parameters=[
            OpenApiParameter(
                "partial",
                OpenApiTypes.BOOL,
                OpenApiParameter.QUERY,
                description="Store the valid items of a batch even if some are invalid.",
                default=False,
            )
        ],
        request=PolymorphicProxySerializer(
            component_name="EventIngestRequest",
            serializers=[
                EventInSerializer(),
                EventInSerializer(many=True, min_length=1, max_length=MAX_BATCH_SIZE),
            ],
            resource_type_field_name=None,
            many=False,
        ),
        responses={
            201: IngestResultSerializer,
            400: OpenApiResponse(IngestErrorSerializer, description="Invalid body or items."),
            429: OpenApiResponse(QuotaExceededSerializer, description="Storage quota exceeded."),
        },
    )
    def create(self, request, *args, **kwargs):
        partial = partial_flag(request)
        try:
            result = ingest(request.tenant, request.data, partial=partial)
        except InvalidPayload as exc:
            return Response(
                {"detail": str(exc), "accepted": 0, "rejected": 0, "ids": [], "errors": {}},
                status=status.HTTP_400_BAD_REQUEST,
            )
        except InvalidEvents as exc:
            return Response(
                {
                    "detail": f"{exc}; nothing was stored"
                    + ("" if partial else " (?partial=true stores the valid ones)."),
                    "accepted": 0,
                    "rejected": len(exc.errors),
                    "ids": [],
                    "errors": {str(index): errors for index, errors in exc.errors.items()},
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        except QuotaExceeded as exc:
            return Response(
                {
                    "detail": "Storage quota exceeded: nothing was stored. Delete data, wait "
                    "for retention, or ask an operator for a larger quota.",
                    "code": "quota_exceeded",
                    "quota_bytes": exc.quota,
                    "used_bytes": exc.used,
                    "requested_bytes": exc.requested,
                },
                status=status.HTTP_429_TOO_MANY_REQUESTS,
            )
        return Response(
            {
                "accepted": len(result.ids),
                "rejected": len(result.errors),
                "ids": result.ids,
                "errors": {str(index): errors for index, errors in result.errors.items()},
            },
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(summary="Root-cause analysis of an event", responses=RootCauseSerializer)
    @action(detail=True, methods=["get"], url_path="root-cause")
    def root_cause(self, request, pk=None):
        event = self.get_object()
        started = time.perf_counter()
        found = root_causes(event.tenant_id, [event.pk], rank_all=True)[event.pk]
        ROOT_CAUSE_ANALYSIS_DURATION.observe(time.perf_counter() - started)

        candidates = found.candidates[:MAX_ROOT_CANDIDATES]
        wanted = {found.root_id, *(hop.effect_id for hop in found.hops)}
        wanted.update(root for root, _, _ in candidates)
        events = self.get_queryset().in_bulk(wanted)
        events[event.pk] = event

        def represent(event_id: int) -> dict:
            return EventSerializer(events[event_id]).data

        chain = [{"event": represent(found.root_id), "causality_type": None, "confidence": None}]
        chain += [
            {
                "event": represent(hop.effect_id),
                "causality_type": hop.causality_type,
                "confidence": hop.confidence,
            }
            for hop in found.hops
        ]
        return Response(
            {
                "event": represent(event.pk),
                "root_cause": represent(found.root_id),
                "confidence": found.confidence,
                "chain_length": found.chain_length,
                "truncated": found.truncated,
                "chain": chain,
                "candidates": [
                    {"event": represent(root), "confidence": confidence, "chain_length": length}
                    for root, confidence, length in candidates
                ],
            }
        )
