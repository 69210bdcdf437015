"""The abstract job and task of the engine: every app's jobs and tasks subclass these."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, F
from django.utils import timezone

from adit.core.jobs import queue
from adit.core.jobs.mail import send_job_finished_mail
from adit.core.jobs.statuses import (
    FINAL_JOB_STATUSES,
    FINAL_TASK_STATUSES,
    JobOutcome,
    JobStatus,
    TaskStatus,
    derive_job_status,
)

QUEUE_BATCH = 500


class ActionNotAllowed(Exception):
    """A job or task action asked for in a state that does not allow it (HTTP 400)."""


class DicomJob(models.Model):
    """A unit of work a user asked for, made of tasks that workers process one by one.

    Concrete jobs live in the apps (selective transfer, batch query, …); each names its task
    model's foreign key ``job`` with ``related_name="tasks"``.

    The actions (verify, cancel, resume, …) change the status with a conditional UPDATE, so two
    people (or a person and a worker) acting at once cannot both succeed; an action the current
    state does not allow raises ActionNotAllowed.
    """

    Status = JobStatus

    # Procrastinate runs higher priorities first.
    default_priority: ClassVar[int] = 2
    urgent_priority: ClassVar[int] = 6

    status = models.CharField(max_length=2, choices=JobStatus.choices, default=JobStatus.UNVERIFIED)
    urgent = models.BooleanField(default=False)
    message = models.TextField(blank=True, default="")
    send_finished_mail = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="%(app_label)s_%(class)s_set",
    )
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(blank=True, null=True)
    end = models.DateTimeField(blank=True, null=True)

    tasks: models.Manager  # the concrete task model's reverse relation

    class Meta:
        abstract = True
        ordering = ["-created"]
        permissions = [("can_process_urgently", "Can process jobs urgently")]
        indexes = [models.Index(fields=["owner", "status"], name="%(class)s_own")]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk} [{JobStatus(self.status).label}]"

    @property
    def priority(self) -> int:
        return self.urgent_priority if self.urgent else self.default_priority

    @property
    def is_finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def refresh_status(self) -> JobOutcome:
        """Derives the job's status from its tasks and saves it (under a row lock, so two
        workers finishing tasks at the same time cannot overwrite each other).

        Sends the finish mail when this call finished the job and the owner asked for it.
        """
        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            was_finished = job.is_finished
            counts = dict(job.tasks.values_list("status").annotate(count=Count("pk")))
            outcome = derive_job_status(JobStatus(job.status), counts)
            job.status = outcome.status
            if outcome.message or outcome.finished:
                job.message = outcome.message
            if outcome.status == JobStatus.IN_PROGRESS and job.start is None:
                job.start = timezone.now()
            job.end = timezone.now() if outcome.finished else None
            # A canceled job is usually resumed, so it keeps its secrets (encrypted at rest).
            forget = outcome.finished and job.status != JobStatus.CANCELED
            forgotten = job.forget_secrets() if forget else []
            job.save(update_fields=["status", "message", "start", "end", *forgotten])
            if outcome.finished and not was_finished and job.send_finished_mail:
                transaction.on_commit(job.send_finished_mail_now)
        self.status, self.message, self.start, self.end = (
            job.status,
            job.message,
            job.start,
            job.end,
        )
        return outcome

    def forget_secrets(self) -> list[str]:
        """Clears what the job needed only while it ran; returns the names of those fields.

        Called under the row lock of ``refresh_status`` when the job reaches a final status
        other than Canceled (which a resume may end).
        """
        return []

    @property
    def rerun_blocker(self) -> str:
        """Why this job cannot be resumed, retried or restarted ("" when it can)."""
        return ""

    def _refuse_rerun(self, action: str) -> None:
        if blocker := self.rerun_blocker:
            raise ActionNotAllowed(f"Job {self.pk} cannot be {action}: {blocker}")

    def send_finished_mail_now(self) -> None:
        send_job_finished_mail(self)

    # -- actions ------------------------------------------------------------------------------

    @property
    def is_deletable(self) -> bool:
        return self.status in (JobStatus.UNVERIFIED, JobStatus.PENDING) and not (
            self.tasks.exclude(status=TaskStatus.PENDING).exists()
        )

    @property
    def is_verifiable(self) -> bool:
        return self.status == JobStatus.UNVERIFIED

    @property
    def is_cancelable(self) -> bool:
        return self.status in (JobStatus.PENDING, JobStatus.IN_PROGRESS)

    @property
    def is_resumable(self) -> bool:
        return self.status == JobStatus.CANCELED and not self.rerun_blocker

    @property
    def is_retriable(self) -> bool:
        return (
            self.status == JobStatus.FAILURE
            and not self.rerun_blocker
            and self.rerunnable_tasks().filter(status=TaskStatus.FAILURE).exists()
        )

    def rerunnable_tasks(self) -> models.QuerySet:
        """The tasks a retry, a restart or a reset may run again: all of them, unless a kind
        holds some back (a batch transfer the studies its check did not find)."""
        return self.tasks.all()

    @property
    def is_restartable(self) -> bool:
        return self.status in FINAL_JOB_STATUSES and not self.rerun_blocker

    def _change_status(self, allowed: tuple[str, ...], new: str, action: str, **fields) -> None:
        changed = (
            type(self).objects.filter(pk=self.pk, status__in=allowed).update(status=new, **fields)
        )
        if not changed:
            self.refresh_from_db(fields=["status"])
            raise ActionNotAllowed(
                f"Job {self.pk} cannot be {action} while it is "
                f"{JobStatus(self.status).label.lower()}."
            )
        self.status = new
        for name, value in fields.items():
            setattr(self, name, value)

    def queue_pending_tasks(self) -> int:
        """Puts every pending task that has no queue entry yet into the task queue."""
        waiting = self.tasks.filter(status=TaskStatus.PENDING, queued_job_id__isnull=True)
        tasks = list(waiting.only("pk"))
        # In batches: a batch job of a thousand lines is queued in a few statements.
        for start in range(0, len(tasks), QUEUE_BATCH):
            batch = tasks[start : start + QUEUE_BATCH]
            for task, queued_job_id in zip(
                batch, queue.defer_tasks(batch, self.priority), strict=True
            ):
                task.queued_job_id = queued_job_id
            self.tasks.model.objects.bulk_update(batch, ["queued_job_id"])
        return len(tasks)

    @property
    def needs_verification(self) -> bool:
        """Whether the job waits for staff to verify it (JOBS_NEED_STAFF_VERIFICATION, for
        jobs of non-staff users)."""
        return settings.JOBS_NEED_STAFF_VERIFICATION and not self.owner.is_staff

    def start_processing(self, *, verified: bool | None = None) -> None:
        """Called once a new job and its tasks are saved: verified jobs are queued at once,
        the others wait for staff to verify them (by default: as ``needs_verification``
        says)."""
        if verified is None:
            verified = not self.needs_verification
        if verified:
            self._change_status((JobStatus.UNVERIFIED,), JobStatus.PENDING, "started")
            self.queue_pending_tasks()
            self.refresh_status()

    def verify(self) -> None:
        with transaction.atomic():
            self._change_status((JobStatus.UNVERIFIED,), JobStatus.PENDING, "verified")
            self.queue_pending_tasks()
        self.refresh_status()

    def delete_untouched(self) -> None:
        """Deletes a job none of whose tasks has started yet."""

        with transaction.atomic():
            job = type(self).objects.select_for_update().get(pk=self.pk)
            if not job.is_deletable:
                raise ActionNotAllowed(
                    f"Job {self.pk} cannot be deleted: only jobs whose tasks have not started "
                    "yet can be deleted."
                )
            for task in job.tasks.exclude(queued_job_id=None):
                queue.cancel_queue_entry(task.queued_job_id, abort=False)
            job.delete()

    def cancel(self) -> None:
        """Pending tasks are canceled at once; running ones are asked to stop after the
        instance they are working on."""

        with transaction.atomic():
            self._change_status(
                (JobStatus.PENDING, JobStatus.IN_PROGRESS), JobStatus.CANCELING, "canceled"
            )
            pending = self.tasks.filter(status=TaskStatus.PENDING)
            for queued_job_id in pending.exclude(queued_job_id=None).values_list(
                "queued_job_id", flat=True
            ):
                queue.cancel_queue_entry(queued_job_id, abort=False)
            pending.update(
                status=TaskStatus.CANCELED,
                message="Task manually canceled.",
                queued_job_id=None,
                end=timezone.now(),
            )
            for task in self.tasks.filter(status=TaskStatus.IN_PROGRESS):
                if task.queued_job_id:
                    queue.cancel_queue_entry(task.queued_job_id, abort=True)
        self.refresh_status()

    def resume(self) -> None:
        self._refuse_rerun("resumed")
        with transaction.atomic():
            self._change_status((JobStatus.CANCELED,), JobStatus.PENDING, "resumed", message="")
            self.tasks.filter(status=TaskStatus.CANCELED).update(
                status=TaskStatus.PENDING,
                message="",
                queued_job_id=None,
                start=None,
                end=None,
                progress_done=0,
                progress_total=None,
            )
            self.queue_pending_tasks()
        self.refresh_status()

    def retry_failed(self) -> None:
        self._refuse_rerun("retried")
        with transaction.atomic():
            self._change_status((JobStatus.FAILURE,), JobStatus.PENDING, "retried", message="")
            for task in self.rerunnable_tasks().filter(status=TaskStatus.FAILURE):
                task.clear_for_another_run()
            self.queue_pending_tasks()
        self.refresh_status()

    def restart(self) -> None:
        self._refuse_rerun("restarted")
        with transaction.atomic():
            self._change_status(
                tuple(FINAL_JOB_STATUSES), JobStatus.PENDING, "restarted", message="", end=None
            )
            for task in self.rerunnable_tasks():
                task.clear_for_another_run()
            self.queue_pending_tasks()
        self.refresh_status()


class DicomTask(models.Model):
    """One piece of a job a worker processes at once, e.g. one study to transfer."""

    Status = TaskStatus

    source = models.ForeignKey("core.DicomNode", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=2, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    message = models.TextField(blank=True, default="")
    log = models.TextField(blank=True, default="")
    queued_job_id = models.BigIntegerField(
        blank=True, null=True, help_text="The id of this task's entry in the task queue."
    )
    created = models.DateTimeField(auto_now_add=True)
    start = models.DateTimeField(blank=True, null=True)
    end = models.DateTimeField(blank=True, null=True)
    # How far the running task got, in ``progress_unit``s (written by TaskControl.progress);
    # the total stays empty until the processor knows it.
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(blank=True, null=True)

    # What the task counts its progress in ("instances", "queries", "files"), plural.
    progress_unit: ClassVar[str] = "steps"
    # What a task ended by ``clean_up_stuck_tasks`` says.
    stuck_message: ClassVar[str] = (
        "Task was interrupted and cannot resume by itself; reset it to run it again."
    )

    job: models.ForeignKey  # declared by the concrete task model

    class Meta:
        abstract = True
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk} [{TaskStatus(self.status).label}]"

    @classmethod
    def stuck(cls, live_queue_ids) -> models.QuerySet:
        """Tasks "In Progress" that nothing will finish: no live queue entry of a worker runs
        them (``live_queue_ids``). A kind whose tasks no worker runs says otherwise."""
        return cls.objects.filter(status=TaskStatus.IN_PROGRESS).exclude(
            queued_job_id__in=live_queue_ids
        )

    def claim(self) -> bool:
        """Marks the task as being processed, unless someone else got it first.

        A conditional update: of two workers that got the same queue entry (a retry after a
        worker was presumed dead, say), exactly one goes ahead. A task left "In Progress" by a
        dead worker may be claimed again.
        """
        claimed = (
            type(self)
            .objects.filter(pk=self.pk, status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS])
            .update(
                status=TaskStatus.IN_PROGRESS,
                attempts=F("attempts") + 1,
                start=timezone.now(),
                end=None,
            )
        )
        if claimed:
            self.refresh_from_db(fields=["status", "attempts", "start", "end"])
        return claimed == 1

    def queue(self, schedule_in_seconds: int = 0) -> None:
        """Adds the task to the ``dicom`` queue at its job's priority."""

        self.queued_job_id = queue.defer_task(self, schedule_in_seconds)
        type(self).objects.filter(pk=self.pk).update(queued_job_id=self.queued_job_id)

    def clear_for_another_run(self) -> None:
        """Makes a finished task pending again, as if it had never run."""
        fields = self.fields_of_a_fresh_run()
        for name, value in fields.items():
            setattr(self, name, value)
        self.save(update_fields=list(fields))

    def fields_of_a_fresh_run(self) -> dict:
        return {
            "status": TaskStatus.PENDING,
            "attempts": 0,
            "message": "",
            "log": "",
            "queued_job_id": None,
            "start": None,
            "end": None,
            "progress_done": 0,
            "progress_total": None,
        }

    @property
    def progress_text(self) -> str:
        """The progress as a person reads it: "12 of 40 instances", "3 instances", or "—"."""
        if self.progress_total is None:
            return f"{self.progress_done} {self.progress_unit}" if self.progress_done else "—"
        return f"{self.progress_done} of {self.progress_total} {self.progress_unit}"

    # -- actions ------------------------------------------------------------------------------

    @property
    def is_deletable(self) -> bool:
        return self.status == TaskStatus.PENDING

    @property
    def is_resettable(self) -> bool:
        return (
            self.status in FINAL_TASK_STATUSES
            and not self.job.rerun_blocker
            and self.job.rerunnable_tasks().filter(pk=self.pk).exists()
        )

    @property
    def is_killable(self) -> bool:
        return self.status == TaskStatus.IN_PROGRESS

    def _not_allowed(self, action: str) -> ActionNotAllowed:
        return ActionNotAllowed(
            f"Task {self.pk} cannot be {action} while it is "
            f"{TaskStatus(self.status).label.lower()}."
        )

    def delete_pending(self) -> None:

        with transaction.atomic():
            deleted, _ = type(self).objects.filter(pk=self.pk, status=TaskStatus.PENDING).delete()
            if not deleted:
                self.refresh_from_db(fields=["status"])
                raise self._not_allowed("deleted")
            if self.queued_job_id:
                queue.cancel_queue_entry(self.queued_job_id, abort=False)
        self.job.refresh_status()

    def reset(self) -> None:
        if blocker := self.job.rerun_blocker:
            raise ActionNotAllowed(f"Task {self.pk} cannot be reset: {blocker}")
        with transaction.atomic():
            task = type(self).objects.select_for_update().get(pk=self.pk)
            if not task.is_resettable:
                self.status = task.status
                raise self._not_allowed("reset")
            task.clear_for_another_run()
            task.queue()
        self.refresh_from_db()
        self.job.refresh_status()

    def kill(self) -> None:
        """Asks the worker running this task to stop; the task ends "Canceled"."""

        self.refresh_from_db(fields=["status", "queued_job_id"])
        if not self.is_killable:
            raise self._not_allowed("killed")
        if self.queued_job_id:
            queue.cancel_queue_entry(self.queued_job_id, abort=True)
