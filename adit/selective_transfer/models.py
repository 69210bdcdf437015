from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from django.db import models

from adit.core.transfer.models import TransferJob, TransferTask

if TYPE_CHECKING:
    from adit.core.transfer.options import TransferChoices


class SelectiveTransferJob(TransferJob):
    """Studies a user picked from a live search of one PACS, sent to one destination."""

    # People wait for these at their desk; batch work can wait for them.
    default_priority = 4
    urgent_priority = 8

    class Meta(TransferJob.Meta):
        permissions = [
            *TransferJob.Meta.permissions,
            ("can_download_study", "Can download a study directly as a ZIP file"),
        ]


class StudyShown(NamedTuple):
    """What a search result showed of a study, as the PACS sent it."""

    study_date: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()


class SelectiveTransferTask(TransferTask):
    job = models.ForeignKey(SelectiveTransferJob, on_delete=models.CASCADE, related_name="tasks")


def create_transfer_job(
    owner,
    source,
    studies: list[tuple[str, str]],
    options: TransferChoices,
    shown: Mapping[tuple[str, str], StudyShown] | None = None,
) -> SelectiveTransferJob:
    """A job with one task per (PatientID, StudyInstanceUID), queued unless staff must
    verify it first. Raises PseudonymConflict, creating nothing, if the pseudonym would go
    to two patients or a patient has another one in the project.

    ``shown`` has what the search showed of the studies (date, description, modalities), so
    the job page names them before the tasks run; a task records what the PACS says then.
    """
    seen, nothing = shown or {}, StudyShown()
    job = SelectiveTransferJob(owner=owner, **options.job_fields())
    job.save_with_tasks(
        [
            SelectiveTransferTask(
                source=source,
                patient_id=patient_id,
                study_uid=study_uid,
                **options.task_fields(),
                **SelectiveTransferTask.study_fields(*seen.get((patient_id, study_uid), nothing)),
            )
            for patient_id, study_uid in studies
        ]
    )
    return job
