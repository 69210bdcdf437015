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

    def create_transfer_job(
        self,
        source_server: str,
        destination_server: str,
        study_uids: Iterable[str] | None = None,
        *,
        studies: Iterable[Mapping[str, Any]] | None = None,
        pseudonymize: bool = False,
        pseudonym: str | None = None,
        project: str | None = None,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        urgent: bool = False,
        archive_password: str | None = None,
        convert_to_nifti: bool = False,
        send_finished_mail: bool = False,
    ) -> Job:
        """A transfer job from ``source_server`` to ``destination_server`` (a server or a
        folder), started at once (or, where staff verify jobs, once verified).

        Args:
            study_uids: The studies to transfer, whole.
            studies: Instead or as well: dicts with ``study_uid`` and optionally
                ``patient_id`` and ``series_uids`` (some series of the study).
            pseudonymize: ADIT chooses one pseudonym per patient, derived from the project's
                secret: the same patient gets the same pseudonym in every job of ``project``.
            pseudonym: One pseudonym for all the studies (of one patient) instead.
            archive_password: A folder destination gets password-protected ZIPs.
        """
        wanted = [{"study_uid": uid} for uid in (study_uids or [])]
        wanted += [dict(study) for study in (studies or [])]
        body: dict[str, Any] = {
            "source": source_server,
            "destination": destination_server,
            "studies": wanted,
            "pseudonymize": pseudonymize,
            "urgent": urgent,
            "convert_to_nifti": convert_to_nifti,
            "send_finished_mail": send_finished_mail,
        }
        optional = {
            "pseudonym": pseudonym,
            "project": project,
            "trial_protocol_id": trial_protocol_id,
            "trial_protocol_name": trial_protocol_name,
            "archive_password": archive_password,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        return Job.of(self._rest("POST", f"{_endpoint('transfer')}/", json=body), "transfer")

    def create_batch_query_job(
        self,
        source_server: str,
        project_name: str,
        rows: Iterable[Mapping[str, Any]] | None = None,
        *,
        file: str | None = None,
        project_description: str = "",
        urgent: bool = False,
        send_finished_mail: bool = False,
    ) -> Job:
        """A batch query job from ``rows`` (dicts with the batch file's columns, e.g.
        ``{"PatientID": "123", "From": "2024-01-01", "Modality": "CT"}``) or a batch ``file``
        (.xlsx or .csv) — checked line by line as the web page checks a file."""
        fields = {
            "source": source_server,
            "project_name": project_name,
            "project_description": project_description,
            "urgent": urgent,
            "send_finished_mail": send_finished_mail,
        }
        return self._create_batch("batch-query", fields, rows, file)

    def create_batch_transfer_job(
        self,
        source_server: str,
        destination_server: str,
        rows: Iterable[Mapping[str, Any]] | None = None,
        *,
        file: str | None = None,
        project: str | None = None,
        new_project_name: str | None = None,
        check_first: bool = False,
        **options: Any,
    ) -> Job:
        """A batch transfer job from ``rows`` (dicts with PatientID, StudyInstanceUID, optional
        SeriesInstanceUID and Pseudonym) or a batch ``file``; ``options`` as the web form has
        them (trial_protocol_id, archive_password, convert_to_nifti, urgent, …). With
        ``check_first`` the studies are looked up first and the job waits for its start on the
        job page."""
        fields = {
            "source": source_server,
            "destination": destination_server,
            "check_first": check_first,
            **options,
        }
        if project is not None:
            fields["project"] = project
        if new_project_name is not None:
            fields["new_project_name"] = new_project_name
        return self._create_batch("batch-transfer", fields, rows, file)

    def batch_query_results(self, job_id: int, *, as_dataframe: bool | None = None):
        """Every result row of a batch query job, as dicts with the export's columns (or a
        pandas DataFrame when pandas is installed, unless ``as_dataframe`` is False). Read
        them once the job has finished: rows of a running job arrive meanwhile."""
        rows: list[dict] = []
        params = {"limit": "1000", "offset": "0"}
        while True:
            page = self._rest("GET", f"{_endpoint('batch-query')}/{job_id}/results/", params=params)
            rows += page["results"]
            if not page.get("next"):
                break
            params["offset"] = str(len(rows))
        if as_dataframe is False:
            return rows
        try:
            import pandas  # pyright: ignore[reportMissingImports]
        except ImportError:
            if as_dataframe:
                raise
            return rows
        return pandas.DataFrame(rows)

    def _create_batch(
        self,
        kind: str,
        fields: dict[str, Any],
        rows: Iterable[Mapping[str, Any]] | None,
        file: str | None,
    ) -> Job:
        if (rows is None) == (file is None):
            raise ValueError("Give either rows or a file.")
        path = f"{_endpoint(kind)}/"
        if rows is not None:
            body = {**fields, "rows": [dict(row) for row in rows]}
            return Job.of(self._rest("POST", path, json=body), kind)
        assert file is not None
        form = {name: _form_value(value) for name, value in fields.items()}
        with open(file, "rb") as opened:
            content = opened.read()  # bytes, so that a retried request sends them again
        name = file.rsplit("/", 1)[-1]
        answer = self._rest("POST", path, data=form, files={"file": (name, content)})
        return Job.of(answer, kind)

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
        """Waits until the job has finished (whatever its outcome) and returns it. A job that
        waits for staff to verify it (status UNVERIFIED) waits here too.

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


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
