"""The one engine that runs every app's tasks on the ``dicom`` queue.

An app names the processor of its tasks in its job kind (see ``registry``); a worker then
takes the task's queue entry, claims the task (a conditional UPDATE, so two workers never run
one task), runs the processor, stores the outcome and lets the job derive its status.
Transient DICOM failures put the task back in the queue with a growing wait; a canceled or
killed task stops between two instances.
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django.db.models import Case, F, TextField, Value, When
from django.db.models.functions import Concat
from django.utils import timezone
from procrastinate import JobContext
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.job_context import AbortReason

from adit.core.dicom.errors import RetriableDicomError, ServiceStoppingError
from adit.core.jobs import registry
from adit.core.jobs.queue import PROCESS_TASK_NAME, QUEUE
from adit.core.jobs.statuses import JobStatus, TaskStatus

if TYPE_CHECKING:
    from adit.core.jobs.models import DicomTask

logger = logging.getLogger(__name__)

# Seconds before a task interrupted by a stopping service of ADIT's (the receiver) runs again.
SERVICE_RESTART_WAIT = 10


class TaskCanceled(Exception):
    """The job was canceled or the task killed while the task ran."""


class WorkerStopping(Exception):
    """The worker shuts down; the task goes back to the queue and resumes later."""


class TaskTimedOut(Exception):
    """The task ran longer than DICOM_TASK_TIMEOUT."""


@dataclass
class TaskOutcome:
    status: TaskStatus
    message: str


@dataclass
class TaskLog:
    """What a person reads on the task page: timestamped lines, warnings marked."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(f"{timezone.localtime():%Y-%m-%d %H:%M:%S} {text}")

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self.lines.append(f"{timezone.localtime():%Y-%m-%d %H:%M:%S} Warning: {text}")

    def text(self) -> str:
        return "\n".join(self.lines)


class TaskControl:
    """What a running processor asks between two instances: may I go on? It also records
    progress where the job page can show it."""

    check_interval: ClassVar[float] = 0.5

    def __init__(self, task: DicomTask, context: JobContext | None, timeout_seconds: float):
        self.task = task
        self.context = context
        self.deadline = time.monotonic() + timeout_seconds
        self.timeout_seconds = timeout_seconds
        self._next_check = 0.0
        self._next_progress = 0.0

    def check(self) -> None:
        """Raises TaskCanceled, WorkerStopping or TaskTimedOut when the task must stop."""
        now = time.monotonic()
        if now > self.deadline:
            raise TaskTimedOut()
        if self.context is not None:
            reason = self.context.abort_reason()
            if reason == AbortReason.SHUTDOWN:
                raise WorkerStopping()
            if reason is not None:
                raise TaskCanceled()
        if now >= self._next_check:  # the job's status costs a query; ask twice a second
            self._next_check = now + self.check_interval
            job_model = type(self.task.job)
            status = job_model.objects.filter(pk=self.task.job.pk).values_list("status", flat=True)
            if status.first() in (JobStatus.CANCELING, JobStatus.CANCELED, None):
                raise TaskCanceled()

    def progress(self, done: int, total: int | None = None, force: bool = False) -> None:
        """Records that ``done`` of ``total`` units of work (the task model's
        ``progress_unit``) are done; at most twice a second unless ``force``d."""
        now = time.monotonic()
        if not force and now < self._next_progress:
            return
        self._next_progress = now + self.check_interval
        fields = {"progress_done": done}
        if total is not None:
            fields["progress_total"] = total
        type(self.task).objects.filter(pk=self.task.pk).update(**fields)


class TaskProcessor(ABC):
    """Does the work of one task. Subclasses implement ``process`` and call
    ``self.control.check()`` between two pieces of work (instances, series, queries)."""

    # Whether the task keeps a core busy while it runs (instances pass through the worker).
    # pynetdicom and pydicom hold Python's GIL, so two such tasks in one worker process share
    # one core: a worker running one leaves the next task to idle workers first.
    occupies_a_core: ClassVar[bool] = False

    def __init__(self, task: DicomTask, control: TaskControl):
        self.task = task
        self.control = control
        self.log = TaskLog()

    @abstractmethod
    def process(self) -> TaskOutcome: ...


