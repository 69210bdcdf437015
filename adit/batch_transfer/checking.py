"""The check before a batch transfer (upstream's wish #152): is each study of the file at the
source, under the patient the file names, and how much of it would go?

Each study is asked for as its transfer would ask (the core's ``find_study``: the study, then
its series with their instance counts, the modalities left out when pseudonymizing), over one
association for all of them. Studies checked before are not asked again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.selection import StudySelection
from adit.core.jobs.processing import readable_error
from adit.core.models import DicomServer
from adit.core.transfer.models import printable_text
from adit.core.transfer.study import StudyNotFoundError, find_study

from .models import BatchTransferJob, BatchTransferTask, CheckResult, Phase

logger = logging.getLogger(__name__)

MAX_PATIENT_ID_LENGTH = 64  # a DICOM LO value


class CheckStopped(Exception):
    """The worker shuts down; the check goes on later where it stopped."""


def check_studies(
    job_id: int, check_round: int, should_stop: Callable[[], bool] = lambda: False
) -> int:
    """Checks every not yet checked study of the job's round; returns how many it checked.

    Stops quietly when the job was deleted, started or given a corrected file meanwhile, and
    raises CheckStopped when ``should_stop`` says so (the worker shuts down).
    """
    job = BatchTransferJob.objects.filter(pk=job_id).first()
    if job is None or not _still_current(job_id, check_round):
        return 0
    source = job.source.concrete() if job.source else None
    if not isinstance(source, DicomServer):
        _fail_all(job, "The source is not a DICOM server.")
        job.finish_check(check_round)
        return 0
    operator = DicomOperator(source)
    checked = 0
    with operator.query_session():
        while True:
            if should_stop():
                raise CheckStopped()
            if not _still_current(job_id, check_round):
                return checked
            task = job.tasks.filter(check_result=CheckResult.NOT_CHECKED).order_by("pk").first()
            if task is None:
                break
            check_task(operator, task)
            checked += 1
    job.finish_check(check_round)
    return checked


def check_task(operator: DicomOperator, task: BatchTransferTask) -> CheckResult:
    """Asks the source for the task's study and records what it found."""
    name = operator.server.name
    selection = StudySelection(task.patient_id, task.study_uid, tuple(task.series_uids))
    try:
        study = find_study(operator, selection, pseudonymized=bool(task.pseudonym))
    except StudyNotFoundError as err:
        result, message = CheckResult.NOT_FOUND, f"{err} ({name})"
        task.record_check(result, message)
        return result
    except DicomError as err:
        result, message = CheckResult.ERROR, f"Could not be checked at {name}: {err}"
        task.record_check(result, message)
        return result
    except Exception as err:  # an answer no rule foresaw must not stop the other studies
        logger.exception("The check of %s of %s failed", task, task.job)
        result = CheckResult.ERROR
        task.record_check(result, f"Could not be checked at {name}: {readable_error(err)}")
        return result
    # As the PACS sent it, but printable and of a PatientID's length at most.
    source_patient_id = printable_text(study.patient_id, MAX_PATIENT_ID_LENGTH)
    fields = {
        **BatchTransferTask.study_fields(
            study.study_date, study.study_description, study.modalities
        ),
        "source_patient_id": source_patient_id,
        "checked_instances": study.expected_instances,
    }
    if study.patient_id != task.patient_id:
        result = CheckResult.MISMATCH
        message = (
            f"{name} has the study under patient ID {source_patient_id or '(none)'}, not "
            f"{task.patient_id}; correct the file if it is the right study."
        )
    else:
        result = CheckResult.FOUND
        message = f"Found at {name}: {study.expected_instances} instance(s) to transfer."
    task.record_check(result, message, **fields)
    return result


def _still_current(job_id: int, check_round: int) -> bool:
    return BatchTransferJob.objects.filter(
        pk=job_id, phase=Phase.CHECKING, check_round=check_round
    ).exists()


def _fail_all(job: BatchTransferJob, message: str) -> None:
    for task in job.tasks.filter(check_result=CheckResult.NOT_CHECKED):
        task.record_check(CheckResult.ERROR, message)
