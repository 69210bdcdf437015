from django.http import HttpRequest


def active_group_middleware(get_response):
    """Repairs a missing or stale active group before any permission check of the request."""

    def middleware(request: HttpRequest):
        user = request.user
        if user.is_authenticated:
            user.ensure_valid_active_group()  # type: ignore[attr-defined]
        return get_response(request)

    return middleware
