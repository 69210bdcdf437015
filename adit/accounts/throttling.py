"""Whose failed logins count together: the client's address, as login throttling sees it."""

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The address of the client that tries to log in.

    Behind the TLS proxy (``DJANGO_BEHIND_TLS_PROXY``) every request comes from the proxy, so
    counting by REMOTE_ADDR would let anybody lock a username out for everybody. The proxy
    appends the address it was connected from to X-Forwarded-For; that last entry is the one
    to trust, as whatever comes before it the client may have written itself.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    if not settings.BEHIND_TLS_PROXY:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or remote
