from .development import *  # noqa: F403

DEBUG = False
SECRET_KEY = "test-secret-key"
TOKEN_AUTHENTICATION_SALT = "test-salt"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
ALLOWED_HOSTS = ["*"]
# Consumers under test share the test process; the cross-process layer is tested on its own.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
WHITENOISE_AUTOREFRESH = True
# Error-path tests should fail fast; production keeps the longer defaults.
DICOM_RETRY_ATTEMPTS = 2
DICOM_CONNECTION_TIMEOUT = 3
DICOM_ACSE_TIMEOUT = 5
DICOM_DIMSE_TIMEOUT = 10
DICOM_NETWORK_TIMEOUT = 10
C_MOVE_QUIET_TIMEOUT = 3
DICOM_TASK_RETRY_WAIT = 1
DICOM_TASK_TIMEOUT = 300

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    "adit.core.tests.example_app",
    "adit.core.tests.query_app",
]
ROOT_URLCONF = "adit.core.tests.urls"
# Browser tests against daphne (not the WSGI live server) get static files from the finders.
WHITENOISE_USE_FINDERS = True
# A test that waits for an association slot fails within a minute, not five.
DICOM_ASSOCIATION_WAIT_SECONDS = 60
