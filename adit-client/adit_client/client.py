"""AditClient: ADIT's DICOMweb API for scripts, one method per operation, the PACS named by its
AE title in ADIT.

Searches go through dicomweb-client; retrievals read ADIT's multipart answers themselves, as
they stream, so that the ``iter_*`` methods take the same parameters as the others and a
failure ADIT reports in the middle of an answer becomes an exception with its message. Every
request goes through one session, which retries a 503 and turns error statuses into
exceptions (``errors``).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from io import BytesIO
from urllib.parse import quote

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread, dcmwrite

from ._version import __version__
from .errors import AditServerError, error_of
from .jobs import JobsMixin
from .multipart import Part, boundary_of, iter_parts

# What a retrieval asks for: instances in Explicit VR Little Endian (PS3.18's default: pixel
# data any pydicom reads, with no decoder installed), and NIfTI files.
_INSTANCES_ACCEPT = 'multipart/related; type="application/dicom"'
_FILES_ACCEPT = 'multipart/related; type="application/octet-stream"'
_JSON_ACCEPT = "application/dicom+json"
_STORE_BOUNDARY = "adit-client-3b9d0f6e1c2a4d58"
_CHUNK_SIZE = 1024 * 1024
# Longer than ADIT waits for a PACS (120 s), so that its answer saying why comes first.
DEFAULT_TIMEOUT = 180.0
# A wait asked for longer than this is cut to it; without Retry-After a 503 waits the default.
MAX_RETRY_WAIT = 60.0
DEFAULT_RETRY_WAIT = 2.0


class _Session(requests.Session):
    """A session that tries a 503 again after the wait the server asks for, and raises the
    AditError of any error status (for dicomweb-client's requests as for ours)."""

    def __init__(self, retries: int):
        super().__init__()
        self.retries = retries

    def request(self, method, url, *args, **kwargs) -> requests.Response:  # pyright: ignore[reportIncompatibleMethodOverride]
        # dicomweb-client sets Host without the port; ADIT builds the RetrieveURLs of search
        # answers from it, which would then miss the port. requests sets the right one.
        if kwargs.get("headers"):
            kwargs["headers"] = {k: v for k, v in kwargs["headers"].items() if k != "Host"}
        for attempt in range(self.retries + 1):
            response = super().request(method, url, *args, **kwargs)
            if response.status_code != 503 or attempt == self.retries:
                break
            wait = retry_wait(response.headers.get("Retry-After"))
            response.close()
            time.sleep(wait)
        if response.status_code >= 400:
            raise error_of(response)
        return response


def retry_wait(retry_after: str | None) -> float:
    """Seconds to wait as a Retry-After header says (a number or an HTTP date), bounded."""
    if not retry_after:
        return DEFAULT_RETRY_WAIT
    try:
        seconds = float(retry_after)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_WAIT
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_WAIT)


class _StoreBody:
    """A STOW-RS request body made while it is sent, one instance encoded at a time. Each
    iteration starts it anew, so a retried request sends it whole again."""

    def __init__(self, images: Iterable[Dataset]):
        self.images = images

    def __iter__(self) -> Iterator[bytes]:
        for image in self.images:
            buffer = BytesIO()
            dcmwrite(buffer, image, enforce_file_format=True)
            yield f"--{_STORE_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield buffer.getvalue()
            yield b"\r\n"
        yield f"--{_STORE_BOUNDARY}--\r\n".encode()