def processor_for(task: DicomTask) -> type[TaskProcessor]:
    """The processor the task's job kind names; LookupError if its app registered none."""
    return registry.kind_of(type(task)).processor


def occupies_a_core(task_kwargs: dict[str, Any]) -> bool:
    """Whether the queued call of ``process_dicom_task`` with these arguments runs a task
    whose processor keeps a core busy; False for anything else."""
    try:
        model = cast("type[DicomTask]", apps.get_model(str(task_kwargs.get("task_label", ""))))
        return registry.kind_of(model).processor.occupies_a_core
    except (LookupError, ValueError):
        return False


def retry_wait_seconds(attempt: int) -> int:
    """Waits between task attempts grow linearly (2, 4, 6 minutes by default)."""
    return settings.DICOM_TASK_RETRY_WAIT * (1 + attempt)


@app.task(queue=QUEUE, pass_context=True, name=PROCESS_TASK_NAME)
def process_dicom_task(context: JobContext, task_label: str, task_id: int) -> str:
    """Runs one task of any app; returns what happened, for the queue's own log."""
    close_old_connections()
    try:
        return run_task(context, task_label, task_id)
    finally:
        close_old_connections()


def readable_error(error: BaseException) -> str:
    """What a person reads about ``error``: its sentences, never a Python repr."""
    if isinstance(error, ValidationError):
        return " ".join(error.messages)
    if isinstance(error, KeyError):  # its str() is the repr of the key
        return f"Unexpected error: {type(error).__name__} {' '.join(map(str, error.args))}."
    return str(error) or f"Unexpected error ({type(error).__name__})."


def run_task(context: JobContext | None, task_label: str, task_id: int) -> str:
    task_model = apps.get_model(task_label)
    # The source with its server or folder row: every processor reads it.
    related = ("job", "source", "source__dicomserver", "source__dicomfolder")
    found = task_model.objects.select_related(*related).filter(pk=task_id).first()
    if found is None:
        return "task was deleted"
    task = cast("DicomTask", found)
    queue_id = context.job.id if context is not None else None
    if queue_id is not None and task.queued_job_id not in (None, queue_id):
        return "task was queued again; this entry is outdated"
    if not task.claim():
        return f"task is {TaskStatus(task.status).label.lower()}; nothing to do"
    # A job in progress stays so while a task runs; read after the claim, as another task's
    # end may have made it pending meanwhile.
    job_status = type(task.job).objects.filter(pk=task.job.pk).values_list("status", flat=True)
    if job_status.first() != JobStatus.IN_PROGRESS:
        task.job.refresh_status()
    logger.info("Processing %s of %s (attempt %d)", task, task.job, task.attempts)

    control = TaskControl(task, context, settings.DICOM_TASK_TIMEOUT)
    processor = processor_for(task)(task, control)
    requeue_in: int | None = None
    try:
        control.check()
        outcome = processor.process()
    except TaskCanceled:
        outcome = TaskOutcome(TaskStatus.CANCELED, "Task was canceled.")
    except WorkerStopping:
        outcome = TaskOutcome(
            TaskStatus.PENDING, "The worker stopped; the task resumes when a worker runs."
        )
        requeue_in = 0
    except ServiceStoppingError as err:
        # Like a stopping worker: not the task's fault, so no attempt is used up; a short wait
        # gives the supervisor time to start the service again.
        processor.log.info(f"Interrupted: {err}")
        outcome = TaskOutcome(
            TaskStatus.PENDING,
            f"{err} The task resumes in {SERVICE_RESTART_WAIT} s, once it runs again.",
        )
        requeue_in = SERVICE_RESTART_WAIT
        task_model.objects.filter(pk=task.pk).update(attempts=F("attempts") - 1)
    except TaskTimedOut:
        minutes = settings.DICOM_TASK_TIMEOUT / 60
        outcome = TaskOutcome(
            TaskStatus.FAILURE,
            f"Task was aborted due to timeout: it ran longer than {minutes:g} minutes.",
        )
    except RetriableDicomError as err:
        processor.log.info(f"Error: {readable_error(err)}")
        if task.attempts < settings.DICOM_TASK_MAX_ATTEMPTS:
            requeue_in = retry_wait_seconds(task.attempts)
            outcome = TaskOutcome(
                TaskStatus.PENDING,
                f"Task failed, but will be retried (attempt {task.attempts + 1} of "
                f"{settings.DICOM_TASK_MAX_ATTEMPTS} in {requeue_in} s): {readable_error(err)}",
            )
        else:
            outcome = TaskOutcome(TaskStatus.FAILURE, readable_error(err))
    except ValidationError as err:
        # Bad data in the task (a value no form checked); retrying cannot help, and there is
        # no bug to trace.
        logger.warning("%s failed: %s", task, readable_error(err))
        outcome = TaskOutcome(TaskStatus.FAILURE, readable_error(err))
        processor.log.info(f"Error: {outcome.message}")
    except Exception as err:
        logger.exception("%s failed", task)
        outcome = TaskOutcome(TaskStatus.FAILURE, readable_error(err))
        processor.log.info(f"Error: {outcome.message}")
        processor.log.lines += ["---", traceback.format_exc()]

    task_model.objects.filter(pk=task.pk).update(
        status=outcome.status,
        message=outcome.message,
        log=_appended(processor.log.text()),  # after what earlier attempts wrote
        end=None if outcome.status == TaskStatus.PENDING else timezone.now(),
        queued_job_id=None if requeue_in is not None else task.queued_job_id,
    )
    task.status, task.message = outcome.status, outcome.message
    if requeue_in is not None:
        task.queue(schedule_in_seconds=requeue_in)
    if _job_may_change(task):
        task.job.refresh_status()
    logger.info("%s ended: %s", task, outcome.message)
    return outcome.message


