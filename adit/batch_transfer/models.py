"""Batch transfer: the studies of a batch file, one task each, checked at the source before
anything moves (unless the user starts the job directly), then transferred by the core's
transfer pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING

from django.contrib.postgres.fields import ArrayField
from django.db import models, transaction
from django.db.models import Count, Value
from django.db.models.functions import Concat
from django.utils import timezone

from adit.core.jobs.models import ActionNotAllowed
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import check_pseudonyms
from adit.core.transfer.models import TransferJob, TransferTask

if TYPE_CHECKING:
    from adit.core.transfer.options import TransferChoices

    from .batch_file import StudyRequest


class Phase(models.TextChoices):
    """Where a job is before its transfers: the engine's status says how they go."""

    CHECKING = "CK", "Checking"
    CHECKED = "CD", "Checked"
    STARTED = "ST", "Started"


class CheckResult(models.TextChoices):
    NOT_CHECKED = "", "Not checked"
    FOUND = "FO", "Found"
    NOT_FOUND = "NF", "Not found"
    MISMATCH = "PM", "Patient mismatch"
    ERROR = "ER", "Not checked (error)"


class BatchTransferJob(TransferJob):
    """The studies of a batch file, sent from one source to one destination."""

    project_description = models.TextField(max_length=2000, blank=True, default="")
    ethics_application_id = models.CharField(
        "ethics committee approval", max_length=100, blank=True, default=""
    )
    phase = models.CharField(max_length=2, choices=Phase.choices, default=Phase.STARTED)
    # Each upload of a corrected file starts a new round: a check of an older round stops.
    check_round = models.PositiveIntegerField(default=0)
    # Lines of a batch query export that name no study (their query found nothing).
    skipped_lines = ArrayField(models.PositiveIntegerField(), blank=True, default=list)

    tasks: models.Manager[BatchTransferTask]

    class Meta(TransferJob.Meta):
        pass

    @classmethod
    def create_with_tasks(
        cls,
        *,
        owner,
        source,
        studies: list[StudyRequest],
        options: TransferChoices,
        check_first: bool,
        **fields,
    ) -> BatchTransferJob:
        """Saves the job with a task per study and either has them checked at the source or
        queues them (unless staff must verify the job first).

        Raises PseudonymConflict, creating nothing, if a pseudonym of the file contradicts what
        the project recorded.
        """
        check_pseudonyms(
            options.project, [(study.patient_id, study.pseudonym) for study in studies]
        )
        with transaction.atomic():
            job = cls.objects.create(
                owner=owner,
                phase=Phase.CHECKING if check_first else Phase.STARTED,
                **options.job_fields(),
                **fields,
            )
            job._add_tasks(source, options.destination, studies, previous={})
            if check_first:
                transaction.on_commit(job.queue_check)
            else:
                job.start_processing()
        return job

    def _add_tasks(self, source, destination, studies: list[StudyRequest], previous: dict) -> None:
        tasks = []
        for study in studies:
            task = BatchTransferTask(
                job=self,
                source=source,
                destination=destination,
                patient_id=study.patient_id,
                study_uid=study.study_uid,
                series_uids=study.series_uids,
                pseudonym=study.pseudonym,
                lines=study.lines,
                line_series_uids=study.line_series_uids,
            )
            checked = previous.get(task.check_key)
            if checked is not None:
                task.copy_check_from(checked)
            tasks.append(task)
        BatchTransferTask.objects.bulk_create(tasks, batch_size=500)

    @cached_property
    def source(self):
        """The node every study of the job comes from (asked once per page)."""
        task = self.tasks.select_related("source").first()
        return task.source if task else None

    # -- the check before the transfer ---------------------------------------------------------

    @property
    def is_being_checked(self) -> bool:
        return self.phase in (Phase.CHECKING, Phase.CHECKED)

    def queue_check(self) -> None:
        from .tasks import check_studies

        # Before the transfers of jobs of the same priority: somebody waits for the check's
        # answer, and it is quick; an urgent job's check goes before other jobs' transfers.
        check_studies.configure(priority=self.priority + 1).defer(
            job_id=self.pk, check_round=self.check_round
        )

    def check_counts(self) -> dict[str, int]:
        """How many tasks have each check result (by its value), and "total"."""
        counts = dict(self.tasks.values_list("check_result").annotate(count=Count("pk")).order_by())
        return {
            **{result.name.lower(): counts.get(result.value, 0) for result in CheckResult},
            "total": sum(counts.values()),
        }

    def finish_check(self, check_round: int) -> bool:
        """Marks the check of the round done; False if the job moved on meanwhile."""
        return bool(
            type(self)
            .objects.filter(pk=self.pk, phase=Phase.CHECKING, check_round=check_round)
            .update(phase=Phase.CHECKED)
        )

    def start_transfers(self) -> int:
        """Starts the transfer of the studies the check found; the others fail at once with
        what the check said, so the job's outcome names every study that did not go. Returns
        how many go."""
        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            if job.phase != Phase.CHECKED or job.status != JobStatus.UNVERIFIED:
                raise ActionNotAllowed(
                    f"Job {self.pk} cannot be started: "
                    + (
                        "its studies are still being checked."
                        if job.phase == Phase.CHECKING
                        else "it was started already."
                    )
                )
            found = job.tasks.filter(check_result=CheckResult.FOUND).count()
            if not found:
                raise ActionNotAllowed(
                    f"Job {self.pk} cannot be started: the check found none of its studies at "
                    "the source. Upload a corrected file, or delete the job."
                )
            job.tasks.exclude(check_result=CheckResult.FOUND).update(
                status=TaskStatus.FAILURE,
                message=Concat(Value("Not transferred: "), "check_message"),
                end=timezone.now(),
            )
            type(self).objects.filter(pk=self.pk).update(phase=Phase.STARTED)
            job.phase = Phase.STARTED
            job.start_processing()
            job.refresh_status()
        self.refresh_from_db()
        return found

    def replace_studies(self, studies: list[StudyRequest], skipped_lines: list[int]) -> int:
        """Replaces the tasks by those of a corrected file and checks them; a study checked
        before (same patient, study, series and pseudonymization) keeps its result and is not
        asked for again. Returns how many are to be checked."""
        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            if not job.is_being_checked or job.status != JobStatus.UNVERIFIED:
                raise ActionNotAllowed(
                    f"Job {self.pk} has started already; its file can no longer be replaced."
                )
            check_pseudonyms(job.project, [(s.patient_id, s.pseudonym) for s in studies])
            old = list(job.tasks.select_related("source", "destination"))
            assert old, "a job being checked has tasks"
            # What could not be checked (a PACS down, say) is asked again.
            previous = {task.check_key: task for task in old if task.check_result in FINAL_CHECKS}
            job.tasks.all().delete()
            job._add_tasks(old[0].source, old[0].destination, studies, previous)
            job.check_round += 1
            job.phase = Phase.CHECKING
            job.skipped_lines = skipped_lines
            job.save(update_fields=["check_round", "phase", "skipped_lines"])
            transaction.on_commit(job.queue_check)
        self.refresh_from_db()
        return self.tasks.filter(check_result=CheckResult.NOT_CHECKED).count()

    def get_status_display(self) -> str:
        """The status as the job pages show it: before the start, the check's phase."""
        if self.phase == Phase.CHECKING:
            return "Checking"
        if self.phase == Phase.CHECKED:
            return "Checked, not started"
        return JobStatus(self.status).label

    def recheck_errors(self) -> int:
        """Checks again the studies that could not be checked; returns how many."""
        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            if job.phase != Phase.CHECKED or job.status != JobStatus.UNVERIFIED:
                raise ActionNotAllowed(
                    f"Job {self.pk} can be checked again only once its check ended and before "
                    "its start."
                )
            count = job.tasks.filter(check_result=CheckResult.ERROR).update(
                check_result=CheckResult.NOT_CHECKED, check_message="", checked=None
            )
            job.check_round += 1
            job.phase = Phase.CHECKING
            job.save(update_fields=["check_round", "phase"])
            transaction.on_commit(job.queue_check)
        self.refresh_from_db()
        return count

    @property
    def is_verifiable(self) -> bool:
        return super().is_verifiable and self.phase == Phase.STARTED

    def verify(self) -> None:
        # Staff verify what the user started: the check decides what goes.
        if self.phase != Phase.STARTED:
            raise ActionNotAllowed(
                f"Job {self.pk} cannot be verified before its owner started its transfer."
            )
        super().verify()

    def rerunnable_tasks(self) -> models.QuerySet:
        # A study the check did not find (or found under another patient) is not sent by a
        # retry either: its line must be corrected in a new job.
        return self.tasks.filter(check_result__in=(CheckResult.FOUND, CheckResult.NOT_CHECKED))


