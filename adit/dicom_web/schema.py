"""How the DICOMweb endpoints appear in the OpenAPI schema. Their bodies are DICOM's own
(PS3.18: DICOM JSON, multipart/related), so the schema names the media types, parameters and
error codes and leaves the models to the standard."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

_ERROR = inline_serializer("DicomWebError", {"detail": serializers.CharField()})
ERRORS = {
    400: OpenApiResponse(_ERROR, "A malformed parameter or body, named in the message."),
    401: OpenApiResponse(_ERROR, "No token, or one that is unknown or expired."),
    403: OpenApiResponse(_ERROR, "The missing permission or the token's scope, named."),
    404: OpenApiResponse(_ERROR, "No server with that AE title you may use, or no such study."),
    502: OpenApiResponse(_ERROR, "The PACS refused or failed; its reason."),
    503: OpenApiResponse(_ERROR, "The PACS cannot be reached; try again after Retry-After."),
    504: OpenApiResponse(_ERROR, "The PACS did not answer in time."),
}

CHANGES = [
    OpenApiParameter("pseudonym", str, description="Pseudonymize under this PatientID/Name."),
    OpenApiParameter("project", str, description="Project whose secret keys the new UIDs."),
    OpenApiParameter("trial_protocol_id", str, description="Clinical Trial Protocol ID."),
    OpenApiParameter("trial_protocol_name", str, description="Clinical Trial Protocol Name."),
]

SEARCH = [
    OpenApiParameter("limit", int, description="At most this many answers."),
    OpenApiParameter("offset", int, description="Skip this many answers."),
    OpenApiParameter(
        "includefield", str, description="More attributes to return (keyword or tag), or all."
    ),
    OpenApiParameter(
        "<attribute>", str, description="Match on any attribute by keyword or tag (PS3.18 8.3.4)."
    ),
]


def dicomweb_operation(summary: str, media_type: str, parameters=(), request=None):
    """The schema of one DICOMweb operation answering ``media_type``."""
    return extend_schema(
        summary=summary,
        description="DICOM PS3.18 defines the bodies; see the README's DICOM web API section.",
        parameters=list(parameters),
        request=request,
        responses={(200, media_type): OpenApiResponse(OpenApiTypes.BINARY), **ERRORS},
    )


class DicomWebSchema(AutoSchema):
    """Names each operation after its whole path, parameters included: the store of a study
    and the store of any study are one view under two paths."""

    def get_operation_id(self) -> str:
        words = [part.strip("{}") for part in self.path.strip("/").split("/") if part]
        return "_".join([*words, self.method.lower()])
