"""DICOMweb services (QIDO-RS, WADO-RS, STOW-RS) against one server, through dicomweb-client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from .errors import DicomError, RetriableDicomError

T = TypeVar("T")

# HTTP answers that say "not now" rather than "never" (RFC 9110, DICOM PS3.18 8.6).
_TRANSIENT_HTTP_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
STOW_BATCH_SIZE = 50


class _WildcardSession(requests.Session):
    """Sends DICOM wildcards in query strings as they are.

    requests percent-encodes ``*`` and ``?`` (to %2A, %3F), and some servers (Orthanc 1.10's
    DICOMweb plugin) then match them literally. Both are legal in a query (RFC 3986 3.4).
    """

    def send(self, request, **kwargs):  # pyright: ignore[reportIncompatibleMethodOverride]
        if request.url:
            request.url = request.url.replace("%2A", "*").replace("%3F", "?")
        return super().send(request, **kwargs)


@dataclass(frozen=True)
class DicomWebPeer:
    name: str
    root_url: str
    qido_prefix: str = ""
    wado_prefix: str = ""
    stow_prefix: str = ""
    authorization: str = ""


class DicomWebConnector:
    def __init__(self, peer: DicomWebPeer, timeout: float = 60):
        self.peer = peer
        self.timeout = timeout
        if not peer.root_url:
            raise DicomError(f"{peer.name} has no DICOMweb root URL.")
        headers = {"Authorization": peer.authorization} if peer.authorization else None
        self.client = DICOMwebClient(
            url=peer.root_url.rstrip("/"),
            session=_WildcardSession(),
            timeout=timeout,
            qido_url_prefix=peer.qido_prefix or None,
            wado_url_prefix=peer.wado_prefix or None,
            stow_url_prefix=peer.stow_prefix or None,
            headers=headers,
        )

    def _call(self, operation: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except requests.HTTPError as err:
            raise self._http_error(operation, err) from err
        except requests.Timeout as err:
            raise RetriableDicomError(
                f"{operation} on {self.peer.name}: no answer within {self.timeout:g} s."
            ) from err
        except requests.ConnectionError as err:
            raise RetriableDicomError(
                f"{operation} on {self.peer.name}: could not connect to {self.peer.root_url} "
                f"({_root_cause(err)})."
            ) from err

    def _http_error(self, operation: str, err: requests.HTTPError) -> DicomError:
        response = err.response
        code = response.status_code if response is not None else 0
        reason = response.reason if response is not None else ""
        message = f"{operation} on {self.peer.name} failed: HTTP {code} {reason}".rstrip() + "."
        if code in (401, 403):
            message += " Check the server's DICOMweb authorization header."
        if code in _TRANSIENT_HTTP_STATUSES:
            return RetriableDicomError(message)
        return DicomError(message)

    def probe(self) -> float:
        """A minimal QIDO request; returns the round-trip time in seconds."""
        started = time.perf_counter()
        self._call("QIDO-RS", lambda: self.client.search_for_studies(limit=1))
        return time.perf_counter() - started

    def search(
        self,
        level: str,
        filters: dict[str, str],
        fields: Iterable[str],
        limit: int | None = None,
    ) -> list[Dataset]:
        study_uid = filters.get("StudyInstanceUID")
        series_uid = filters.get("SeriesInstanceUID")
        options = {
            "search_filters": {
                key: value
                for key, value in filters.items()
                if key not in ("StudyInstanceUID", "SeriesInstanceUID") or level == "STUDY"
            },
            "fields": list(fields),
            "limit": limit,
            "get_remaining": limit is None,
        }
        if level in ("PATIENT", "STUDY"):
            results = self._call("QIDO-RS", lambda: self.client.search_for_studies(**options))
        elif level == "SERIES":
            results = self._call(
                "QIDO-RS",
                lambda: self.client.search_for_series(study_instance_uid=study_uid, **options),
            )
        else:
            results = self._call(
                "QIDO-RS",
                lambda: self.client.search_for_instances(
                    study_instance_uid=study_uid, series_instance_uid=series_uid, **options
                ),
            )
        return [Dataset.from_json(result) for result in results]

    def retrieve(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> Iterator[Dataset]:
        """WADO-RS, streamed: instances are parsed one by one from the multipart response."""
        if sop_uid:
            assert series_uid, "an instance is retrieved within its series"
            yield self._call(
                "WADO-RS",
                lambda: self.client.retrieve_instance(study_uid, series_uid, sop_uid),
            )
            return
        if series_uid:
            instances = self._call(
                "WADO-RS", lambda: self.client.iter_series(study_uid, series_uid)
            )
        else:
            instances = self._call("WADO-RS", lambda: self.client.iter_study(study_uid))
        iterator = iter(instances)
        while True:
            try:
                dataset = self._call("WADO-RS", lambda: next(iterator))
            except StopIteration:
                return
            yield dataset

    def store(self, datasets: Iterable[Dataset]) -> int:
        """STOW-RS in batches of several instances per request; returns how many were stored."""
        stored = 0
        iterator = iter(datasets)
        while batch := list(islice(iterator, STOW_BATCH_SIZE)):
            response = self._call("STOW-RS", lambda: self.client.store_instances(batch))
            failed = response.get("FailedSOPSequence", []) if response is not None else []
            if failed:
                uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed)
                raise DicomError(
                    f"STOW-RS on {self.peer.name}: {len(failed)} instance(s) were refused: {uids}."
                )
            stored += len(batch)
        return stored


def _root_cause(err: BaseException) -> str:
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err)
    if "Connection refused" in text:
        return "connection refused"
    return text or type(err).__name__
