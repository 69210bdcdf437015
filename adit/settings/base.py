"""Settings shared by every environment. Every variable is documented in example.env."""

from __future__ import annotations

import datetime
from pathlib import Path

from adit import embedded_postgres
from adit.core.channel_layers import postgres_layer_config
from adit.env import BASE_DIR, load_env

env = load_env()

DATA_DIR = Path(env.str("ADIT_DATA_DIR", "") or BASE_DIR / ".adit").resolve()
EMBEDDED_PGDATA = DATA_DIR / "pgdata"

SECRET_KEY = env.str("DJANGO_SECRET_KEY", "")
DEBUG = False
ALLOWED_HOSTS: list[str] = env.list("DJANGO_ALLOWED_HOSTS", [])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
INTERNAL_IPS: list[str] = env.list("DJANGO_INTERNAL_IPS", ["127.0.0.1"])

SITE_NAME = env.str("SITE_NAME", "ADIT")
# Where users reach ADIT; links in e-mails start with it.
SITE_URL = env.str("SITE_URL", "http://localhost:8000")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "channels_postgres",
    "procrastinate.contrib.django",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_tables2",
    "axes",
    "adit.core",
    "adit.accounts",
    "adit.token_authentication",
    "adit.selective_transfer",
    "adit.batch_query",
    "adit.batch_transfer",
    "adit.dicom_explorer",
    "adit.dicom_web",
    "adit.upload",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "adit.core.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "adit.accounts.middleware.active_group_middleware",
    "adit.accounts.api_usage.api_usage_middleware",
    "adit.core.middleware.MaintenanceMiddleware",
    "adit.core.middleware.SectionLockMiddleware",
    # Last, as django-axes asks: it turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# Scripts only from ADIT's own static files: no inline scripts or event handler attributes,
# no eval (Alpine's CSP build, htmx with allowEval off). Inline styles stay allowed (the
# progress bars set their width in a style attribute). 'self' covers the page's WebSockets.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

ROOT_URLCONF = "adit.urls"
ASGI_APPLICATION = "adit.asgi.application"
WSGI_APPLICATION = "adit.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "adit.core.context_processors.site",
            ],
        },
    },
]

if env.str("DATABASE_URL", ""):
    DATABASES = {"default": env.dj_db_url("DATABASE_URL")}
    EMBEDDED_DATABASE = False
else:
    DATABASES = {
        "default": embedded_postgres.django_database(
            EMBEDDED_PGDATA, env.str("EMBEDDED_DATABASE_NAME", "adit")
        )
    }
    EMBEDDED_DATABASE = True
DATABASES["default"].setdefault("CONN_MAX_AGE", 0)
# channels_postgres looks its connection up under this alias.
DATABASES["channels_postgres"] = dict(DATABASES["default"])

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# The axes backend comes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "adit.accounts.backends.ActiveGroupBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes), for the login page and the Django admin alike: after
# LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, logins with that
# username from there are refused for LOGIN_LOCKOUT_MINUTES, counted from the last attempt (so
# guessing on restarts the wait). Counting per username *and* address keeps an attacker from
# locking a user out everywhere; the username counts whether or not such a user exists, so the
# lockout tells nobody which usernames are real. A successful login clears the count.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = datetime.timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "adit.accounts.views.locked_out"
AXES_CLIENT_IP_CALLABLE = "adit.accounts.throttling.client_address"
# Behind a TLS proxy every client has the proxy's address; see adit.accounts.throttling.
BEHIND_TLS_PROXY = env.bool("DJANGO_BEHIND_TLS_PROXY", False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", "") or DATA_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
email_url = env.str("DJANGO_EMAIL_URL", "")
if email_url:
    globals().update(env.dj_email_url("DJANGO_EMAIL_URL"))
SERVER_EMAIL = env.str("DJANGO_SERVER_EMAIL", "adit@localhost")
DEFAULT_FROM_EMAIL = SERVER_EMAIL
EMAIL_SUBJECT_PREFIX = "[ADIT] "
ADMINS = [(env.str("DJANGO_ADMIN_FULL_NAME", "ADIT Admin"), env.str("DJANGO_ADMIN_EMAIL", ""))]
SUPPORT_EMAIL = env.str("SUPPORT_EMAIL", "")

SUPERUSER_USERNAME = env.str("SUPERUSER_USERNAME", "")
SUPERUSER_EMAIL = env.str("SUPERUSER_EMAIL", "")
SUPERUSER_PASSWORD = env.str("SUPERUSER_PASSWORD", "")
SUPERUSER_AUTH_TOKEN = env.str("SUPERUSER_AUTH_TOKEN", "")

# Tokens are stored as an HMAC of the token under this key; changing it invalidates all tokens.
TOKEN_AUTHENTICATION_SALT = env.str("TOKEN_AUTHENTICATION_SALT", "")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "adit.token_authentication.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "adit.core.api.permissions.TokenScope",
    ],
    "EXCEPTION_HANDLER": "adit.core.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ADIT API",
    "DESCRIPTION": (
        "Query DICOM servers and create, follow and cancel transfer and query jobs. "
        "Authenticate with the header `Authorization: Token <token>` (tokens are made on the "
        "token page). The DICOMweb API under /api/dicom-web/ is described by DICOM PS3.18."
    ),
    "VERSION": "1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "adit.core.api.jobs.JOB_STATUS_NAMES",
        "TaskStatusEnum": "adit.core.api.jobs.TASK_STATUS_NAMES",
    },
}

