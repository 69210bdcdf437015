"""API tokens: only an HMAC of each token is stored, the plain token is shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.utils import timezone

TOKEN_BYTES = 20  # 40 hex characters
FRACTION_LENGTH = 4
MIN_NAMED_TOKEN_LENGTH = 20


def hash_token(plain_token: str) -> str:
    """Returns the HMAC-SHA256 hex digest of the token, keyed with the project's token salt."""
    salt = settings.TOKEN_AUTHENTICATION_SALT
    if not salt:
        raise ImproperlyConfigured("TOKEN_AUTHENTICATION_SALT must be set to use API tokens.")
    return hmac.new(salt.encode(), plain_token.encode(), hashlib.sha256).hexdigest()


def generate_plain_token() -> str:
    """Returns a new random token of 40 hexadecimal characters."""
    return secrets.token_hex(TOKEN_BYTES)


class TokenManager(models.Manager):
    def create_token(
        self,
        owner: Any,
        description: str = "",
        expiry: timedelta | None = None,
        read_only: bool = False,
    ) -> tuple[Token, str]:
        """Creates a token for the owner and returns it with the plain token.

        The plain token is not stored, so the return value is the only chance to see it.

        Args:
            owner: The user the token authenticates as.
            description: What the token is used for.
            expiry: How long the token stays valid from now; None for a token that never
                expires.
            read_only: The token may only read (GET, HEAD, OPTIONS), whatever its owner may.

        Returns:
            The saved token and the plain token.
        """
        plain_token = generate_plain_token()
        expires = timezone.now() + expiry if expiry is not None else None
        token = self.create(
            owner=owner,
            token_hashed=hash_token(plain_token),
            fraction=plain_token[:FRACTION_LENGTH],
            description=description,
            expires=expires,
            read_only=read_only,
        )
        return token, plain_token

    def get_by_plain_token(self, plain_token: str) -> Token | None:
        """Returns the token whose hash matches the plain token, or None if there is none."""
        token_hashed = hash_token(plain_token)
        token = self.select_related("owner").filter(token_hashed=token_hashed).first()
        # The database lookup compares hashes, which reveals nothing useful about the plain
        # token; the constant time comparison guards the final match all the same.
        if token is None or not hmac.compare_digest(token.token_hashed, token_hashed):
            return None
        return token


class Token(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    token_hashed = models.CharField(max_length=64, unique=True)
    fraction = models.CharField(max_length=FRACTION_LENGTH)
    description = models.CharField(max_length=120, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(blank=True, null=True, help_text="Empty means never.")
    last_used = models.DateTimeField(blank=True, null=True)
    read_only = models.BooleanField(
        default=False, help_text="The token may only read (GET, HEAD, OPTIONS requests)."
    )

    objects: ClassVar[TokenManager] = TokenManager()

    class Meta:
        ordering = ("-created",)
        permissions = (("can_generate_never_expiring_token", "Can generate never expiring token"),)

    def __str__(self) -> str:
        return f"{self.fraction}… ({self.owner})"

    @property
    def is_expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()


def create_or_replace_named_token(owner: Any, plain_token: str, description: str) -> Token:
    """Stores the hash of a given plain token for the owner, e.g. the superuser's token.

    A token of the owner with the same description is replaced, so running this again with a
    new plain token (e.g. after SUPERUSER_AUTH_TOKEN changed) leaves only the new one. The
    token never expires.

    Args:
        owner: The user the token authenticates as.
        plain_token: The token the owner will send; at least 20 characters.
        description: Names the token; identifies it for replacement.

    Returns:
        The saved token.

    Raises:
        ValueError: If the plain token is shorter than 20 characters or contains whitespace.
    """
    if len(plain_token) < MIN_NAMED_TOKEN_LENGTH:
        raise ValueError(
            f"The token must be at least {MIN_NAMED_TOKEN_LENGTH} characters long "
            f"(got {len(plain_token)})."
        )
    if any(char.isspace() for char in plain_token):
        raise ValueError("The token must not contain whitespace.")
    token_hashed = hash_token(plain_token)
    Token.objects.filter(owner=owner, description=description).exclude(
        token_hashed=token_hashed
    ).delete()
    token, _ = Token.objects.update_or_create(
        token_hashed=token_hashed,
        defaults={
            "owner": owner,
            "fraction": plain_token[:FRACTION_LENGTH],
            "description": description,
            "expires": None,
        },
    )
    return token
