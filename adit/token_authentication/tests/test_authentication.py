from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from adit.accounts.tests.factories import UserFactory
from adit.token_authentication.models import Token

from .factories import TokenFactory

ME_URL = "/api/me/"
PLAIN_TOKEN = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def get_me(api_client: APIClient, authorization: str) -> Any:
    return api_client.get(ME_URL, HTTP_AUTHORIZATION=authorization)


@pytest.mark.django_db
def test_valid_token_authenticates_as_its_owner_and_records_the_use(api_client):
    user = UserFactory(username="alice")
    token = TokenFactory(owner=user, plain_token=PLAIN_TOKEN)
    assert token.last_used is None

    response = get_me(api_client, f"Token {PLAIN_TOKEN}")

    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    token.refresh_from_db()
    assert token.last_used is not None
    assert timezone.now() - token.last_used < timedelta(minutes=1)


@pytest.mark.django_db
def test_token_created_by_the_manager_authenticates(api_client):
    user = UserFactory(username="bob")
    _, plain_token = Token.objects.create_token(user, "", timedelta(days=1))

    response = get_me(api_client, f"Token {plain_token}")

    assert response.status_code == 200
    assert response.json()["username"] == "bob"


@pytest.mark.django_db
def test_keyword_is_case_insensitive(api_client):
    TokenFactory(plain_token=PLAIN_TOKEN)
    assert get_me(api_client, f"token {PLAIN_TOKEN}").status_code == 200


@pytest.mark.django_db
def test_recording_the_use_updates_only_last_used(api_client):
    TokenFactory(plain_token=PLAIN_TOKEN)

    with CaptureQueriesContext(connection) as queries:
        response = get_me(api_client, f"Token {PLAIN_TOKEN}")

    assert response.status_code == 200
    updates = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    token_updates = [sql for sql in updates if "token_authentication_token" in sql]
    assert len(token_updates) == 1
    assert '"last_used"' in token_updates[0]
    assert '"description"' not in token_updates[0]


@pytest.mark.django_db
def test_never_expiring_token_is_accepted(api_client):
    TokenFactory(plain_token=PLAIN_TOKEN, expires=None)
    assert get_me(api_client, f"Token {PLAIN_TOKEN}").status_code == 200


@pytest.mark.django_db
def test_expired_token_is_rejected_with_reason(api_client):
    token = TokenFactory(plain_token=PLAIN_TOKEN, expires=timezone.now() - timedelta(minutes=1))

    response = get_me(api_client, f"Token {PLAIN_TOKEN}")

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token. Token is expired."
    token.refresh_from_db()
    assert token.last_used is None


@pytest.mark.django_db
def test_unknown_token_is_rejected_with_reason(api_client):
    TokenFactory(plain_token=PLAIN_TOKEN)

    response = get_me(api_client, "Token " + "f" * 40)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token. Token does not exist."


@pytest.mark.django_db
def test_hash_of_a_token_is_not_accepted_as_token(api_client):
    token = TokenFactory(plain_token=PLAIN_TOKEN)

    response = get_me(api_client, f"Token {token.token_hashed}")

    assert response.status_code == 401
    assert "does not exist" in response.json()["detail"]


@pytest.mark.django_db
def test_token_of_inactive_user_is_rejected_with_reason(api_client):
    TokenFactory(plain_token=PLAIN_TOKEN, owner=UserFactory(is_active=False))

    response = get_me(api_client, f"Token {PLAIN_TOKEN}")

    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


@pytest.mark.django_db
def test_header_without_token_is_rejected_with_reason(api_client):
    response = get_me(api_client, "Token")

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token header. No token provided."


@pytest.mark.django_db
def test_token_with_spaces_is_rejected_with_reason(api_client):
    response = get_me(api_client, "Token abc def")

    assert response.status_code == 401
    assert response.json()["detail"] == (
        "Invalid token header. Token string should not contain spaces."
    )


@pytest.mark.django_db
def test_rejection_tells_the_client_to_use_the_token_scheme(api_client):
    response = get_me(api_client, "Token " + "f" * 40)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_request_without_header_is_not_authenticated(api_client):
    response = api_client.get(ME_URL)

    assert response.status_code in (401, 403)
    assert response.json()["detail"] == "Authentication credentials were not provided."


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer abc"])
def test_another_scheme_is_told_to_use_the_token_protocol(api_client, header):
    response = get_me(api_client, header)

    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "Please use the token authentication protocol" in detail
    assert header.split()[0] in detail


@pytest.mark.django_db
def test_session_login_still_works_without_token(api_client):
    api_client.force_login(UserFactory(username="carol"))

    response = api_client.get(ME_URL)

    assert response.status_code == 200
    assert response.json()["username"] == "carol"


@pytest.mark.django_db
def test_a_logged_in_browser_whose_proxy_adds_credentials_keeps_its_session(api_client):
    api_client.force_login(UserFactory(username="carol"))

    response = get_me(api_client, "Basic dXNlcjpwYXNz")

    assert response.status_code == 200
    assert response.json()["username"] == "carol"
