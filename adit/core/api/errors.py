"""How anything that goes wrong reaches an API client: JSON with ``detail`` (or one list of
messages per field), with the status HTTP clients expect; never a 500 for bad input or for a
PACS that fails."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from adit.core.access import NodeNotUsable
from adit.core.api import API_PREFIX, is_api_path
from adit.core.dicom.errors import DicomError, DicomTimeoutError, RetriableDicomError
from adit.core.jobs.models import ActionNotAllowed
from adit.core.jobs.processing import readable_error
from adit.core.transfer.study import StudyNotFoundError

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait before it tries again a PACS that could not be reached.
RETRY_AFTER_SECONDS = 30


def dicom_error_response(error: DicomError | ValidationError, request) -> Response:
    """What a client gets for a failure of the PACS, or a value ADIT cannot send to it."""
    if isinstance(error, ValidationError):
        return Response({"detail": " ".join(error.messages)}, status=400)
    reason = readable_error(error)
    headers = {}
    if isinstance(error, StudyNotFoundError):
        return Response({"detail": reason}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(error, DicomTimeoutError):
        code = status.HTTP_504_GATEWAY_TIMEOUT
    elif isinstance(error, RetriableDicomError):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        code = status.HTTP_502_BAD_GATEWAY
    logger.warning("API %s %s failed at the PACS: %s", request.method, request.path, reason)
    return Response({"detail": reason}, status=code, headers=headers)


def api_exception_handler(error: Exception, context: dict) -> Response | None:
    """DRF's handler, plus the core's own exceptions: a node the user may not use is a 404
    (which of "no such node" and "not yours" it is stays untold), an action the job's state
    does not allow a 400, a PACS failure as ``dicom_error_response`` says."""
    request: Request = context["request"]
    if isinstance(error, NodeNotUsable):
        return Response({"detail": error.message}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(error, ActionNotAllowed):
        return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(error, DicomError | ValidationError):
        return dicom_error_response(error, request)
    return exception_handler(error, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 for a path nothing serves: JSON under the API, where a script or a
    DICOMweb client (asking for a resource ADIT does not serve, as frames) reads it, else the
    page."""
    if not is_api_path(request.path):
        return defaults.page_not_found(request, exception)
    # Whole (the end says most: "…/frames/1"), but bounded; JSON escapes what it holds.
    path = request.path if len(request.path) <= 500 else f"{request.path[:499]}…"
    detail = f"No API endpoint at {path}; the API's endpoints are listed at {API_PREFIX}docs/."
    return JsonResponse({"detail": detail}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 (a bug: the error is logged with its traceback): JSON under the API."""
    if not is_api_path(request.path):
        return defaults.server_error(request)
    detail = "ADIT failed on this request with an internal error; it is logged for the operators."
    return JsonResponse({"detail": detail}, status=500)
