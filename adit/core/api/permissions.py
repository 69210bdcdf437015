"""Who may call what: the token's scope and the model permission of an action."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request


class TokenScope(BasePermission):
    """A read-only token reads: any other method is refused, whatever its user may do."""

    message = (
        "This API token is read-only: it may only read (GET, HEAD, OPTIONS). "
        "Create a token with write access on the token page to change anything."
    )

    def has_permission(self, request: Request, view) -> bool:
        token = request.auth
        if getattr(token, "read_only", False):
            return request.method in SAFE_METHODS
        return True


class ActionPermission(BasePermission):
    """The permission a viewset names for an action (``action_permissions``: action ->
    "app_label.codename"), from the user's active group as on the web pages; the 403 names it.
    """

    def has_permission(self, request: Request, view) -> bool:
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is None or request.user.has_perm(required):  # pyright: ignore[reportAttributeAccessIssue]
            return True
        self.message = (
            f"You do not have the permission {required} in your active group "
            f"({_active_group_name(request.user)})."
        )
        return False


def _active_group_name(user) -> str:
    group = getattr(user, "active_group", None)
    return group.name if group is not None else "none chosen"
