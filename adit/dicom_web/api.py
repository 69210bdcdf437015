"""What every endpoint of the DICOMweb API shares: who may call it, which server it names, and
how anything that goes wrong reaches the client (JSON, with the status PS3.18 and HTTP
clients expect; never a 500 for bad input or a failing PACS).

Clients authenticate with ``Authorization: Token …`` (a browser's session works too). Each
kind of operation needs its own permission (``dicom_web.can_query``, ``can_retrieve``,
``can_store``); the server is named by its AE title and must be usable in the role the
operation needs (a source to search or retrieve, a destination to store). A script chooses no
active group, so every group of the user counts, but the permission and the server's access
must come from the same group: what one group may do never combines with what another may
reach.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from adit.core.access import NodeNotUsable, Role, usable_server
from adit.core.api.errors import dicom_error_response
from adit.core.api.permissions import TokenScope
from adit.core.dicom.errors import DicomError
from adit.core.models import DicomServer

from .schema import DicomWebSchema

logger = logging.getLogger(__name__)

QUERY = "dicom_web.can_query"
RETRIEVE = "dicom_web.can_retrieve"
STORE = "dicom_web.can_store"
RETRIEVE_UNPSEUDONYMIZED = "dicom_web.can_retrieve_unpseudonymized"


class BadParameter(ParseError):
    """A query parameter (or path UID) the API cannot use; the message names it."""

    def __init__(self, parameter: str, problem: str):
        super().__init__(f"Invalid parameter {parameter}: {problem}")
        self.parameter = parameter


def bad_parameter(parameter: str, error: ValidationError) -> BadParameter:
    return BadParameter(parameter, " ".join(error.messages))


def _held_personally(user, permission: str) -> bool:
    # get_user_permissions is cached on the user object: no query after the first.
    return user.is_superuser or (user.is_active and permission in user.get_user_permissions())


def groups_allowed(user, permission: str) -> QuerySet[Group]:
    """The user's groups that hold ``permission``; all of them for a user who holds it
    personally (a superuser, or a permission given to the user)."""
    if _held_personally(user, permission):
        return user.groups.all()
    app_label, codename = permission.split(".")
    return user.groups.filter(
        permissions__content_type__app_label=app_label, permissions__codename=codename
    )


class OperationAllowed(BasePermission):
    """The permission of the view's operation for the request's method, named when missing.
    The groups that hold it are kept on the view, for finding the server in one of them."""

    def has_permission(self, request: Request, view) -> bool:
        assert isinstance(view, DicomWebView)
        needed = view.permission_for(request.method or "GET")
        if needed is None:
            return True  # a method the view does not serve: DRF answers 405
        view.allowed_groups = list(groups_allowed(request.user, needed))
        if view.allowed_groups or _held_personally(request.user, needed):
            return True
        self.message = (
            f"You are not allowed to do this: it needs the permission {needed}, which none of "
            "your groups has."
        )
        return False


class _AlwaysJson(BaseContentNegotiation):
    """Error bodies are JSON whatever the client accepts: an Accept header for multipart DICOM
    must get the reason of a failure, not a 406 instead of it. Endpoints that answer with
    other content check Accept themselves."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = next(iter(renderers))
        return renderer, renderer.media_type

    def select_parser(self, request, parsers):
        return next(iter(parsers), None)


class DicomWebView(APIView):
    """Base of every endpoint: subclasses say which permission each method needs
    (``permissions``) and in which role it uses the server (``roles``)."""

    permission_classes = [IsAuthenticated, TokenScope, OperationAllowed]
    schema = DicomWebSchema()
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AlwaysJson  # pyright: ignore[reportAssignmentType]
    permissions: dict[str, str] = {}
    roles: dict[str, Role] = {}
    allowed_groups: list[Group] = []  # set by OperationAllowed for the request

    def permission_for(self, method: str) -> str | None:
        return self.permissions.get("GET" if method in ("HEAD", "OPTIONS") else method)

    def server(self, ae_title: str) -> DicomServer:
        method = self.request.method or "GET"
        role = self.roles.get("GET" if method in ("HEAD", "OPTIONS") else method, "source")
        user = self.request.user
        try:
            return usable_server(
                user,
                role,
                ae_title=ae_title,
                groups=Group.objects.filter(pk__in=[group.pk for group in self.allowed_groups]),
                use="search or retrieve from" if role == "source" else "store to",
            )
        except NodeNotUsable as err:
            raise NotFound(err.message) from None

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DicomError | ValidationError):
            return dicom_error_response(exc, self.request)
        return super().handle_exception(exc)


class NotAcceptable(APIException):
    status_code = status.HTTP_406_NOT_ACCEPTABLE
    default_detail = "None of the media types the request accepts can be served here."
