"""What every WebSocket of ADIT checks: that it comes from ADIT's own pages (same origin) and,
before each action, that the session it was opened with still belongs to an active user."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib import auth
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


def session_user(scope: Mapping[str, Any]):
    """The active user whose session opened the connection, read afresh from the session store;
    None once that session has ended (logout, expiry, password change) or the user was
    deactivated. Call it from a thread, not from the event loop: it queries the database."""
    session = scope.get("session")
    session_key = getattr(session, "session_key", None)
    if not session_key:
        return None
    # A new store object: the scope's one caches what it read when the socket opened.
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    if not user.is_authenticated or not user.is_active:
        return None
    return user


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int] | None:
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    # urlsplit gives IPv6 hosts without brackets, the Host header with them.
    return scheme, host.lower().strip("[]"), port or _DEFAULT_PORTS[scheme]


def _parse_origin(value: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a port that is no number or out of range
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return _origin(parts.scheme.lower(), parts.hostname or "", port)


def _request_scheme(scope: Mapping[str, Any], headers: dict[bytes, bytes]) -> str:
    """http or https, as the browser reached ADIT (a TLS proxy in front may say so)."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        forwarded = headers.get(header, b"").decode("latin1").split(",")[0].strip()
        if forwarded:
            return "https" if forwarded == secure_value else "http"
    return _HTTP_SCHEMES.get(scope.get("scheme", "ws"), "http")


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the Origin of the handshake is ADIT itself: the scheme, host and port the request
    was sent to (its Host header, a host in ALLOWED_HOSTS), or one of CSRF_TRUSTED_ORIGINS."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.lower(), value)
    origin = _parse_origin(headers.get(b"origin", b"").decode("latin1"))
    if origin is None:
        return False
    trusted = {_parse_origin(item) for item in settings.CSRF_TRUSTED_ORIGINS}
    if origin in trusted:
        return True
    host, port = split_domain_port(headers.get(b"host", b"").decode("latin1"))
    if port and not (port.isascii() and port.isdigit()):
        return False
    own = _origin(_request_scheme(scope, headers), host, int(port) if port else None)
    if own is None:
        return False
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # as Django allows them
    return origin == own and validate_host(host, allowed_hosts)


class SameOriginMiddleware:
    """Refuses a WebSocket handshake (HTTP 403) whose Origin is not ADIT itself.

    channels' AllowedHostsOriginValidator compares host names only, so a page on another port of
    the same host (another web app on localhost, say) could open a socket with the user's
    cookies; this compares scheme, host and port, as a browser's same-origin policy does.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
