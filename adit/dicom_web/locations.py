"""Where a study, series or instance can be retrieved through ADIT, in the URL layout the
client used: upstream's prefixed paths (``wadors/…``) or the single PS3.18 root."""

from __future__ import annotations

from django.urls import reverse
from pydicom import Dataset
from rest_framework.request import Request

from adit.core import validators
from adit.core.dicom.query import Level

_UIDS = {
    Level.STUDY: ("StudyInstanceUID",),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID"),
    Level.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
_NAMES = {Level.STUDY: "study", Level.SERIES: "series", Level.IMAGE: "instance"}


def uses_prefixes(request: Request) -> bool:
    """Whether the client calls upstream's prefixed paths (qidors/, wadors/, stowrs/)."""
    return any(f"/{prefix}/" in request.path for prefix in ("qidors", "wadors", "stowrs"))


def retrieve_url(request: Request, ae_title: str, dataset: Dataset, level: Level) -> str | None:
    """The absolute WADO-RS URL of what ``dataset`` names at ``level``; None if one of its UIDs
    is missing or malformed (a PACS's answer is not trusted to build a URL)."""
    uids = [str(dataset.get(keyword, "")) for keyword in _UIDS[level]]
    if not all(validators.is_valid_uid(uid) for uid in uids):
        return None
    prefix = "wado_" if uses_prefixes(request) else ""
    path = reverse(f"dicom_web:{prefix}{_NAMES[level]}", args=[ae_title, *uids])
    return request.build_absolute_uri(path)
