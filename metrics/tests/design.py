"""The metric families of ../shared/DESIGN.md §Metrics, copied from its table.

One list, used by the exposition and documentation tests. `OWNED` are the families the
metrics area itself produces (the rest are fed by the events, alerting and WebSocket
code and only defined or served here).
"""

from __future__ import annotations

DESIGN_FAMILIES = {
    # API
    "traversion_http_requests_total": ("method", "endpoint", "status_code", "tenant_id"),
    "traversion_http_request_duration_seconds": ("method", "endpoint"),
    "traversion_websocket_connections": ("tenant_id",),
    "traversion_websocket_messages_total": ("tenant_id", "message_type"),
    # events
    "traversion_events_total": ("tenant_id", "event_type", "service_id"),
    "traversion_events_errors_total": ("tenant_id", "error_type"),
    "traversion_event_processing_duration_seconds": (),
    "traversion_storage_events_count": ("tenant_id",),
    "traversion_last_event_timestamp": ("tenant_id",),
    "traversion_event_anomaly_score": ("tenant_id", "service_id"),
    # storage
    "traversion_storage_operation_duration_seconds": ("operation",),
    "traversion_storage_size_bytes": ("tenant_id",),
    "traversion_storage_connections_active": (),
    "traversion_storage_connections_idle": (),
    "traversion_tenant_storage_usage_bytes": ("tenant_id",),
    "traversion_tenant_storage_quota_bytes": ("tenant_id",),
    # queries
    "traversion_queries_total": ("tenant_id", "query_type"),
    "traversion_query_duration_seconds": ("tenant_id", "query_type"),
    # causality
    "traversion_causality_detections_total": ("tenant_id", "causality_type", "service_id"),
    "traversion_causality_graph_size": ("tenant_id",),
    "traversion_causality_confidence": (),
    "traversion_causality_detection_duration_seconds": (),
    "traversion_causality_chain_length": (),
    "traversion_root_cause_analysis_duration_seconds": (),
    "traversion_patterns_detected_total": ("tenant_id", "pattern_type"),
    # security
    "traversion_auth_attempts_total": ("tenant_id", "method", "result"),
    "traversion_auth_failures_by_ip_total": ("ip_address",),
    "traversion_active_sessions": ("tenant_id",),
    "traversion_user_sessions_by_role": ("tenant_id", "role"),
    "traversion_permission_violations_total": ("tenant_id",),
    "traversion_cross_tenant_access_attempts_total": ("tenant_id",),
    "traversion_api_key_usage_total": ("tenant_id",),
    "traversion_jwt_issued_total": (),
    "traversion_jwt_validated_total": (),
    "traversion_jwt_expired_total": (),
    "traversion_audit_events_total": ("tenant_id", "action"),
    # system
    "traversion_memory_usage_bytes": ("type",),
    "traversion_cpu_usage_percent": (),
    "traversion_uptime_seconds": (),
    "traversion_dependency_up": ("dependency",),
    # alerting
    "traversion_alert_rules": ("tenant_id", "severity", "enabled"),
    "traversion_alert_evaluations_total": ("tenant_id", "result"),
    "traversion_alert_evaluation_duration_seconds": (),
    "traversion_alerts_active": ("tenant_id", "severity", "state"),
    "traversion_alert_notifications_total": ("channel_type", "result"),
    "traversion_alert_notification_duration_seconds": ("channel_type",),
    "traversion_alert_silences_active": ("tenant_id",),
    "traversion_celery_queue_length": ("queue",),
    "traversion_celery_tasks_total": ("task", "state"),
}

#: Produced by the metrics area (catalogue producers and its own scrape-time gauges).
OWNED = {
    "traversion_http_requests_total",
    "traversion_http_request_duration_seconds",
    "traversion_storage_operation_duration_seconds",
    "traversion_storage_connections_active",
    "traversion_storage_connections_idle",
    "traversion_tenant_storage_quota_bytes",
    "traversion_auth_attempts_total",
    "traversion_auth_failures_by_ip_total",
    "traversion_active_sessions",
    "traversion_user_sessions_by_role",
    "traversion_permission_violations_total",
    "traversion_cross_tenant_access_attempts_total",
    "traversion_api_key_usage_total",
    "traversion_jwt_issued_total",
    "traversion_jwt_validated_total",
    "traversion_jwt_expired_total",
    "traversion_audit_events_total",
    "traversion_memory_usage_bytes",
    "traversion_cpu_usage_percent",
    "traversion_uptime_seconds",
    "traversion_dependency_up",
    "traversion_celery_queue_length",
    "traversion_celery_tasks_total",
}


def registered_families() -> dict[str, tuple[str, ...]]:
    """Every family served right now: catalogue + scrape-time gauges, with their labels."""
    from metrics.catalogue import FAMILIES
    from metrics.collectors import REGISTRY

    families = {name: tuple(metric._labelnames) for name, metric in FAMILIES.items()}
    families.update({name: gauge.labels for name, gauge in REGISTRY.items()})
    return families
