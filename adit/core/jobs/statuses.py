"""Job and task statuses, and the rules that derive a job's status from its tasks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models


class JobStatus(models.TextChoices):
    UNVERIFIED = "UV", "Unverified"
    PENDING = "PE", "Pending"
    IN_PROGRESS = "IP", "In Progress"
    CANCELING = "CI", "Canceling"
    CANCELED = "CA", "Canceled"
    SUCCESS = "SU", "Success"
    WARNING = "WA", "Warning"
    FAILURE = "FA", "Failure"


class TaskStatus(models.TextChoices):
    PENDING = "PE", "Pending"
    IN_PROGRESS = "IP", "In Progress"
    CANCELED = "CA", "Canceled"
    SUCCESS = "SU", "Success"
    WARNING = "WA", "Warning"
    FAILURE = "FA", "Failure"


FINAL_JOB_STATUSES = frozenset(
    {JobStatus.CANCELED, JobStatus.SUCCESS, JobStatus.WARNING, JobStatus.FAILURE}
)
FINAL_TASK_STATUSES = frozenset(
    {TaskStatus.CANCELED, TaskStatus.SUCCESS, TaskStatus.WARNING, TaskStatus.FAILURE}
)


@dataclass(frozen=True)
class JobOutcome:
    status: JobStatus
    message: str
    finished: bool


def derive_job_status(current: JobStatus, task_counts: Mapping[Any, int]) -> JobOutcome:
    """The job's status and message once its tasks have the given statuses.

    ``task_counts`` maps a task status (a TaskStatus or its two-letter value) to how many tasks
    have it. A job being canceled stays
    "Canceling" while a task still runs and ends "Canceled" once none does; otherwise work still
    to do keeps the job pending or in progress, and a finished job sums up its tasks.
    """
    counts = {TaskStatus(status): count for status, count in task_counts.items() if count}
    if not counts:
        return JobOutcome(JobStatus.SUCCESS, "No tasks to process.", True)

    pending = counts.get(TaskStatus.PENDING, 0)
    running = counts.get(TaskStatus.IN_PROGRESS, 0)
    if current == JobStatus.CANCELING:
        if running:
            return JobOutcome(JobStatus.CANCELING, "", False)
        return JobOutcome(JobStatus.CANCELED, "Job was canceled.", True)
    if running:
        return JobOutcome(JobStatus.IN_PROGRESS, "", False)
    if pending:
        # A job some of whose tasks already ran is in progress, even between two tasks.
        started = any(status != TaskStatus.PENDING for status in counts)
        status = JobStatus.IN_PROGRESS if started else JobStatus.PENDING
        if current == JobStatus.UNVERIFIED:
            status = JobStatus.UNVERIFIED
        return JobOutcome(status, "", False)

    success = counts.get(TaskStatus.SUCCESS, 0)
    warning = counts.get(TaskStatus.WARNING, 0)
    failure = counts.get(TaskStatus.FAILURE, 0)
    canceled = counts.get(TaskStatus.CANCELED, 0)
    if failure:
        message = "Some tasks failed." if success or warning or canceled else "All tasks failed."
        return JobOutcome(JobStatus.FAILURE, message, True)
    if warning:
        message = "Some tasks have warnings." if success or canceled else "All tasks have warnings."
        return JobOutcome(JobStatus.WARNING, message, True)
    if success:
        message = "Some tasks were canceled." if canceled else "All tasks succeeded."
        return JobOutcome(JobStatus.SUCCESS, message, True)
    return JobOutcome(JobStatus.CANCELED, "All tasks were canceled.", True)
