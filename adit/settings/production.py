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

# Production is served over HTTPS only, so cookies never travel in clear and browsers are told
# (HSTS) to refuse plain HTTP to this host from then on.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", True)
# The container's health check asks from inside, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 60 * 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", True)
# Whoever can reach the web server directly could claim HTTPS with this header; only a TLS proxy
# in front of it, which sets the header itself, makes it trustworthy.
if BEHIND_TLS_PROXY:  # noqa: F405
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
