"""The task queue as the job models see it: adding a task's entry and removing it.

The entry names the engine's task (``adit.core.jobs.processing.process_dicom_task``) by its
registered name, so the models need not import the engine that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from procrastinate.contrib.django import app

if TYPE_CHECKING:
    from adit.core.jobs.models import DicomTask

PROCESS_TASK_NAME = "adit.core.process_dicom_task"
QUEUE = "dicom"


def defer_task(task: DicomTask, schedule_in_seconds: int = 0) -> int:
    """Adds a queue entry for the task at its job's priority; returns the entry's id."""
    options: dict = {"queue": QUEUE, "priority": task.job.priority}
    if schedule_in_seconds:
        options["schedule_in"] = {"seconds": schedule_in_seconds}
    deferrer = app.configure_task(PROCESS_TASK_NAME, **options)
    return deferrer.defer(task_label=task._meta.label_lower, task_id=task.pk)


def defer_tasks(tasks: list[DicomTask], priority: int) -> list[int]:
    """Adds queue entries for tasks of one job at once; returns their ids in the same order."""
    deferrer = app.configure_task(PROCESS_TASK_NAME, queue=QUEUE, priority=priority)
    return deferrer.batch_defer(
        *({"task_label": task._meta.label_lower, "task_id": task.pk} for task in tasks)
    )


def cancel_queue_entry(queued_job_id: int, abort: bool) -> None:
    """Removes a waiting queue entry; with ``abort``, also asks a running one to stop."""
    app.job_manager.cancel_job_by_id(queued_job_id, abort=abort)
