import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from adit.accounts.tests.factories import PASSWORD, GroupFactory, UserFactory
from adit.token_authentication.models import Token

from .factories import TokenFactory

INDEX_URL = "/token-authentication/"
NEVER_MESSAGE = "You do not have permission to generate never expiring tokens."


def login(client: Client, user) -> None:
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302


def never_expiring_permission() -> Permission:
    return Permission.objects.get(
        content_type__app_label="token_authentication",
        codename="can_generate_never_expiring_token",
    )


def shown_token(content: str) -> str | None:
    match = re.search(r'data-testid="new-token-value">([0-9a-f]+)<', content)
    return match.group(1) if match else None


def test_urls_are_named_in_the_namespace():
    assert reverse("token_authentication:index") == INDEX_URL
    assert reverse("token_authentication:delete", args=[5]) == f"{INDEX_URL}5/delete/"


@pytest.mark.django_db
def test_anonymous_user_is_sent_to_login(client):
    response = client.get(INDEX_URL)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


@pytest.mark.django_db
def test_page_lists_only_own_tokens(client):
    user = UserFactory()
    TokenFactory(owner=user, description="My backup script")
    TokenFactory(description="Somebody else's script")
    login(client, user)

    response = client.get(INDEX_URL)

    content = response.content.decode()
    assert response.status_code == 200
    assert "My backup script" in content
    assert "Somebody else" not in content


@pytest.mark.django_db
def test_list_shows_never_for_tokens_without_expiry(client):
    user = UserFactory()
    TokenFactory(owner=user, expires=None)
    login(client, user)

    response = client.get(INDEX_URL)

    assert "Never" in response.content.decode()


@pytest.mark.django_db
def test_creating_a_token_shows_it_once_and_afterwards_only_its_fraction(client):
    user = UserFactory()
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "7", "description": "Nightly export"})

    assert response.status_code == 200
    plain_token = shown_token(response.content.decode())
    assert plain_token is not None
    assert re.fullmatch(r"[0-9a-f]{40}", plain_token)
    assert response["Cache-Control"] == "no-store"
    token = Token.objects.get(owner=user)
    assert token.description == "Nightly export"
    assert token.fraction == plain_token[:4]
    assert token.expires is not None
    expected_expiry = timezone.now() + timedelta(days=7)
    assert abs(token.expires - expected_expiry) < timedelta(minutes=1)

    response = client.get(INDEX_URL)

    content = response.content.decode()
    assert plain_token not in content
    assert shown_token(content) is None
    assert f"{plain_token[:4]}…" in content
    assert "Nightly export" in content


@pytest.mark.django_db
def test_created_token_is_not_kept_in_session_or_messages(client):
    user = UserFactory()
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "1", "description": ""})
    plain_token = shown_token(response.content.decode())
    assert plain_token is not None

    session = client.session
    assert all(plain_token not in str(value) for value in session.values())
    assert plain_token not in client.get(INDEX_URL).content.decode()


@pytest.mark.django_db
def test_created_token_is_in_no_table_of_the_database(client):
    login(client, UserFactory())
    plain_token = shown_token(client.post(INDEX_URL, {"expiry": "1"}).content.decode())
    assert plain_token is not None

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        tables = [row[0] for row in cursor.fetchall()]
        assert "token_authentication_token" in tables
        for table in tables:
            quoted = connection.ops.quote_name(table)
            cursor.execute(
                f"SELECT count(*) FROM {quoted} t WHERE row_to_json(t)::text LIKE %s",
                [f"%{plain_token}%"],
            )
            assert cursor.fetchone() == (0,), f"plain token found in {table}"


@pytest.mark.django_db
def test_created_token_authenticates_against_the_api(client):
    user = UserFactory(username="dora")
    login(client, user)
    plain_token = shown_token(client.post(INDEX_URL, {"expiry": "30"}).content.decode())

    client.logout()
    response = client.get("/api/me/", HTTP_AUTHORIZATION=f"Token {plain_token}")

    assert response.status_code == 200
    assert response.json()["username"] == "dora"