class AditClient(JobsMixin):
    """ADIT's DICOMweb API, every method taking the AE title of the PACS first, and its REST
    API (queries and jobs, see ``jobs``).

    Args:
        server_url: ADIT's address, e.g. ``https://adit.example.org``.
        auth_token: A token from ADIT's token page.
        verify: Whether to check the server's TLS certificate (or a CA bundle's path).
        trial_protocol_id: Written by ADIT into every instance retrieved or stored.
        trial_protocol_name: Likewise.
        retries: How often a request answered with 503 (a PACS that cannot be reached) is
            tried again, after the wait the answer's Retry-After asks for (at most 60 s).
        timeout: Seconds to wait for the connection and for each piece of an answer (ADIT
            answers a retrieval once the PACS has sent the first instance).
        progress: Show a progress bar (tqdm, ``pip install adit-client[progress]``) while
            ``retrieve_study`` and ``retrieve_series`` receive instances.
    """

    def __init__(
        self,
        server_url: str,
        auth_token: str,
        verify: bool | str = True,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        *,
        retries: int = 2,
        timeout: float = DEFAULT_TIMEOUT,
        progress: bool = False,
    ):
        self.server_url = server_url.rstrip("/")
        self.trial_protocol_id = trial_protocol_id
        self.trial_protocol_name = trial_protocol_name
        self.timeout = timeout
        self.progress = progress
        self.session = _Session(retries)
        self.session.verify = verify
        self.session.headers.update(
            {
                "Authorization": f"Token {auth_token}",
                "User-Agent": f"python-adit_client/{__version__}",
            }
        )

    # -- QIDO-RS ----------------------------------------------------------------------------

    def search_for_studies(self, ae_title: str, query: dict | None = None) -> list[Dataset]:
        """Studies matching ``query`` (attribute keywords or tags to values, and ``limit``,
        ``offset``, ``includefield``, ``fuzzymatching``)."""
        answers = self._dicomweb(ae_title).search_for_studies(search_filters=query)
        return [Dataset.from_json(answer) for answer in answers]

    def search_for_series(
        self, ae_title: str, study_uid: str, query: dict | None = None
    ) -> list[Dataset]:
        answers = self._dicomweb(ae_title).search_for_series(study_uid, search_filters=query)
        return [Dataset.from_json(answer) for answer in answers]

    def search_for_images(
        self, ae_title: str, study_uid: str, series_uid: str, query: dict | None = None
    ) -> list[Dataset]:
        answers = self._dicomweb(ae_title).search_for_instances(
            study_uid, series_uid, search_filters=query
        )
        return [Dataset.from_json(answer) for answer in answers]

    # -- WADO-RS ----------------------------------------------------------------------------
    #
    # ``pseudonym``: ADIT pseudonymizes the instances, the pseudonym their PatientID (without
    # one the user needs the permission to retrieve unpseudonymized data). ``project``: the
    # name of a project of the user's groups, whose secret makes the new UIDs the same in
    # every request of the project (else they differ from request to request).

    def retrieve_study(
        self,
        ae_title: str,
        study_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[Dataset]:
        images = self.iter_study(ae_title, study_uid, pseudonym, project)
        return list(self._with_progress(images, f"Study {study_uid}"))

    def retrieve_study_metadata(
        self,
        ae_title: str,
        study_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[dict]:
        """The instances' DICOM JSON, without pixel data and other bulk data."""
        return self._metadata(self._study_path(ae_title, study_uid), pseudonym, project)

    def iter_study(
        self,
        ae_title: str,
        study_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Iterator[Dataset]:
        """The study's instances, each as soon as it has arrived. The request is made at
        once (an error raises here); a failure later raises while iterating."""
        return self._instances(self._study_path(ae_title, study_uid), pseudonym, project)

    def retrieve_series(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[Dataset]:
        images = self.iter_series(ae_title, study_uid, series_uid, pseudonym, project)
        return list(self._with_progress(images, f"Series {series_uid}"))

    def retrieve_series_metadata(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[dict]:
        path = self._series_path(ae_title, study_uid, series_uid)
        return self._metadata(path, pseudonym, project)

    def iter_series(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Iterator[Dataset]:
        path = self._series_path(ae_title, study_uid, series_uid)
        return self._instances(path, pseudonym, project)

    def retrieve_image(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        image_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Dataset:
        path = self._image_path(ae_title, study_uid, series_uid, image_uid)
        images = list(self._instances(path, pseudonym, project))
        if len(images) != 1:
            raise AditServerError(f"Expected one instance, ADIT sent {len(images)}.")
        return images[0]

    def retrieve_image_metadata(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        image_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> dict:
        path = self._image_path(ae_title, study_uid, series_uid, image_uid)
        items = self._metadata(path, pseudonym, project)
        if len(items) != 1:
            raise AditServerError(f"Expected the metadata of one instance, got {len(items)}.")
        return items[0]

    # -- NIfTI (dcm2niix in ADIT): (file name, content) of each file, the JSON sidecar of a
    # volume before its image.

    def retrieve_nifti_study(
        self,
        ae_title: str,
        study_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[tuple[str, BytesIO]]:
        return list(self.iter_nifti_study(ae_title, study_uid, pseudonym, project))

    def iter_nifti_study(
        self,
        ae_title: str,
        study_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Iterator[tuple[str, BytesIO]]:
        path = f"{self._study_path(ae_title, study_uid)}/nifti"
        return self._files(path, pseudonym, project)

    def retrieve_nifti_series(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[tuple[str, BytesIO]]:
        files = self.iter_nifti_series(ae_title, study_uid, series_uid, pseudonym, project)
        return list(files)

    def iter_nifti_series(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Iterator[tuple[str, BytesIO]]:
        path = f"{self._series_path(ae_title, study_uid, series_uid)}/nifti"
        return self._files(path, pseudonym, project)

    def retrieve_nifti_image(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        image_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> list[tuple[str, BytesIO]]:
        files = self.iter_nifti_image(
            ae_title, study_uid, series_uid, image_uid, pseudonym, project
        )
        return list(files)

    def iter_nifti_image(
        self,
        ae_title: str,
        study_uid: str,
        series_uid: str,
        image_uid: str,
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Iterator[tuple[str, BytesIO]]:
        path = f"{self._image_path(ae_title, study_uid, series_uid, image_uid)}/nifti"
        return self._files(path, pseudonym, project)

    # -- STOW-RS ----------------------------------------------------------------------------

    def store_images(
        self,
        ae_title: str,
        images: list[Dataset],
        pseudonym: str | None = None,
        project: str | None = None,
    ) -> Dataset:
        """Stores the images (ADIT pseudonymizes them first with a pseudonym) and returns the
        STOW-RS answer: ReferencedSOPSequence lists what was stored, FailedSOPSequence what
        was not (with each FailureReason). Nothing stored at all raises AditServerError."""
        response = self.session.post(
            f"{self._root(ae_title)}/stowrs/studies",
            params=self._changes(pseudonym, project),
            data=_StoreBody(images),
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom"; boundary={_STORE_BOUNDARY}'
                ),
                "Accept": _JSON_ACCEPT,
            },
            timeout=self.timeout,
        )
        return Dataset.from_json(response.json())

    # -- the requests -----------------------------------------------------------------------

    def _root(self, ae_title: str) -> str:
        return f"{self.server_url}/api/dicom-web/{quote(ae_title, safe='')}"

    def _dicomweb(self, ae_title: str) -> DICOMwebClient:
        client = DICOMwebClient(
            self._root(ae_title),
            session=self.session,
            qido_url_prefix="qidors",
            timeout=self.timeout,
        )
        client.set_http_retry_params(retry=False)  # the session retries, honouring Retry-After
        return client

    def _study_path(self, ae_title: str, study_uid: str) -> str:
        return f"{self._root(ae_title)}/wadors/studies/{quote(study_uid, safe='')}"

    def _series_path(self, ae_title: str, study_uid: str, series_uid: str) -> str:
        study = self._study_path(ae_title, study_uid)
        return f"{study}/series/{quote(series_uid, safe='')}"

    def _image_path(self, ae_title: str, study_uid: str, series_uid: str, image_uid: str) -> str:
        series = self._series_path(ae_title, study_uid, series_uid)
        return f"{series}/instances/{quote(image_uid, safe='')}"

    def _changes(self, pseudonym: str | None, project: str | None) -> dict[str, str]:
        """The query parameters of a retrieval or a store."""
        given = {
            "pseudonym": pseudonym,
            "project": project,
            "trial_protocol_id": self.trial_protocol_id,
            "trial_protocol_name": self.trial_protocol_name,
        }
        return {name: value for name, value in given.items() if value is not None}

    def _get(self, url: str, params: dict[str, str], accept: str) -> requests.Response:
        return self.session.get(
            url, params=params, headers={"Accept": accept}, stream=True, timeout=self.timeout
        )

    def _parts(self, url: str, params: dict[str, str], accept: str) -> Iterator[Part]:
        """The parts of a multipart answer, as they arrive; a part saying "Error: …" (ADIT's
        way to report a failure after the answer began) raises AditServerError."""
        response = self._get(url, params, accept)
        try:
            boundary = boundary_of(response.headers.get("Content-Type", ""))
        except AditServerError:
            response.close()
            raise
        return _checked_parts(response, boundary)

    def _instances(self, url: str, pseudonym: str | None, project: str | None) -> Iterator[Dataset]:
        parts = self._parts(url, self._changes(pseudonym, project), _INSTANCES_ACCEPT)
        return (dcmread(BytesIO(part.body)) for part in parts)

    def _files(
        self, url: str, pseudonym: str | None, project: str | None
    ) -> Iterator[tuple[str, BytesIO]]:
        parts = self._parts(url, self._changes(pseudonym, project), _FILES_ACCEPT)
        return ((part.filename or "", BytesIO(part.body)) for part in parts)

    def _metadata(self, url: str, pseudonym: str | None, project: str | None) -> list[dict]:
        params = self._changes(pseudonym, project)
        response = self._get(f"{url}/metadata", params, _JSON_ACCEPT)
        text = response.content.decode("utf-8")
        try:
            items = json.loads(text)
        except ValueError:
            # A failure after the answer began follows the unclosed array as "Error: …".
            _, found, message = text.rpartition("\nError: ")
            raise AditServerError(
                message.strip() if found else "ADIT sent no valid JSON."
            ) from None
        return items if isinstance(items, list) else [items]

    def _with_progress(self, items: Iterable, description: str):
        if not self.progress:
            return items
        try:
            from tqdm import tqdm
        except ImportError:
            raise ImportError(
                "progress=True needs tqdm: pip install adit-client[progress]"
            ) from None
        return tqdm(items, desc=description, unit=" instances")


def _checked_parts(response: requests.Response, boundary: str) -> Iterator[Part]:
    with response:
        for part in iter_parts(response.iter_content(_CHUNK_SIZE), boundary):
            if part.content_type.startswith("text/plain"):
                text = part.body.decode("utf-8", "replace").strip()
                raise AditServerError(text.removeprefix("Error:").strip())
            yield part
