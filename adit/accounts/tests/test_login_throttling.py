"""Guessing passwords: after a few wrong ones the login page and the Django admin refuse further
attempts, even with the right password, and say why and until when."""

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from adit.accounts.tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

# The defaults documented in example.env (LOGIN_FAILURE_LIMIT, LOGIN_LOCKOUT_MINUTES).
LIMIT = 5
MINUTES = 15
LOGIN_URL = "/accounts/login/"
ADMIN_LOGIN_URL = "/django-admin/login/"
WRONG = "Please enter a correct username and password"
LOCKED = re.compile(
    r"Too many failed logins: after (\d+) wrong passwords, logging in with this\s+username from "
    r"your address is blocked for (\d+) minutes\. Try again after\s+(\d\d:\d\d) UTC; every "
    r"attempt before then starts the wait again\."
)


def _log_in(client: Client, username: str, password: str, url: str = LOGIN_URL, **extra):
    return client.post(url, {"username": username, "password": password}, **extra)


def _fail(client: Client, username: str, times: int, url: str = LOGIN_URL, **extra) -> list:
    return [_log_in(client, username, "wrong password", url, **extra) for _ in range(times)]


def _is_logged_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def _lockout_text(response) -> str:
    match = LOCKED.search(response.content.decode())
    assert match, response.content.decode()
    return match.group(0)


def test_wrong_passwords_then_the_right_one_is_refused_with_a_message(client, member):
    *before, last = _fail(client, "alice", LIMIT)
    for response in before:
        assert response.status_code == 200
        assert WRONG in response.content.decode()
    assert last.status_code == 429

    response = _log_in(client, "alice", PASSWORD)

    assert response.status_code == 429
    failures, minutes, _until = LOCKED.search(response.content.decode()).groups()  # type: ignore[union-attr]
    assert (int(failures), int(minutes)) == (LIMIT, MINUTES)
    assert response["Retry-After"] == str(MINUTES * 60)
    assert not _is_logged_in(client)


def test_django_admin_login_is_throttled_too(client, staff_user):
    *_, last = _fail(client, "staffer", LIMIT, ADMIN_LOGIN_URL)
    assert last.status_code == 429

    response = _log_in(client, "staffer", PASSWORD, ADMIN_LOGIN_URL)

    assert response.status_code == 429
    assert _lockout_text(response)
    assert client.get("/django-admin/").status_code == 302  # back to the admin's login


def test_lockout_does_not_tell_whether_the_user_exists(member):
    real, made_up = Client(), Client()
    real_responses = _fail(real, "alice", LIMIT + 1)
    made_up_responses = _fail(made_up, "nobody-by-this-name", LIMIT + 1)

    for of_real, of_made_up in zip(real_responses, made_up_responses, strict=True):
        assert of_real.status_code == of_made_up.status_code
    assert [r.status_code for r in real_responses] == [200] * (LIMIT - 1) + [429, 429]
    real_page, made_up_page = (_without_time(r) for r in (real_responses, made_up_responses))
    assert real_page == made_up_page
    assert LOCKED.search(real_page)
    assert "alice" not in real_page


def _without_time(responses: list) -> str:
    """The last page, with what differs by client and request anyway masked: the time of day
    (which may tick over between two requests) and the CSRF token."""
    page = re.sub(r"\b\d\d:\d\d\b", "00:00", responses[-1].content.decode())
    return re.sub(r'"X-CSRFToken": "\w*"', '"X-CSRFToken": ""', page)


def test_lockout_ends_when_the_wait_is_over(client, member):
    _fail(client, "alice", LIMIT)
    assert _log_in(client, "alice", PASSWORD).status_code == 429

    # As if the wait had passed since the last attempt.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time
        - timedelta(minutes=MINUTES)
        - timedelta(seconds=1)
    )

    assert _log_in(client, "alice", PASSWORD).status_code == 302
    assert _is_logged_in(client)


def test_administrator_lifts_the_lockout(client, member):
    _fail(client, "alice", LIMIT)
    assert _log_in(client, "alice", PASSWORD).status_code == 429

    call_command("axes_reset_username", "alice")

    assert _log_in(client, "alice", PASSWORD).status_code == 302
    assert _is_logged_in(client)


def test_successful_login_clears_the_count(client, member):
    _fail(client, "alice", LIMIT - 1)
    assert _log_in(client, "alice", PASSWORD).status_code == 302
    client.post("/accounts/logout/")

    last = _fail(client, "alice", LIMIT - 1)[-1]

    assert last.status_code == 200
    assert _log_in(client, "alice", PASSWORD).status_code == 302


def test_lockout_holds_for_one_address_only(client, member):
    _fail(client, "alice", LIMIT, REMOTE_ADDR="10.1.2.3")
    assert _log_in(client, "alice", PASSWORD, REMOTE_ADDR="10.1.2.3").status_code == 429

    elsewhere = _log_in(Client(), "alice", PASSWORD, REMOTE_ADDR="10.9.9.9")

    assert elsewhere.status_code == 302


def test_behind_the_tls_proxy_each_client_counts_by_its_own_address(client, member, settings):
    """Every request comes from the proxy; the client is the address the proxy appended to
    X-Forwarded-For, so one attacker cannot lock alice out for everybody, nor dodge the count by
    writing a different address in front."""
    settings.BEHIND_TLS_PROXY = True
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for n in range(LIMIT):
        _log_in(client, "alice", "wrong", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.7", **proxy)
    spoofed = _log_in(
        client, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7", **proxy
    )
    assert spoofed.status_code == 429

    colleague = _log_in(Client(), "alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.4", **proxy)

    assert colleague.status_code == 302