@pytest.mark.django_db
def test_invalid_expiry_is_refused(client):
    user = UserFactory()
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "365"})

    assert response.status_code == 200
    assert shown_token(response.content.decode()) is None
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_too_long_description_is_refused(client):
    user = UserFactory()
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "1", "description": "x" * 121})

    assert response.status_code == 200
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_never_option_is_hidden_and_refused_without_permission(client):
    user = UserFactory()
    login(client, user)

    page = client.get(INDEX_URL).content.decode()
    assert 'value="never"' not in page

    response = client.post(INDEX_URL, {"expiry": "never"})

    assert response.status_code == 200
    assert NEVER_MESSAGE in response.content.decode()
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_never_expiring_token_requires_permission_of_the_active_group(client):
    plain_group = GroupFactory(name="Clinicians")
    power_group = GroupFactory(name="Script writers")
    power_group.permissions.add(never_expiring_permission())
    user = UserFactory(groups=[plain_group, power_group])
    assert user.active_group == plain_group
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "never"})

    assert NEVER_MESSAGE in response.content.decode()
    assert not Token.objects.exists()

    user.change_active_group(power_group)
    page = client.get(INDEX_URL).content.decode()
    assert 'value="never"' in page

    response = client.post(INDEX_URL, {"expiry": "never", "description": "Forever"})

    assert response.status_code == 200
    assert shown_token(response.content.decode()) is not None
    token = Token.objects.get(owner=user)
    assert token.expires is None
    assert token.description == "Forever"


@pytest.mark.django_db
def test_owner_deletes_own_token(client):
    user = UserFactory()
    token = TokenFactory(owner=user)
    login(client, user)

    response = client.post(reverse("token_authentication:delete", args=[token.pk]), follow=True)

    assert response.redirect_chain[-1][0] == INDEX_URL
    assert "Token deleted." in response.content.decode()
    assert not Token.objects.filter(pk=token.pk).exists()


@pytest.mark.django_db
def test_deleting_another_users_token_is_not_found(client):
    token = TokenFactory()
    login(client, UserFactory())

    response = client.post(reverse("token_authentication:delete", args=[token.pk]))

    assert response.status_code == 404
    assert Token.objects.filter(pk=token.pk).exists()


@pytest.mark.django_db
def test_staff_deletes_anybodys_token(client):
    token = TokenFactory()
    login(client, UserFactory(is_staff=True))

    response = client.post(reverse("token_authentication:delete", args=[token.pk]))

    assert response.status_code == 302
    assert not Token.objects.filter(pk=token.pk).exists()


@pytest.mark.django_db
def test_deleting_a_missing_token_is_not_found(client):
    login(client, UserFactory(is_staff=True))
    response = client.post(reverse("token_authentication:delete", args=[999999]))
    assert response.status_code == 404


@pytest.mark.django_db
def test_delete_by_get_is_not_allowed(client):
    user = UserFactory()
    token = TokenFactory(owner=user)
    login(client, user)

    response = client.get(reverse("token_authentication:delete", args=[token.pk]))

    assert response.status_code == 405
    assert Token.objects.filter(pk=token.pk).exists()


@pytest.mark.django_db
def test_index_refuses_other_methods(client):
    login(client, UserFactory())
    assert client.put(INDEX_URL).status_code == 405
    assert client.delete(INDEX_URL).status_code == 405


@pytest.mark.django_db
def test_admin_cannot_add_tokens_but_lists_them(client):
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    TokenFactory(description="Listed in admin")
    login(client, admin_user)

    changelist = client.get("/django-admin/token_authentication/token/")
    add = client.get("/django-admin/token_authentication/token/add/")

    assert changelist.status_code == 200
    assert "Listed in admin" in changelist.content.decode()
    assert add.status_code == 403


@pytest.mark.django_db
def test_a_read_only_token_is_made_when_chosen_and_listed_as_such(client):
    user = UserFactory()
    login(client, user)

    response = client.post(INDEX_URL, {"expiry": "7", "access": "read"})

    assert shown_token(response.content.decode()) is not None
    assert Token.objects.get(owner=user).read_only
    table = client.get(INDEX_URL).content.decode()
    assert "Read only" in table
