"""ADIT's REST API for scripts: query a server, and create, follow and cancel jobs.

Servers are named as in ADIT, by name or AE title. Jobs are of a kind: "transfer" (the
default), "batch-query" or "batch-transfer".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

import requests
from pydicom import Dataset

ENDPOINTS = {
    "transfer": "transfer-jobs",
    "batch-query": "batch-query-jobs",
    "batch-transfer": "batch-transfer-jobs",
}
DEFAULT_POLL_INTERVAL = 2.0

DateRange = str | date | tuple[str | date | None, str | date | None]


@dataclass
class Job:
    """A job as ADIT last reported it; ``data`` holds every field of the answer."""

    id: int
    kind: str
    status: str
    message: str
    finished: bool
    data: dict = field(repr=False)

    @property
    def tasks(self) -> list[dict]:
        """The tasks with their status, message and progress (only in a single job's answer)."""
        return self.data.get("tasks", [])

    @property
    def progress(self) -> tuple[int, int]:
        """(processed, total) tasks."""
        progress = self.data.get("progress") or {}
        return progress.get("processed", 0), progress.get("total", 0)

    @classmethod
    def of(cls, data: dict, kind: str) -> Job:
        return cls(
            id=data["id"],
            kind=kind,
            status=data["status"],
            message=data.get("message", ""),
            finished=bool(data.get("finished")),
            data=data,
        )


def dicom_date(value: str | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    return value.replace("-", "") if len(value) == 10 else value


def dicom_date_range(value: DateRange) -> str:
    """A DICOM date or range from "20240101-20241231", a date, or a (start, end) pair in which
    either end may be None."""
    if isinstance(value, tuple):
        start, end = value
        return f"{dicom_date(start)}-{dicom_date(end)}"
    return dicom_date(value)


def dataset_of(answer: Mapping[str, Any]) -> Dataset:
    """A query answer ({keyword: value}) as a pydicom Dataset."""
    dataset = Dataset()
    for keyword, value in answer.items():
        if value is None:
            value = ""
        try:
            setattr(dataset, keyword, value)
        except (ValueError, TypeError):  # a keyword this pydicom does not know
            continue
    return dataset


class JobsMixin:
    """The REST API methods of AditClient (which provides the session)."""

    server_url: str
    session: requests.Session
    timeout: float

    # -- queries ------------------------------------------------------------------------------

    def query_studies(
        self,
        source_server: str,
        *,
        patient_id: str | None = None,
        patient_name: str | None = None,
        patient_birth_date: str | date | None = None,
        study_date: DateRange | None = None,
        modalities: str | Iterable[str] | None = None,
        accession_number: str | None = None,
        study_description: str | None = None,
        limit: int | None = None,
        **attributes: str,
    ) -> list[Dataset]:
        """Studies at ``source_server`` (name or AE title) matching the filters; any other
        DICOM attribute by its keyword (``StudyInstanceUID="1.2.3"``). Names take wildcards
        (``"Doe^J*"``); ``modalities`` matches studies holding any of them."""
        if isinstance(modalities, str):
            modalities = [modalities]
        filters = {
            "PatientID": patient_id,
            "PatientName": patient_name,
            "PatientBirthDate": dicom_date(patient_birth_date) if patient_birth_date else None,
            "StudyDate": dicom_date_range(study_date) if study_date is not None else None,
            "ModalitiesInStudy": ",".join(modalities) if modalities else None,
            "AccessionNumber": accession_number,
            "StudyDescription": study_description,
            **attributes,
        }
        return self._query(source_server, "studies", filters, limit)

    def query_series(
        self,
        source_server: str,
        study_uid: str,
        *,
        modality: str | None = None,
        series_description: str | None = None,
        series_number: int | None = None,
        limit: int | None = None,
        **attributes: str,
    ) -> list[Dataset]:
        """Series of the study ``study_uid`` at ``source_server`` matching the filters."""
        filters = {
            "StudyInstanceUID": study_uid,
            "Modality": modality,
            "SeriesDescription": series_description,
            "SeriesNumber": str(series_number) if series_number is not None else None,
            **attributes,
        }
        return self._query(source_server, "series", filters, limit)

    def _query(
        self, node: str, level: str, filters: dict[str, Any], limit: int | None
    ) -> list[Dataset]:
        params = {key: str(value) for key, value in filters.items() if value not in (None, "")}
        if limit is not None:
            params["limit"] = str(limit)
        answer = self._rest("GET", f"nodes/{quote(node, safe='')}/{level}/", params=params)
        return [dataset_of(result) for result in answer["results"]]

    def list_nodes(self) -> list[dict]:
        """The servers and folders you may use, with their roles and capabilities."""
        return self._rest("GET", "nodes/")

    # -- jobs ---------------------------------------------------------------------------------

    def get_job(self, job_id: int, kind: str = "transfer") -> Job:
        """One job with its tasks."""
        return Job.of(self._rest("GET", f"{_endpoint(kind)}/{job_id}/"), kind)

    def list_jobs(
        self,
        kind: str = "transfer",
        *,
        status: str | Iterable[str] | None = None,
        created_after: str | date | None = None,
        created_before: str | date | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """Your jobs of a kind, newest first (``status`` e.g. "IN_PROGRESS" or a list)."""
        params: dict[str, str] = {"limit": str(limit), "offset": str(offset)}
        if status is not None:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                params[name] = value.isoformat() if isinstance(value, date) else value
        page = self._rest("GET", f"{_endpoint(kind)}/", params=params)
        return [Job.of(data, kind) for data in page["results"]]

    def cancel_job(self, job_id: int, kind: str = "transfer") -> Job:
        """Cancels the job: pending tasks at once, a running one between two instances."""
        return self._job_action(job_id, kind, "cancel")

    def resume_job(self, job_id: int, kind: str = "transfer") -> Job:
        return self._job_action(job_id, kind, "resume")

    def retry_job(self, job_id: int, kind: str = "transfer") -> Job:
        """Runs the job's failed tasks again."""
        return self._job_action(job_id, kind, "retry")

    def wait_for_job(
        self,
        job_id: int,
        kind: str = "transfer",
        timeout: float | None = None,
        progress: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Job:
        """Waits until the job has finished (whatever its outcome) and returns it.

        Args:
            timeout: Seconds to wait at most; TimeoutError after them (None: no limit).
            progress: Show the tasks done as a progress bar (tqdm) when tqdm is installed
                (``pip install adit-client[progress]``); nothing is shown without it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _progress_bar(f"Job {job_id}") if progress else None
        try:
            while True:
                job = self.get_job(job_id, kind)
                if bar is not None:
                    processed, total = job.progress
                    bar.total = total
                    bar.n = processed
                    bar.set_postfix_str(job.status, refresh=False)
                    bar.refresh()
                if job.finished:
                    return job
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Job {job_id} has not finished within {timeout:g} s (it is {job.status})."
                    )
                time.sleep(poll_interval)
        finally:
            if bar is not None:
                bar.close()

    def _job_action(self, job_id: int, kind: str, action: str) -> Job:
        answer = self._rest("POST", f"{_endpoint(kind)}/{job_id}/{action}/")
        return Job.of(answer["job"], kind)

    def _rest(self, method: str, path: str, **kwargs) -> Any:
        response = self.session.request(
            method, f"{self.server_url}/api/{path}", timeout=self.timeout, **kwargs
        )
        return response.json()


def _endpoint(kind: str) -> str:
    try:
        return ENDPOINTS[kind]
    except KeyError:
        raise ValueError(f"Unknown kind of job {kind!r}; one of {', '.join(ENDPOINTS)}.") from None


def _progress_bar(description: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=0, desc=description, unit="task")
