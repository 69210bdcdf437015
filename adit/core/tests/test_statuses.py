"""The job status rules, for every combination of task outcomes."""

import itertools

import pytest

from adit.core.jobs.statuses import JobStatus, TaskStatus, derive_job_status

FINAL = [TaskStatus.SUCCESS, TaskStatus.WARNING, TaskStatus.FAILURE, TaskStatus.CANCELED]


def _expected_final(present: set[TaskStatus]) -> tuple[JobStatus, str]:
    """The documented table, written out independently of the implementation."""
    success = TaskStatus.SUCCESS in present
    warning = TaskStatus.WARNING in present
    failure = TaskStatus.FAILURE in present
    canceled = TaskStatus.CANCELED in present
    if failure:
        if success or warning or canceled:
            return JobStatus.FAILURE, "Some tasks failed."
        return JobStatus.FAILURE, "All tasks failed."
    if warning:
        if success or canceled:
            return JobStatus.WARNING, "Some tasks have warnings."
        return JobStatus.WARNING, "All tasks have warnings."
    if success:
        return (
            JobStatus.SUCCESS,
            "Some tasks were canceled." if canceled else "All tasks succeeded.",
        )
    return JobStatus.CANCELED, "All tasks were canceled."


COMBINATIONS = [
    set(combination)
    for size in range(1, len(FINAL) + 1)
    for combination in itertools.combinations(FINAL, size)
]


@pytest.mark.parametrize("present", COMBINATIONS, ids=lambda present: "+".join(sorted(present)))
def test_finished_job_sums_up_its_tasks(present):
    outcome = derive_job_status(JobStatus.IN_PROGRESS, {status: 2 for status in present})
    assert (outcome.status, outcome.message) == _expected_final(present)
    assert outcome.finished


@pytest.mark.parametrize("present", COMBINATIONS, ids=lambda present: "+".join(sorted(present)))
def test_a_running_task_keeps_the_job_in_progress(present):
    counts = {status: 1 for status in present} | {TaskStatus.IN_PROGRESS: 1}
    outcome = derive_job_status(JobStatus.PENDING, counts)
    assert outcome.status == JobStatus.IN_PROGRESS
    assert not outcome.finished


@pytest.mark.parametrize("present", COMBINATIONS, ids=lambda present: "+".join(sorted(present)))
def test_pending_tasks_after_finished_ones_mean_in_progress(present):
    counts = {status: 1 for status in present} | {TaskStatus.PENDING: 3}
    outcome = derive_job_status(JobStatus.IN_PROGRESS, counts)
    assert outcome.status == JobStatus.IN_PROGRESS
    assert not outcome.finished


def test_job_with_only_pending_tasks_is_pending():
    outcome = derive_job_status(JobStatus.PENDING, {TaskStatus.PENDING: 5})
    assert (outcome.status, outcome.finished) == (JobStatus.PENDING, False)


def test_unverified_job_stays_unverified():
    outcome = derive_job_status(JobStatus.UNVERIFIED, {TaskStatus.PENDING: 5})
    assert outcome.status == JobStatus.UNVERIFIED


def test_job_without_tasks_succeeds_with_a_message():
    outcome = derive_job_status(JobStatus.PENDING, {})
    assert (outcome.status, outcome.message, outcome.finished) == (
        JobStatus.SUCCESS,
        "No tasks to process.",
        True,
    )


@pytest.mark.parametrize("present", COMBINATIONS, ids=lambda present: "+".join(sorted(present)))
def test_canceling_job_waits_for_its_running_task_then_is_canceled(present):
    counts = {status: 1 for status in present}
    running = derive_job_status(JobStatus.CANCELING, counts | {TaskStatus.IN_PROGRESS: 1})
    assert (running.status, running.finished) == (JobStatus.CANCELING, False)
    done = derive_job_status(JobStatus.CANCELING, counts)
    assert (done.status, done.message, done.finished) == (
        JobStatus.CANCELED,
        "Job was canceled.",
        True,
    )


def test_zero_counts_are_ignored():
    outcome = derive_job_status(
        JobStatus.IN_PROGRESS, {TaskStatus.SUCCESS: 3, TaskStatus.FAILURE: 0}
    )
    assert (outcome.status, outcome.message) == (JobStatus.SUCCESS, "All tasks succeeded.")
