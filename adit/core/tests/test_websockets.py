"""Who may open a WebSocket (same origin only) and that an ended session is noticed."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from adit.core.tests.asgi_server import AsgiServer
from adit.core.websockets import origin_allowed, session_user


def _scope(origin: str | None, host: str = "adit.example.org", scheme: str = "ws", **headers):
    pairs = [(b"host", host.encode())]
    if origin is not None:
        pairs.append((b"origin", origin.encode()))
    pairs += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": pairs}


@pytest.fixture
def allowed_hosts(settings):
    settings.ALLOWED_HOSTS = ["adit.example.org", "localhost", "127.0.0.1", "[::1]"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://adit.example.org"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


@pytest.mark.parametrize(
    "origin, host, scheme, headers",
    [
        ("http://adit.example.org", "adit.example.org", "ws", {}),
        ("http://adit.example.org:80", "adit.example.org", "ws", {}),
        ("http://localhost:8000", "localhost:8000", "ws", {}),
        ("http://LOCALHOST:8000", "localhost:8000", "ws", {}),
        ("http://[::1]:8000", "[::1]:8000", "ws", {}),
        ("https://adit.example.org", "adit.example.org", "wss", {}),
        # Behind a TLS proxy that says so, and by CSRF_TRUSTED_ORIGINS.
        ("https://adit.example.org", "adit.example.org", "ws", {"x_forwarded_proto": "https"}),
        ("https://adit.example.org", "internal:8000", "ws", {}),
    ],
)
def test_the_own_origin_is_allowed(allowed_hosts, origin, host, scheme, headers):
    assert origin_allowed(_scope(origin, host, scheme, **headers))


@pytest.mark.parametrize(
    "origin, host, scheme",
    [
        ("http://localhost:9999", "localhost:8000", "ws"),  # another port of the same host
        ("http://localhost", "localhost:8000", "ws"),
        ("http://localhost:8000", "localhost", "ws"),
        ("https://localhost:8000", "localhost:8000", "ws"),  # another scheme
        ("http://adit.example.org", "adit.example.org", "wss"),
        ("http://evil.example.org", "evil.example.org", "ws"),  # not in ALLOWED_HOSTS
        ("http://adit.example.org.evil.org", "adit.example.org", "ws"),
        ("null", "adit.example.org", "ws"),  # sandboxed frames, file: pages
        ("", "adit.example.org", "ws"),
        (None, "adit.example.org", "ws"),  # no Origin: not a browser on an ADIT page
        ("http://adit.example.org:99999", "adit.example.org", "ws"),
        ("http://adit.example.org/path", "adit.example.org", "ws"),
        ("http://user@adit.example.org", "adit.example.org", "ws"),
        ("http://localhost:8000", "localhost:80x0", "ws"),
    ],
)
def test_other_origins_are_refused(allowed_hosts, origin, host, scheme):
    assert not origin_allowed(_scope(origin, host, scheme))


@pytest.mark.django_db
def test_session_user_follows_the_session_store(member):
    browser = Client()
    browser.force_login(member)
    scope = {"session": SessionStore(browser.session.session_key)}
    assert session_user(scope) == member

    member.is_active = False
    member.save()
    assert session_user(scope) is None
    member.is_active = True
    member.save()

    member.set_password("another-password-entirely")  # ends the sessions, as Django does
    member.save()
    assert session_user(scope) is None

    browser.force_login(member)
    scope = {"session": SessionStore(browser.session.session_key)}
    browser.logout()
    assert session_user(scope) is None
    assert session_user({"session": SessionStore()}) is None
    assert session_user({}) is None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_other_origins_and_closes_anonymous_sockets_with_4401(member):
    server = AsgiServer()
    try:
        url = f"ws://127.0.0.1:{server.port}/ws/selective-transfer"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=f"http://127.0.0.1:{server.port + 1}")  # pyright: ignore[reportArgumentType]
        assert refused.value.response.status_code == 403

        with connect(url, origin=server.url) as socket:  # pyright: ignore[reportArgumentType]
            assert "Log in again" in str(socket.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log
