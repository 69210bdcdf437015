from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

DEBUG = False

for _name in ("SECRET_KEY", "TOKEN_AUTHENTICATION_SALT"):
    if not globals()[_name]:
        raise ImproperlyConfigured(
            f"{'DJANGO_' if _name == 'SECRET_KEY' else ''}{_name} must be set in production "
            "(run 'uv run cli init-workspace' to create a .env with random secrets)."
        )

SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
