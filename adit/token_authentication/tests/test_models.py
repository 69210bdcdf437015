import hashlib
import hmac
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from adit.accounts.tests.factories import UserFactory
from adit.token_authentication.models import Token, create_or_replace_named_token, hash_token

from .factories import TokenFactory


def test_hash_is_hmac_sha256_keyed_with_the_salt(settings):
    settings.TOKEN_AUTHENTICATION_SALT = "some-salt"
    expected = hmac.new(b"some-salt", b"abc", hashlib.sha256).hexdigest()
    assert hash_token("abc") == expected


def test_changing_the_salt_changes_the_hash(settings):
    first = hash_token("abc")
    settings.TOKEN_AUTHENTICATION_SALT = "another-salt"
    assert hash_token("abc") != first


@pytest.mark.django_db
def test_create_token_returns_a_random_40_hex_token_and_stores_only_its_hash():
    user = UserFactory()

    token, plain_token = Token.objects.create_token(user, "backup script", timedelta(days=7))

    assert re.fullmatch(r"[0-9a-f]{40}", plain_token)
    token.refresh_from_db()
    assert token.token_hashed == hash_token(plain_token)
    assert token.token_hashed != plain_token
    assert token.fraction == plain_token[:4]
    assert token.description == "backup script"
    assert token.owner == user
    assert token.expires is not None
    assert token.expires - token.created == pytest.approx(
        timedelta(days=7), abs=timedelta(seconds=5)
    )


@pytest.mark.django_db
def test_two_tokens_differ():
    user = UserFactory()
    _, first = Token.objects.create_token(user, "", timedelta(days=1))
    _, second = Token.objects.create_token(user, "", timedelta(days=1))
    assert first != second


@pytest.mark.django_db
def test_plain_token_is_stored_nowhere_in_the_database():
    user = UserFactory()
    _, plain_token = Token.objects.create_token(user, "my token", None)

    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(t)::text FROM token_authentication_token t")
        rows = [row[0] for row in cursor.fetchall()]

    assert len(rows) == 1
    assert plain_token not in rows[0]
    assert hash_token(plain_token) in rows[0]


@pytest.mark.django_db
def test_token_without_expiry_never_expires():
    token, _ = Token.objects.create_token(UserFactory(), "", None)
    assert token.expires is None
    assert not token.is_expired


@pytest.mark.django_db
def test_token_is_expired_once_its_expiry_has_passed():
    assert TokenFactory(expires=timezone.now() - timedelta(seconds=1)).is_expired
    assert not TokenFactory(expires=timezone.now() + timedelta(hours=1)).is_expired


@pytest.mark.django_db
def test_lookup_by_plain_token_finds_only_the_matching_token():
    token = TokenFactory(plain_token="a" * 40)
    TokenFactory(plain_token="b" * 40)

    assert Token.objects.get_by_plain_token("a" * 40) == token
    assert Token.objects.get_by_plain_token("c" * 40) is None


@pytest.mark.django_db
def test_named_token_stores_the_hash_of_the_given_token():
    user = UserFactory()
    plain_token = "superuser-token-0123456789"

    token = create_or_replace_named_token(user, plain_token, "Superuser token")

    assert token.token_hashed == hash_token(plain_token)
    assert token.fraction == "supe"
    assert token.expires is None
    assert Token.objects.get_by_plain_token(plain_token) == token


@pytest.mark.django_db
def test_named_token_replaces_the_previous_token_of_that_name():
    user = UserFactory()
    other = TokenFactory(owner=user, description="Another script")
    create_or_replace_named_token(user, "first-token-0123456789", "Superuser token")

    token = create_or_replace_named_token(user, "second-token-0123456789", "Superuser token")

    assert set(user.tokens.all()) == {token, other}
    assert Token.objects.get_by_plain_token("first-token-0123456789") is None


@pytest.mark.django_db
def test_named_token_is_idempotent():
    user = UserFactory()
    first = create_or_replace_named_token(user, "same-token-0123456789", "Superuser token")
    second = create_or_replace_named_token(user, "same-token-0123456789", "Superuser token")
    assert first.pk == second.pk
    assert user.tokens.count() == 1


@pytest.mark.django_db
def test_named_token_shorter_than_20_characters_is_refused():
    user = UserFactory()
    with pytest.raises(ValueError, match="at least 20 characters"):
        create_or_replace_named_token(user, "too-short", "Superuser token")
    assert not Token.objects.exists()


@pytest.mark.django_db
def test_named_token_with_whitespace_is_refused():
    with pytest.raises(ValueError, match="whitespace"):
        create_or_replace_named_token(UserFactory(), "has a space in it 0123456789", "x")
