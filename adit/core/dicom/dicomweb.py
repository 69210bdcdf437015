"""DICOMweb services (QIDO-RS, WADO-RS, STOW-RS) against one server, through dicomweb-client."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import requests
import urllib3
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset

from adit.core.dicom import multipart, spool
from adit.core.dicom.errors import DicomError, DicomTimeoutError, RetriableDicomError
from adit.core.dicom.files import encoded_pieces, read_instance

T = TypeVar("T")

# HTTP answers that say "not now" rather than "never" (RFC 9110, DICOM PS3.18 8.6).
_TRANSIENT_HTTP_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
STOW_BATCH_SIZE = 50
# Instances as the server holds them (PS3.18 8.7.3.5.2): a server that had to transcode a
# JPEG 2000 or JPEG-LS image to the default syntax may fail ("Cannot transcode") or lose
# nothing only at great cost.
WADO_ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
WADO_DEFAULT_SYNTAX = 'multipart/related; type="application/dicom"'
# How servers refuse an Accept header they do not understand (406 is the standard answer).
_ACCEPT_NOT_UNDERSTOOD = {400, 406, 415}


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
        self.session = _WildcardSession()
        if peer.authorization:
            self.session.headers["Authorization"] = peer.authorization
        self.client = DICOMwebClient(
            url=peer.root_url.rstrip("/"),
            session=self.session,
            timeout=timeout,
            qido_url_prefix=peer.qido_prefix or None,
            wado_url_prefix=peer.wado_prefix or None,
            stow_url_prefix=peer.stow_prefix or None,
        )

    def _call(self, operation: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except multipart.MultipartError as err:
            raise RetriableDicomError(f"{operation} on {self.peer.name}: {err}") from err
        except requests.HTTPError as err:
            raise self._http_error(operation, err) from err
        except requests.Timeout as err:
            raise DicomTimeoutError(
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
        if operation == "STOW-RS" and code == 409:
            # The server stored none of the instances and will not (PS3.18 10.5.3).
            return DicomError(
                f"{message} It refused every instance of the request; its log says why (a SOP "
                "class or transfer syntax it does not take, say)."
            )
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
        # The UIDs the URL's path names are no query parameters; the others filter (a series
        # of a study, asked for by its UID, is one of the study's series, not all of them).
        path_keys = {
            "SERIES": ("StudyInstanceUID",),
            "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID"),
        }
        in_path = {key for key in path_keys.get(level, ()) if filters.get(key)}
        options = {
            "search_filters": {key: value for key, value in filters.items() if key not in in_path},
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
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        *,
        spool_above: int | None = None,
    ) -> Iterator[Dataset]:
        """WADO-RS, streamed: instances are parsed one by one from the multipart response, in
        the transfer syntax the server holds them in (no transcoding on the server).

        An instance of more than ``spool_above`` bytes goes to disk as it arrives and is
        handed out with its large values deferred (see ``spool``).

        Raises:
            RetriableDicomError: If the response is cut short (it ends before its closing
                boundary, or the connection breaks) or a part is not a DICOM file; the caller
                then has only some of the instances.
        """
        assert series_uid or not sop_uid, "an instance is retrieved within its series"
        path = f"studies/{study_uid}"
        if series_uid:
            path += f"/series/{series_uid}"
        if sop_uid:
            path += f"/instances/{sop_uid}"
        url = f"{self._wado_base()}/{path}"
        response = self._call("WADO-RS", lambda: self._get_multipart(url))
        with response:
            boundary = self._call("WADO-RS", lambda: multipart.boundary_of(_content_type(response)))
            parts = multipart.iter_parts(self._body_chunks(response), boundary, spool_above)
            received = 0
            while (part := self._call("WADO-RS", lambda: next(parts, None))) is not None:
                dataset = self._instance_of(part, received)
                del part  # its body is the dataset now; not held twice while the caller works
                yield dataset
                del dataset
                received += 1

    def _wado_base(self) -> str:
        prefix = self.peer.wado_prefix.strip("/")
        return self.peer.root_url.rstrip("/") + (f"/{prefix}" if prefix else "")

    def _get_multipart(self, url: str) -> requests.Response:
        """GET with the instances as stored; a server that cannot send "any transfer syntax"
        (406) is asked again for its default one."""
        response = self.session.get(
            url, headers={"Accept": WADO_ANY_SYNTAX}, stream=True, timeout=self.timeout
        )
        if response.status_code in _ACCEPT_NOT_UNDERSTOOD:
            response.close()
            response = self.session.get(
                url, headers={"Accept": WADO_DEFAULT_SYNTAX}, stream=True, timeout=self.timeout
            )
        try:
            response.raise_for_status()
        except requests.HTTPError:
            response.close()  # its connection goes back to the pool instead of lingering
            raise
        return response

    def _body_chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(chunk_size=256 * 1024)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise RetriableDicomError(
                f"WADO-RS on {self.peer.name}: the connection broke while the instances were "
                f"arriving ({_root_cause(err)})."
            ) from err

    def _instance_of(self, part: multipart.Part, index: int) -> Dataset:
        try:
            if part.file is not None:
                return spool.spooled_file(part.file)
            return read_instance(part.body)  # its bytes kept: sent on as they came
        except Exception as err:  # pydicom raises many kinds for a broken file
            raise RetriableDicomError(
                f"WADO-RS on {self.peer.name}: part {index + 1} of the response is not a "
                f"readable DICOM file ({err})."
            ) from err

    def store(
        self, datasets: Iterable[Dataset], on_stored: Callable[[int], None] | None = None
    ) -> int:
        """STOW-RS in batches of several instances per request; returns how many were stored
        (and tells ``on_stored`` how many of each batch, once it was). An instance nothing
        changed goes as it arrived (see ``files.read_instance``)."""
        stored = 0
        iterator = iter(datasets)
        while batch := list(islice(iterator, STOW_BATCH_SIZE)):
            response = self._call("STOW-RS", lambda: self._post_instances(batch))
            failed = response.get("FailedSOPSequence", []) if response is not None else []
            if failed:
                uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed)
                raise DicomError(
                    f"STOW-RS on {self.peer.name}: {len(failed)} instance(s) were refused: {uids}."
                )
            stored += len(batch)
            if on_stored is not None:
                on_stored(len(batch))
        return stored

    def _post_instances(self, batch: list[Dataset]) -> Dataset:
        """One STOW-RS request with the batch; the server's answer (empty if it sent none)."""
        boundary = f"adit-{secrets.token_hex(16)}"
        pieces: list[bytes | memoryview] = []
        for dataset in batch:
            pieces.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            pieces += encoded_pieces(dataset)
            pieces.append(b"\r\n")
        pieces.append(f"--{boundary}--\r\n".encode())
        prefix = self.peer.stow_prefix.strip("/")
        url = self.peer.root_url.rstrip("/") + (f"/{prefix}" if prefix else "") + "/studies"
        response = self.session.post(
            url,
            data=b"".join(pieces),
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom"; boundary={boundary}'
                ),
                "Accept": "application/dicom+json",
            },
            timeout=self.timeout,
        )
        response.raise_for_status()
        if response.content and _content_type(response).split(";")[0].strip() in (
            "application/dicom+json",
            "application/json",
        ):
            return Dataset.from_json(response.json())
        return Dataset()


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "")


def _root_cause(err: BaseException) -> str:
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err)
    if "Connection refused" in text:
        return "connection refused"
    return text or type(err).__name__
