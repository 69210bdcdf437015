"""The exceptions of failed requests: one class per kind of failure a script handles
differently, each with ADIT's own explanation and the HTTP status."""

from __future__ import annotations

import re

import requests

# How much of a body that is no JSON explanation goes into a message.
_MAX_MESSAGE = 1000


class AditError(Exception):
    """A request ADIT did not fulfil.

    Attributes:
        message: ADIT's explanation (the ``detail`` of its JSON answer, else the text).
        status_code: The HTTP status; None for a failure ADIT reported in the middle of an
            answer already under way (its status line said 200).
        errors: ADIT's JSON answer as it came (e.g. the messages per field of a refused
            job, a batch's ``problems`` with line and column); None without one.
    """

    def __init__(self, message: str, status_code: int | None = None, errors=None):
        super().__init__(message if status_code is None else f"{status_code}: {message}")
        self.message = message
        self.status_code = status_code
        self.errors = errors


class AditAuthError(AditError):
    """401: no token, or one ADIT does not know (revoked, expired, mistyped)."""


class AditPermissionDenied(AditError):
    """403: the user lacks the permission the operation needs (the message names it)."""


class AditNotFound(AditError):
    """404: an unknown AE title (or a server the user may not use so), study, series or
    instance."""


class AditBadRequest(AditError):
    """400: a parameter or body ADIT cannot use (the message names it; ``errors`` has them
    all)."""


class AditServerError(AditError):
    """5xx and any other failure: a PACS that cannot be reached or fails, a broken answer."""


_BY_STATUS: dict[int, type[AditError]] = {
    400: AditBadRequest,
    401: AditAuthError,
    403: AditPermissionDenied,
    404: AditNotFound,
}


def error_of(response: requests.Response) -> AditError:
    """The exception for an answer with an error status."""
    error_class = _BY_STATUS.get(response.status_code, AditServerError)
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_class(message_of(response), response.status_code, body)


def message_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    # A store that stored nothing (409) answers with DICOM JSON, the reasons in Warning
    # (299 ADIT "…", one per reason).
    warnings = re.findall(r'"([^"]*)"', response.headers.get("Warning", ""))
    if warnings:
        return "; ".join(warnings)[:_MAX_MESSAGE]
    if isinstance(body, dict) and body:
        return _field_messages(body)[:_MAX_MESSAGE]
    text = response.text.strip()
    return text[:_MAX_MESSAGE] or response.reason or "no explanation given"


def _field_messages(body: dict) -> str:
    """Messages by field (``field: message``; nested ones as ``studies.0.study_uid``)."""
    found: list[str] = []

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        elif value is not None:
            found.append(f"{path}: {value}" if path else str(value))

    walk(body, "")
    return "; ".join(found)