def _appended(text: str):
    """The task's log with ``text`` added as its last lines (one UPDATE, no read first)."""
    if not text:
        return F("log")
    return Case(
        When(log="", then=Value(text)),
        default=Concat(F("log"), Value(f"\n{text}")),
        output_field=TextField(),
    )


def _job_may_change(task: DicomTask) -> bool:
    """Whether the end of ``task`` may change its job's status.

    A job in progress with a task still to do (pending or running) stays in progress, so most
    tasks that end skip the locked recount of all tasks. Each task's final status is committed
    before it asks, so of tasks that end at the same time, the one asking last sees all of
    them ended, and settles the job.
    """
    if task.status == TaskStatus.PENDING:  # back in the queue: the job may be pending again
        return True
    job_model = type(task.job)
    in_progress = job_model.objects.filter(pk=task.job.pk, status=JobStatus.IN_PROGRESS)
    if not in_progress.exists():
        return True
    unfinished = type(task).objects.filter(
        job=task.job, status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS]
    )
    return not unfinished.exists()


def clean_up_stuck_tasks() -> list[str]:
    """Ends tasks left "In Progress" that no worker runs or will run again (their queue entry
    was removed or ended), and settles jobs left "Canceling"; returns what it did.

    A task whose worker died keeps a queue entry that the stalled-job retry puts back; this is
    for everything else, so that no task stays "In Progress" forever.
    """
    done: list[str] = []
    live_queue_ids = ProcrastinateJob.objects.filter(status__in=["todo", "doing"]).values("id")
    for kind in registry.all_kinds():
        tasks = kind.task_model.objects
        for task in kind.task_model.stuck(live_queue_ids).select_related("job"):
            updated = tasks.filter(pk=task.pk, status=TaskStatus.IN_PROGRESS).update(
                status=TaskStatus.FAILURE, message=task.stuck_message, end=timezone.now()
            )
            if updated:
                task.job.refresh_status()
                done.append(f"{task} of {task.job} ended as failed.")
        for job in kind.job_model.objects.filter(status=JobStatus.CANCELING):
            if job.refresh_status().status != JobStatus.CANCELING:
                done.append(f"{job} is now {JobStatus(job.status).label}.")
    return done
