"""REST API authentication with the header ``Authorization: Token <token>``."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from adit.core import validators

from .models import Token

KEYWORD = "Token"


class TokenAuthentication(BaseAuthentication):
    """Authenticates a request by one of the API tokens of a user.

    Requests without an Authorization header, or with another scheme from a browser that is
    logged in, are left to the other authentication classes (its session). Any other request
    with another scheme (Bearer, Basic), or with a token that cannot be accepted, is answered
    with 401 and a message that names the reason.
    """

    def authenticate(self, request: Request) -> tuple[object, Token] | None:
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        if parts[0].lower() != KEYWORD.lower().encode():
            session_user = getattr(request._request, "user", None)
            if session_user is not None and session_user.is_authenticated:
                return None  # a browser behind a proxy that adds its own credentials
            # A script that sends Bearer or Basic credentials learns what to send instead.
            scheme = parts[0].decode("latin-1")[:20]
            raise AuthenticationFailed(
                f"Please use the token authentication protocol: send the header "
                f'"Authorization: Token <your token>" ({validators.shown(scheme)} is not '
                "accepted)."
            )
        if len(parts) == 1:
            raise AuthenticationFailed("Invalid token header. No token provided.")
        if len(parts) > 2:
            raise AuthenticationFailed(
                "Invalid token header. Token string should not contain spaces."
            )
        try:
            plain_token = parts[1].decode()
        except UnicodeError as err:
            raise AuthenticationFailed(
                "Invalid token header. Token string should not contain invalid characters."
            ) from err
        return self.authenticate_credentials(plain_token)

    def authenticate_credentials(self, plain_token: str) -> tuple[object, Token]:
        token = Token.objects.get_by_plain_token(plain_token)
        if token is None:
            raise AuthenticationFailed("Invalid token. Token does not exist.")
        if token.is_expired:
            raise AuthenticationFailed("Invalid token. Token is expired.")
        if not token.owner.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        Token.objects.filter(pk=token.pk).update(last_used=now)
        token.last_used = now
        return token.owner, token

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token header to clients and the docs page."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'The header "Authorization: Token <token>"; make tokens on the '
            "token page.",
        }