class BatchTransferTask(TransferTask):
    """One study of the batch file (the lines naming it merged)."""

    job = models.ForeignKey(BatchTransferJob, on_delete=models.CASCADE, related_name="tasks")
    lines = ArrayField(
        models.PositiveIntegerField(), help_text="The lines of the batch file naming the study."
    )
    # For each line, the series it named ("" for the whole study).
    line_series_uids = ArrayField(models.CharField(max_length=64, blank=True), default=list)

    # What the check before the transfer found at the source.
    check_result = models.CharField(
        max_length=2, choices=CheckResult.choices, blank=True, default=CheckResult.NOT_CHECKED
    )
    check_message = models.TextField(blank=True, default="")
    source_patient_id = models.CharField(
        max_length=64, blank=True, default="", help_text="The patient ID the source has."
    )
    checked_instances = models.PositiveIntegerField(blank=True, null=True)
    checked = models.DateTimeField(blank=True, null=True)

    class Meta(TransferTask.Meta):
        indexes = [models.Index(fields=["job", "check_result"], name="batchtransfertask_check")]

    @property
    def check_key(self) -> tuple:
        """What a check result depends on: the same key asks the source the same question."""
        return (
            self.patient_id,
            self.study_uid,
            tuple(sorted(self.series_uids)),
            bool(self.pseudonym),  # which modalities are left out
        )

    def copy_check_from(self, other: BatchTransferTask) -> None:
        for name in CHECK_FIELDS:
            setattr(self, name, getattr(other, name))

    def record_check(self, result: CheckResult, message: str, **fields) -> bool:
        """Stores a check result unless the task is gone (a corrected file replaced it)."""
        values = {"check_result": result, "check_message": message, "checked": timezone.now()}
        values.update(fields)
        return bool(type(self).objects.filter(pk=self.pk).update(**values))

    @property
    def line_rows(self) -> Iterable[tuple[int, str]]:
        """(line, series UID or "") of each line naming the study."""
        series = self.line_series_uids or [""] * len(self.lines)
        return zip(self.lines, series, strict=False)


# Results a corrected file keeps: an error (the PACS unreachable, say) is asked again.
FINAL_CHECKS = (CheckResult.FOUND, CheckResult.NOT_FOUND, CheckResult.MISMATCH)

CHECK_FIELDS = (
    "check_result",
    "check_message",
    "source_patient_id",
    "checked_instances",
    "checked",
    "study_date",
    "study_description",
    "modalities",
)
