"""The base of every REST API viewset."""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.permissions import IsAuthenticated
from rest_framework.viewsets import GenericViewSet

from adit.core.api.pagination import Pagination
from adit.core.api.permissions import ActionPermission, TokenScope


class AditViewSet(GenericViewSet):
    """Authenticated, within the token's scope, with the permission each action names
    (``action_permissions``), paginated; its queryset is always what the user may see.

    Subclasses implement ``get_base_queryset`` from the user (``self.request.user``); nothing
    reads ``queryset`` (kept only for the schema) so no handler can see more than that.
    """

    permission_classes = [IsAuthenticated, TokenScope, ActionPermission]
    pagination_class = Pagination
    action_permissions: dict[str, str] = {}

    def get_base_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            queryset = getattr(self, "queryset", None)
            assert queryset is not None, "a viewset names its model's queryset for the schema"
            return queryset.none()
        return self.get_base_queryset()
