from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", True)
SECRET_KEY = SECRET_KEY or "insecure-development-key"  # noqa: F405
ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]  # noqa: F405
TOKEN_AUTHENTICATION_SALT = TOKEN_AUTHENTICATION_SALT or "development-salt"  # noqa: F405
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# Serve static files straight from the apps, so no collectstatic is needed while developing.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES = {  # noqa: F405
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