CHANNEL_LAYERS = {"default": postgres_layer_config(DATABASES["default"])}

# How long a worker may stay silent before its running jobs count as stalled and are retried.
STALLED_WORKER_SECONDS = env.int("STALLED_WORKER_SECONDS", 60)
# Seconds a stopping worker lets a running task go on before asking it to stop and requeueing
# it (keep it well below the 8 s after which `cli up` kills what still runs).
WORKER_SHUTDOWN_GRACE_SECONDS = env.float("WORKER_SHUTDOWN_GRACE_SECONDS", 2.0)

# DICOM networking. ADIT calls other nodes as CALLING_AE_TITLE; its receiver (the C-STORE SCP
# that C-MOVE sends to) answers as RECEIVER_AE_TITLE on RECEIVER_PORT and hands every instance to
# the worker that asked for it through the file channel on FILE_CHANNEL_PORT.
CALLING_AE_TITLE = env.str("CALLING_AE_TITLE", "ADIT")
RECEIVER_AE_TITLE = env.str("RECEIVER_AE_TITLE", "ADIT")
RECEIVER_HOST = env.str("RECEIVER_HOST", "127.0.0.1")
RECEIVER_PORT = env.int("RECEIVER_PORT", 11112)
FILE_CHANNEL_HOST = env.str("FILE_CHANNEL_HOST", "127.0.0.1")
FILE_CHANNEL_PORT = env.int("FILE_CHANNEL_PORT", 14638)
# Workers prove to the file channel that they know this secret; empty: one derived from
# SECRET_KEY (adit.core.dicom.file_channel.configured_secret).
FILE_CHANNEL_SECRET = env.str("FILE_CHANNEL_SECRET", "")
# Seconds to wait for a C-MOVE's instances after the PACS reported the move as done.
C_MOVE_QUIET_TIMEOUT = env.int("C_MOVE_QUIET_TIMEOUT", 30)
DICOM_CONNECTION_TIMEOUT = env.int("DICOM_CONNECTION_TIMEOUT", 10)
DICOM_ACSE_TIMEOUT = env.int("DICOM_ACSE_TIMEOUT", 30)
DICOM_DIMSE_TIMEOUT = env.int("DICOM_DIMSE_TIMEOUT", 60)
DICOM_NETWORK_TIMEOUT = env.int("DICOM_NETWORK_TIMEOUT", 120)
DICOMWEB_TIMEOUT = env.int("DICOMWEB_TIMEOUT", 60)
# Retries of transient network failures inside one operation (connection refused, timeouts).
DICOM_RETRY_ATTEMPTS = env.int("DICOM_RETRY_ATTEMPTS", 3)
# How long an operation waits for one of the associations a server allows ADIT at once (its
# "max. associations") before it gives up with a retriable error (the task is tried later).
DICOM_ASSOCIATION_WAIT_SECONDS = env.int("DICOM_ASSOCIATION_WAIT_SECONDS", 300)

