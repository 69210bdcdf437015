"""The servers and folders a user may use, and queries of a server through the operator.

    GET /api/nodes/                          every node usable as a source or destination
    GET /api/nodes/<name or AE title>/       one of them
    GET /api/nodes/<node>/studies/?PatientID=…&StudyDate=20240101-20241231&limit=…
    GET /api/nodes/<node>/series/?StudyInstanceUID=…

A node's roles and a query's source come from the user's active group, as on the web pages.
Querying a server also needs the permission that searching it through the DICOMweb API needs
(``dicom_web.can_query``): what a PACS answers names patients.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from adit.core.access import usable_nodes, usable_server
from adit.core.api.viewsets import AditViewSet
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import Level, Query
from adit.core.models import DicomNode, DicomServer

QUERY_PERMISSION = "dicom_web.can_query"

# Query parameters that steer the query instead of matching an attribute.
CONTROL_PARAMETERS = ("limit",)


class NodeSerializer(serializers.ModelSerializer):
    type = serializers.SerializerMethodField()
    ae_title = serializers.SerializerMethodField()
    roles = serializers.SerializerMethodField()
    capabilities = serializers.SerializerMethodField()

    class Meta:
        model = DicomNode
        fields = ("id", "name", "type", "ae_title", "roles", "capabilities")

    def get_type(self, node: DicomNode) -> str:
        return "server" if node.node_type == DicomNode.NodeType.SERVER else "folder"

    def get_ae_title(self, node: DicomNode) -> str | None:
        server = getattr(node, "dicomserver", None) if self.get_type(node) == "server" else None
        return server.ae_title if server is not None else None

    def get_roles(self, node: DicomNode) -> list[str]:
        roles = self.context["roles"].get(node.pk, set())
        return [role for role in ("source", "destination") if role in roles]

    def get_capabilities(self, node: DicomNode) -> list[str]:
        """What ADIT can do with the node: query, retrieve, store."""
        if self.get_type(node) == "folder":
            return ["store"]
        server: DicomServer = node.dicomserver  # pyright: ignore[reportAttributeAccessIssue]
        query = server.patient_root_find_support or server.study_root_find_support
        retrieve = any(
            (
                server.patient_root_get_support,
                server.patient_root_move_support,
                server.study_root_get_support,
                server.study_root_move_support,
                server.dicomweb_wado_support,
            )
        )
        offered = {
            "query": query or server.dicomweb_qido_support,
            "retrieve": retrieve,
            "store": server.store_scp_support or server.dicomweb_stow_support,
        }
        return [capability for capability, given in offered.items() if given]


def _json_value(value):
    """A DICOM value as JSON can hold it: text, a number, a list of them."""
    if isinstance(value, MultiValue | list):
        return [_json_value(item) for item in value]
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, int | float | str):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, bytes):
        return None
    return str(value)


def answer_json(dataset: Dataset) -> dict:
    """A query's answer as {keyword: value}; sequences and binary values are left out."""
    answer = {}
    for element in dataset:
        if not element.keyword or element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "UN"):
            continue
        if element.keyword == "QueryRetrieveLevel" or element.tag.group in (0x0000, 0x0002):
            continue
        answer[element.keyword] = _json_value(element.value) if element.value != "" else None
    return answer


NODE_PARAMETER = OpenApiParameter(
    "node", str, OpenApiParameter.PATH, description="The node's name or, for a server, AE title."
)
QUERY_PARAMETERS = [
    NODE_PARAMETER,
    OpenApiParameter(
        "limit", int, description=f"At most this many answers (1–{settings.DICOM_WEB_MAX_RESULTS})."
    ),
    OpenApiParameter(
        "<DICOM keyword>",
        str,
        description="Any attribute the PACS can match, by keyword: PatientID, PatientName "
        "(wildcards * and ?), StudyDate (20240101 or a range 20240101-20241231), "
        "ModalitiesInStudy (CT,MR), AccessionNumber, StudyInstanceUID, …",
    ),
]


@extend_schema_view(retrieve=extend_schema(parameters=[NODE_PARAMETER]))
class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, AditViewSet):
    """Servers and folders usable by the user's active group."""

    serializer_class = NodeSerializer
    queryset = DicomNode.objects.all()
    action_permissions = {"studies": QUERY_PERMISSION, "series": QUERY_PERMISSION}
    lookup_url_kwarg = "node"
    lookup_value_regex = "[^/]+"
    pagination_class = None  # a handful, and clients want them all

    def get_base_queryset(self) -> QuerySet:
        user = self.request.user
        ids = usable_nodes(user, "source").values("pk")
        destination_ids = usable_nodes(user, "destination").values("pk")
        nodes = DicomNode.objects.filter(Q(pk__in=ids) | Q(pk__in=destination_ids))
        return nodes.select_related("dicomserver").order_by("node_type", "name")

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        if getattr(self, "swagger_fake_view", False):
            return {**context, "roles": {}}
        user = self.request.user
        roles: dict[int, set[str]] = {}
        for role in ("source", "destination"):
            for pk in usable_nodes(user, role).values_list("pk", flat=True):
                roles.setdefault(pk, set()).add(role)
        return {**context, "roles": roles}

    def get_object(self) -> DicomNode:
        """The node named by its name or, for a server, its AE title."""
        key = self.kwargs["node"]
        if not key.isprintable():  # PostgreSQL refuses NUL; no name holds control characters
            raise Http404("There is no DICOM server or folder of that name you may use.")
        nodes = self.get_queryset()
        node = nodes.filter(name=key).first() or nodes.filter(dicomserver__ae_title=key).first()
        if node is None:
            raise Http404(f"There is no DICOM server or folder {key!r} you may use.")
        return node

    @extend_schema(parameters=QUERY_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def studies(self, request: Request, node: str) -> Response:
        """Studies at the server that match the query parameters."""
        return self._query(Level.STUDY)

    @extend_schema(parameters=QUERY_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def series(self, request: Request, node: str) -> Response:
        """Series at the server that match the query parameters (StudyInstanceUID needed)."""
        return self._query(Level.SERIES)

    def _query(self, level: Level) -> Response:
        node = self.get_object()
        server = usable_server(self.request.user, "source", pk=node.pk, use="query")
        params = self.request.query_params
        limit = _limit(params.get("limit"))
        filters = {key: value for key, value in params.items() if key not in CONTROL_PARAMETERS}
        if level == Level.SERIES and not filters.get("StudyInstanceUID"):
            raise ValidationError({"StudyInstanceUID": ["A series query needs the study's UID."]})
        query = Query.from_attributes(level, filters)  # ValidationError names a bad key
        operator = DicomOperator(server, answer_within=settings.DICOM_WEB_TIMEOUT)
        answers = operator.find(query, limit + 1)
        results = [answer_json(answer) for answer in answers]
        more = len(results) > limit or answers.cut_short
        return Response({"count": len(results[:limit]), "more": more, "results": results[:limit]})


def _limit(value: str | None) -> int:
    maximum = settings.DICOM_WEB_MAX_RESULTS
    if value is None:
        return min(100, maximum)
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise ValidationError({"limit": [f"A whole number from 1 to {maximum}."]})
    return int(value)
