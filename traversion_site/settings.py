"""Traversion settings.

Every knob is read from the environment (or a `.env` file next to manage.py) through
django-environ. A value that cannot be parsed, or is out of range, raises
ImproperlyConfigured at start-up with the variable's name, never later at 3 a.m.

Intervals that come from the monitoring guide keep its names and its unit: milliseconds.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("TRAVERSION_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _setting(name: str, cast, default, *, minimum: float | None = None, choices=None):
    """Read one variable, turning every parse error into ImproperlyConfigured(name)."""
    try:
        value = cast(name, default=default)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"{name}={env.str(name, default='')!r} is invalid: {exc}"
        ) from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is invalid: must be >= {minimum}")
    if choices is not None and value not in choices:
        raise ImproperlyConfigured(
            f"{name}={value!r} is invalid: expected one of {', '.join(choices)}"
        )
    return value


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is invalid: expected true or false")


def _url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.str(name, default=default).strip()
    if not value:
        return value
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}={value!r} is invalid: scheme must be one of {', '.join(schemes)}"
        )
    return value


# --- core -----------------------------------------------------------------
DEBUG = _bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set (set it, or DEBUG=true for a throwaway development key)"
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
ADMIN_PASSWORD = env.str("ADMIN_PASSWORD", default="")
PUBLIC_URL = _url("PUBLIC_URL", "http://127.0.0.1:8000", ("http", "https")).rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "django_filters",
    "drf_spectacular",
    "django_prometheus",
    "tenants",
    "metrics",
    "alerts",
    "events",
    "channels",
    "dashboards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tenants.ratelimit.LoginRateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "traversion_site.urls"
WSGI_APPLICATION = "traversion_site.wsgi.application"
ASGI_APPLICATION = "traversion_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------
# An empty value means "the default", like an unset one.
DATABASE_URL = env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'traversion.sqlite3'}"
try:
    _db = env.db_url_config(DATABASE_URL)
except (ValueError, KeyError) as exc:  # unknown scheme or unparsable URL
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is invalid: {exc}") from exc
if _db["ENGINE"] not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} is invalid: use postgres:// or sqlite:///"
    )
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: wait for locks instead of failing, and take
    # the write lock at BEGIN so two writers never deadlock on an upgrade.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # 0 by default: under ASGI each request runs in a fresh thread, and a persistent
    # connection per finished thread would exhaust PostgreSQL's max_connections.
    _db.setdefault("CONN_MAX_AGE", _setting("DATABASE_CONN_MAX_AGE", env.int, 0, minimum=0))
    _db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
# Celery pool processes run one task at a time in one thread: they keep their connection
# between tasks for this many seconds.
DATABASE_WORKER_CONN_MAX_AGE = _setting("DATABASE_WORKER_CONN_MAX_AGE", env.int, 600, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache and broker -------------------------------------------------------
REDIS_URL = _url("REDIS_URL", "", ("redis", "rediss", "unix"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "traversion",
        }
    }
else:
    # A file cache is shared by every process on the machine, unlike local memory.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Live alert board (WebSocket). With Redis, every web process and every Celery worker
# share one channel layer, so a state change published anywhere reaches every socket.
# Without Redis (the embedded default) the layer is in-memory, i.e. per web process: a
# change made in that process is pushed at once, and each open board also polls the
# database every LIVE_BOARD_POLL_INTERVAL ms for changes made by other processes (the
# Celery worker). See docs/alerting.md, "Live board".
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A socket waits for messages with BZPOPMIN for up to 5 s; redis-py 8's
                # default 5 s read timeout would cut that wait and kill every idle socket.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": "traversion:live",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
LIVE_BOARD_POLL_INTERVAL = _setting("LIVE_BOARD_POLL_INTERVAL", env.int, 1_000, minimum=100)

CELERY_BROKER_URL = _url(
    "CELERY_BROKER_URL",
    "filesystem://",
    ("filesystem", "redis", "rediss", "amqp", "pyamqp", "memory", "sqla+sqlite"),
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "broker" / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):  # kombu creates none of them
        (VAR_DIR / "broker" / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

HEARTBEAT_INTERVAL_SECONDS = _setting("HEARTBEAT_INTERVAL_SECONDS", env.float, 10.0, minimum=1)
# /readyz reports beat as down once the last heartbeat is older than this.
HEARTBEAT_STALE_SECONDS = HEARTBEAT_INTERVAL_SECONDS * 6

CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "traversion.heartbeat",
        "schedule": HEARTBEAT_INTERVAL_SECONDS,
        "options": {"expires": HEARTBEAT_INTERVAL_SECONDS},
    },
}

# --- monitoring (names and units from the monitoring guide) ---------------------
PROMETHEUS_URL = _url("PROMETHEUS_URL", "http://127.0.0.1:9090", ("http", "https")).rstrip("/")
GRAFANA_URL = _url("GRAFANA_URL", "http://127.0.0.1:3000", ("http", "https")).rstrip("/")
GRAFANA_TOKEN = env.str("GRAFANA_TOKEN", default="")
ENABLE_METRICS = _bool("ENABLE_METRICS", True)
METRICS_COLLECTION_INTERVAL = _setting("METRICS_COLLECTION_INTERVAL", env.int, 10_000, minimum=0)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Multiprocess mode: counter and histogram increments are written to the shared files
# every this many ms (metrics/buffered.py); 0 writes each one at once.
METRICS_FLUSH_INTERVAL = _setting("METRICS_FLUSH_INTERVAL", env.int, 1_000, minimum=0)
# traversion_auth_failures_by_ip_total names this many top offending client IPs (by failed
# logins over the last hour); every other failure is counted as ip_address="other".
METRICS_AUTH_FAILURE_IPS = _setting("METRICS_AUTH_FAILURE_IPS", env.int, 20, minimum=0)
# A Celery worker in its own container serves its processes' metrics on this port (0: off).
WORKER_METRICS_PORT = _setting("WORKER_METRICS_PORT", env.int, 0, minimum=0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="0.0.0.0")
if ENABLE_METRICS:
    # django-prometheus's HTTP middleware pair (extended in metrics/middleware.py: first
    # and last), Django's database backend with the django_db_* and storage families
    # (metrics/backends, metrics/storage.py) and the cache backends with django_cache_*.
    # With ENABLE_METRICS=false none of them is installed: the disabled path costs nothing.
    MIDDLEWARE = [
        "metrics.middleware.PrometheusBeforeMiddleware",
        *MIDDLEWARE,
        "metrics.middleware.PrometheusAfterMiddleware",
    ]
    DATABASES["default"]["ENGINE"] = {
        "django.db.backends.postgresql": "metrics.backends.postgresql",
        "django.db.backends.sqlite3": "metrics.backends.sqlite3",
    }[DATABASES["default"]["ENGINE"]]
    CACHES["default"]["BACKEND"] = {
        "django.core.cache.backends.redis.RedisCache": "metrics.cache.RedisCache",
        "django.core.cache.backends.filebased.FileBasedCache": (
            "django_prometheus.cache.backends.filebased.FileBasedCache"
        ),
    }.get(CACHES["default"]["BACKEND"], CACHES["default"]["BACKEND"])

# --- alerting ----------------------------------------------------------------------
ALERT_CHECK_INTERVAL = _setting("ALERT_CHECK_INTERVAL", env.int, 60_000, minimum=1_000)
ALERT_COOLDOWN = _setting("ALERT_COOLDOWN", env.int, 300_000, minimum=0)
ALERT_TICK_SECONDS = _setting("ALERT_TICK_SECONDS", env.float, 1.0, minimum=0.1)
ALERT_GROUP_WAIT = _setting("ALERT_GROUP_WAIT", env.int, 500, minimum=0)
ALERT_SQL_TIMEOUT_MS = _setting("ALERT_SQL_TIMEOUT_MS", env.int, 5_000, minimum=100)
ALERT_SQL_SHARED_SCANS = _bool("ALERT_SQL_SHARED_SCANS", True)
# Timeout of one PromQL instant query of a `prometheus` rule (ms).
ALERT_PROMETHEUS_TIMEOUT_MS = _setting("ALERT_PROMETHEUS_TIMEOUT_MS", env.int, 10_000, minimum=100)
ALERT_HISTORY_RETENTION_DAYS = _setting("ALERT_HISTORY_RETENTION_DAYS", env.int, 90, minimum=1)
# Evaluate the sql rules that read `events` as soon as a tenant's events are ingested
# (alerts/eager.py), at most twice per rule and debounce window (whole seconds).
ALERT_EAGER_EVALUATION = _bool("ALERT_EAGER_EVALUATION", True)
ALERT_EAGER_DEBOUNCE_SECONDS = _setting("ALERT_EAGER_DEBOUNCE_SECONDS", env.int, 1, minimum=1)
# The alert engine: a tick that claims due rules and fans them out per tenant, and the
# hourly history retention (alerts/tasks.py). A late tick is useless: it expires.
CELERY_BEAT_SCHEDULE["alerts-tick"] = {
    "task": "alerts.tick",
    "schedule": ALERT_TICK_SECONDS,
    "options": {"expires": ALERT_TICK_SECONDS},
}
CELERY_BEAT_SCHEDULE["alerts-purge-history"] = {
    "task": "alerts.purge_history",
    "schedule": 3600.0,
    "options": {"expires": 3600.0},
}
# Bearer token (or basic-auth password) with which the platform's own Prometheus or
# Alertmanager pushes alerts to /api/v2/alerts and /webhook/alerts, routed by their
# `tenant` label. Empty: only tenant API keys can push.
ALERT_RECEIVER_TOKEN = env.str("ALERT_RECEIVER_TOKEN", default="")
EVENT_RETENTION_DAYS = _setting("EVENT_RETENTION_DAYS", env.int, 30, minimum=1)
# Events: hourly retention (batched deletes) and a minutely sweep that re-sends causality
# batches no worker picked up (docs/causality.md, "Delivery").
CELERY_BEAT_SCHEDULE["events-retention"] = {
    "task": "events.enforce_retention",
    "schedule": 3600.0,
    "options": {"expires": 3600.0},
}
CELERY_BEAT_SCHEDULE["events-causality-sweep"] = {
    "task": "events.sweep_causality_batches",
    "schedule": 60.0,
    "options": {"expires": 60.0},
}

# --- notifications ----------------------------------------------------------------
SMTP_HOST = env.str("SMTP_HOST", default="localhost")
SMTP_PORT = _setting("SMTP_PORT", env.int, 25, minimum=1)
SMTP_USER = env.str("SMTP_USER", default="")
SMTP_PASS = env.str("SMTP_PASS", default="")
SMTP_SECURITY = _setting(
    "SMTP_SECURITY",
    env.str,
    "starttls" if SMTP_PORT == 587 else "none",
    choices=("none", "starttls", "ssl"),
)
SMTP_TIMEOUT_SECONDS = _setting("SMTP_TIMEOUT_SECONDS", env.float, 10.0, minimum=0.1)
ALERT_FROM_EMAIL = env.str("ALERT_FROM_EMAIL", default="traversion@localhost")
ALERT_TO_EMAIL = env.list("ALERT_TO_EMAIL", default=[])
SLACK_WEBHOOK = _url("SLACK_WEBHOOK", "", ("http", "https"))
PAGERDUTY_KEY = env.str("PAGERDUTY_KEY", default="")
PAGERDUTY_API_URL = _url(
    "PAGERDUTY_API_URL", "https://events.pagerduty.com/v2/enqueue", ("http", "https")
)
# Delivery (alerts/delivery.py): attempts per notification before it is `failed`, the
# exponential backoff between them (base doubles per attempt, capped, plus jitter; a
# provider's Retry-After wins when longer), and HTTP timeouts (connect, read).
ALERT_DELIVERY_MAX_ATTEMPTS = _setting("ALERT_DELIVERY_MAX_ATTEMPTS", env.int, 8, minimum=1)
ALERT_DELIVERY_BACKOFF_SECONDS = _setting(
    "ALERT_DELIVERY_BACKOFF_SECONDS", env.float, 2.0, minimum=0.01
)
ALERT_DELIVERY_BACKOFF_MAX_SECONDS = _setting(
    "ALERT_DELIVERY_BACKOFF_MAX_SECONDS", env.float, 300.0, minimum=0.01
)
# A notification claimed by a worker (`sending`) for longer than the lease is taken back
# by the recovery task (the worker died) and sent again; it must exceed the longest send
# (the HTTP/SMTP timeouts). The recovery task runs every ALERT_DELIVERY_RECOVERY_SECONDS.
ALERT_DELIVERY_LEASE_SECONDS = _setting("ALERT_DELIVERY_LEASE_SECONDS", env.float, 120.0, minimum=1)
ALERT_DELIVERY_RECOVERY_SECONDS = _setting(
    "ALERT_DELIVERY_RECOVERY_SECONDS", env.float, 30.0, minimum=1
)
ALERT_HTTP_CONNECT_TIMEOUT_SECONDS = _setting(
    "ALERT_HTTP_CONNECT_TIMEOUT_SECONDS", env.float, 5.0, minimum=0.1
)
ALERT_HTTP_READ_TIMEOUT_SECONDS = _setting(
    "ALERT_HTTP_READ_TIMEOUT_SECONDS", env.float, 15.0, minimum=0.1
)
CELERY_BEAT_SCHEDULE["alerts-recover-deliveries"] = {
    "task": "alerts.recover_deliveries",
    "schedule": ALERT_DELIVERY_RECOVERY_SECONDS,
    "options": {"expires": ALERT_DELIVERY_RECOVERY_SECONDS},
}

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = SMTP_HOST
EMAIL_PORT = SMTP_PORT
EMAIL_HOST_USER = SMTP_USER
EMAIL_HOST_PASSWORD = SMTP_PASS
EMAIL_USE_TLS = SMTP_SECURITY == "starttls"
EMAIL_USE_SSL = SMTP_SECURITY == "ssl"
EMAIL_TIMEOUT = SMTP_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = ALERT_FROM_EMAIL
SERVER_EMAIL = ALERT_FROM_EMAIL

# --- API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.api.authentication.ApiKeyAuthentication",
        "tenants.api.authentication.AuditedJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Failed logins (admin and JWT) allowed per client IP and per account within the window;
# past that the login answers 429 with Retry-After until the window ends.
LOGIN_RATE_LIMIT_PER_IP = _setting("LOGIN_RATE_LIMIT_PER_IP", env.int, 20, minimum=1)
LOGIN_RATE_LIMIT_PER_ACCOUNT = _setting("LOGIN_RATE_LIMIT_PER_ACCOUNT", env.int, 5, minimum=1)
LOGIN_RATE_LIMIT_WINDOW_SECONDS = _setting(
    "LOGIN_RATE_LIMIT_WINDOW_SECONDS", env.int, 300, minimum=1
)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        seconds=_setting("JWT_ACCESS_LIFETIME_SECONDS", env.int, 900, minimum=1)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        seconds=_setting("JWT_REFRESH_LIFETIME_SECONDS", env.int, 86_400, minimum=1)
    ),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Traversion monitoring & alerting API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # One schema name per choice set that several fields share.
    "ENUM_NAME_OVERRIDES": {
        "AlertSeverityEnum": "alerts.choices.Severity",
        "InstanceStateEnum": "alerts.choices.InstanceState",
        "NotificationStatusEnum": "alerts.choices.NotificationStatus",
        "NotificationKindEnum": "alerts.choices.NotificationKind",
        "ReceivedAlertStatusEnum": "alerts.api.serializers.RECEIVED_ALERT_STATUSES",
        "EventSeverityEnum": "events.choices.Severity",
    },
}

# --- i18n, static, logging ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve admin assets without a collectstatic step
LOGIN_URL = "/admin/login/"

LOG_LEVEL = _setting(
    "LOG_LEVEL", env.str, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
# urllib3 logs every request URL at DEBUG; notification URLs are credentials (a Slack
# webhook URL is its own secret), so its connection pool never logs below INFO.
LOGGING.setdefault("loggers", {})["urllib3.connectionpool"] = {"level": "INFO"}