# Whether jobs of non-staff users wait until staff verify them (else they start at once).
JOBS_NEED_STAFF_VERIFICATION = env.bool("JOBS_NEED_STAFF_VERIFICATION", False)
# Seconds the DICOM explorer waits for a PACS's answer (each step: connecting, every answer)
# before it tells the person at the page to try again later.
DICOM_EXPLORER_TIMEOUT = env.int("DICOM_EXPLORER_TIMEOUT", 3)
# Seconds a series preview (or why there is none) is kept before it is fetched again.
DICOM_EXPLORER_PREVIEW_CACHE_SECONDS = env.int("DICOM_EXPLORER_PREVIEW_CACHE_SECONDS", 300)
# At most this many results of one DICOMweb search (QIDO-RS); a client pages with offset.
DICOM_WEB_MAX_RESULTS = env.int("DICOM_WEB_MAX_RESULTS", 1000)
# Seconds a DICOMweb API request waits for a PACS at each step (connecting, a free association,
# each answer) before it answers 504 or 503; a client waits, so nothing is tried again.
DICOM_WEB_TIMEOUT = env.int("DICOM_WEB_TIMEOUT", 30)
# Whether a batch transfer must name the ethics committee's approval of its project.
ETHICS_COMMITTEE_APPROVAL_REQUIRED = env.bool("ETHICS_COMMITTEE_APPROVAL_REQUIRED", True)

# Tasks (one study of a job each). A task failing with a transient error is tried again up to
# DICOM_TASK_MAX_ATTEMPTS times, waiting DICOM_TASK_RETRY_WAIT seconds times (attempt + 1)
# between attempts (2, 4, 6 minutes); a task running longer than DICOM_TASK_TIMEOUT seconds fails.
# Tasks a worker on the dicom queue runs at the same time (each in a thread of its own).
DICOM_WORKER_CONCURRENCY = env.int("DICOM_WORKER_CONCURRENCY", 4)
DICOM_TASK_MAX_ATTEMPTS = env.int("DICOM_TASK_MAX_ATTEMPTS", 3)
DICOM_TASK_RETRY_WAIT = env.int("DICOM_TASK_RETRY_WAIT", 120)
DICOM_TASK_TIMEOUT = env.int("DICOM_TASK_TIMEOUT", 20 * 60)
# Instances retrieved but not yet stored, at most (a bound by count beside the one in bytes).
TRANSFER_PIPELINE_DEPTH = env.int("TRANSFER_PIPELINE_DEPTH", 16)
# How many bytes of fetched instances a transfer (or a download) holds in memory; a large
# instance waits on disk, in the system's temporary folder (see instance_stream.py).
TRANSFER_PIPELINE_BYTES = env.int("TRANSFER_PIPELINE_BYTES", 256 * 1024 * 1024)
# Modalities left out when pseudonymizing (they often carry burned-in or free-text PHI).
EXCLUDE_MODALITIES = env.list("EXCLUDE_MODALITIES", ["PR", "SR"])
# The root of the UIDs the pseudonymizer generates: empty for 2.25 (UUID-derived, PS3.5 B.2),
# else the organisation's registered root (checked at start-up: adit.core.checks).
PSEUDONYMIZATION_UID_ROOT = env.str("PSEUDONYMIZATION_UID_ROOT", "")
# Each folder destination is checked daily and staff e-mailed when it grows past its warn size.
DISK_SPACE_CHECK_CRON = env.str("DISK_SPACE_CHECK_CRON", "0 7 * * *")

# REST addresses of the demo Orthancs ('uv run cli up --demo', populate_orthancs).
ORTHANC1_URL = env.str("ORTHANC1_URL", "http://127.0.0.1:6501")
ORTHANC2_URL = env.str("ORTHANC2_URL", "http://127.0.0.1:6502")
ORTHANC1_DICOM_PORT = env.int("ORTHANC1_DICOM_PORT", 7501)
ORTHANC2_DICOM_PORT = env.int("ORTHANC2_DICOM_PORT", 7502)

LOG_LEVEL = env.str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "simple": {"format": "{levelname} {asctime} {name} {message}", "style": "{"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "adit": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "procrastinate": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Both log every registration at start-up, in every process.
        "procrastinate.periodic": {"level": "WARNING"},
        "procrastinate.blueprints": {"level": "WARNING"},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
