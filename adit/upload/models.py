"""An upload: files a browser pseudonymized and sent, one by one, to a server or folder.

The browser drives an upload, not a worker: the job and its one task are "In Progress" from
the moment the browser starts sending, each file the server receives is counted on the task,
and the browser says when it is done or stopped. A page closed halfway leaves the task for
``clean_up_stuck_tasks``, which ends it once no file came for ``ABANDONED_AFTER``.
"""

from __future__ import annotations

import datetime
from typing import ClassVar

from django.db import models, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from adit.core import validators
from adit.core.jobs.models import DicomJob, DicomTask
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import DicomNode, Project

ABANDONED_AFTER = datetime.timedelta(minutes=10)


class UploadJob(DicomJob):
    """One upload: who sent which pseudonymized files where, and how many arrived."""

    pseudonym = models.CharField(max_length=64, validators=[validators.validate_pseudonym])
    project = models.ForeignKey(
        Project,
        on_delete=models.PROTECT,
        blank=True,
        null=True,
        related_name="+",
        help_text="Uploads of one project give the same original UID the same new one.",
    )
    trial_protocol_id = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_query_value]
    )
    trial_protocol_name = models.CharField(
        max_length=64, blank=True, default="", validators=[validators.validate_query_value]
    )
    # Counted by the browser before it sent anything.
    files_skipped = models.PositiveIntegerField(
        default=0, help_text="Files that were not DICOM instances (DICOMDIR, viewers, texts)."
    )
    files_unreadable = models.PositiveIntegerField(
        default=0, help_text="DICOM files the browser could not read or pseudonymize."
    )
    # Keys what the browser derives (new UIDs, replaced names) when the upload has no
    # project: such an upload's UIDs are consistent within it only.
    upload_secret = models.CharField(max_length=128, blank=True, default="", editable=False)

    class Meta(DicomJob.Meta):
        permissions = [("can_upload_data", "Can upload data")]

    @property
    def rerun_blocker(self) -> str:
        return (
            "its files are on the computer they were uploaded from; upload them again from "
            "the Upload page."
        )

    @property
    def is_cancelable(self) -> bool:
        return self.status == JobStatus.IN_PROGRESS

    def cancel(self) -> None:
        # No worker is told to stop: the task ends now, and the browser's next file is
        # answered with "stopped".
        super().cancel()
        for task in self.tasks.filter(status=TaskStatus.IN_PROGRESS):
            task.finish(stopped=True)

    @property
    def task(self) -> UploadTask:
        return self.tasks.select_related("source").get()

    @property
    def destination(self) -> DicomNode:
        return self.task.source

    @classmethod
    def begin(cls, *, owner, destination: DicomNode, files_total: int, **fields) -> UploadJob:
        """The job and its task, "In Progress" at once: the browser sends the files now."""
        now = timezone.now()
        with transaction.atomic():
            job = cls.objects.create(owner=owner, status=JobStatus.IN_PROGRESS, start=now, **fields)
            UploadTask.objects.create(
                job=job,
                source=destination,
                status=TaskStatus.IN_PROGRESS,
                attempts=1,
                start=now,
                progress_total=files_total,
                last_file=now,
            )
        return job


class UploadTask(DicomTask):
    """The files of an upload as they arrive: ``source`` is the node they go to (the
    uploader's computer is no node); ``progress_done`` counts the files handled."""

    job = models.ForeignKey(UploadJob, on_delete=models.CASCADE, related_name="tasks")
    files_stored = models.PositiveIntegerField(default=0)
    files_refused = models.PositiveIntegerField(
        default=0, help_text="Files the server refused (not pseudonymized, not DICOM)."
    )
    files_failed = models.PositiveIntegerField(
        default=0, help_text="Files the destination did not take."
    )
    bytes_stored = models.PositiveBigIntegerField(default=0)
    last_file = models.DateTimeField(blank=True, null=True)

    progress_unit: ClassVar[str] = "files"
    stuck_message: ClassVar[str] = (
        "The browser stopped sending files (the page was closed or lost its connection); "
        "upload the files again from the Upload page."
    )

    @classmethod
    def stuck(cls, live_queue_ids) -> models.QuerySet:
        # No worker runs an upload: it is stuck when its browser has sent nothing for a while.
        return cls.objects.filter(
            status=TaskStatus.IN_PROGRESS, last_file__lt=timezone.now() - ABANDONED_AFTER
        )

    def count_file(self, outcome: str, *, size: int = 0, note: str = "") -> bool:
        """Counts one file as "stored", "refused" or "failed" (with a line in the log for the
        latter two) while the task is still in progress; False if it no longer is."""
        assert outcome in ("stored", "refused", "failed"), outcome
        counted: dict[str, object] = {f"files_{outcome}": F(f"files_{outcome}") + 1}
        if note:
            line = f"{timezone.localtime():%Y-%m-%d %H:%M:%S} {note}\n"
            counted["log"] = Concat(F("log"), Value(line))
        updated = UploadTask.objects.filter(pk=self.pk, status=TaskStatus.IN_PROGRESS).update(
            progress_done=F("progress_done") + 1,
            bytes_stored=F("bytes_stored") + size,
            last_file=timezone.now(),
            **counted,
        )
        return updated == 1

    def finish(self, *, stopped: bool) -> str:
        """Ends the task as the counts say (or as canceled) and the job with it; returns the
        message, which names every count that is not zero."""
        self.refresh_from_db()
        job = self.job
        counts = [
            (self.files_stored, "stored"),
            (self.files_refused, "refused by the server"),
            (self.files_failed, "not taken by the destination"),
            (job.files_unreadable, "unreadable"),
            (job.files_skipped, "skipped (not DICOM)"),
        ]
        told = ", ".join(f"{count} {what}" for count, what in counts if count)
        not_sent = (self.progress_total or 0) - self.progress_done
        if stopped or job.status == JobStatus.CANCELING:
            status, message = TaskStatus.CANCELED, f"Upload stopped: {told or 'nothing sent'}"
            if not_sent > 0:
                message += f", {not_sent} not sent"
        elif self.files_stored == 0:
            status, message = TaskStatus.FAILURE, f"Upload failed: {told or 'nothing sent'}"
        elif self.files_refused or self.files_failed or job.files_unreadable:
            status, message = TaskStatus.WARNING, f"Upload finished with problems: {told}"
        else:
            status, message = TaskStatus.SUCCESS, f"Upload finished: {told}"
        message += "."
        ended = UploadTask.objects.filter(pk=self.pk, status=TaskStatus.IN_PROGRESS).update(
            status=status, message=message, end=timezone.now()
        )
        job.refresh_status()
        if ended:
            # The job page says what happened to the files, not "All tasks have warnings".
            UploadJob.objects.filter(pk=job.pk).update(message=message)
        return message
