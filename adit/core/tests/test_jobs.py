"""The job engine's model layer, through the test-only example app."""

import pytest

from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import DicomServerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(member):
    return ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)


def _add_tasks(job, *statuses):
    source = DicomServerFactory()
    return [
        ExampleTask.objects.create(
            job=job, source=source, destination=source, study_uid="1.2.3", status=status
        )
        for status in statuses
    ]


def test_job_status_follows_its_tasks(job):
    first, second = _add_tasks(job, TaskStatus.PENDING, TaskStatus.PENDING)
    assert job.refresh_status().status == JobStatus.PENDING

    assert first.claim()
    job.refresh_status()
    assert job.status == JobStatus.IN_PROGRESS
    assert job.start is not None and job.end is None

    ExampleTask.objects.filter(pk=first.pk).update(status=TaskStatus.SUCCESS)
    ExampleTask.objects.filter(pk=second.pk).update(status=TaskStatus.FAILURE)
    outcome = job.refresh_status()
    job.refresh_from_db()
    assert (job.status, job.message) == (JobStatus.FAILURE, "Some tasks failed.")
    assert outcome.finished and job.end is not None and job.is_finished


def test_claim_starts_an_attempt_and_refuses_finished_tasks(job):
    (task,) = _add_tasks(job, TaskStatus.PENDING)
    assert task.claim()
    assert (task.status, task.attempts) == (TaskStatus.IN_PROGRESS, 1)
    # A worker that died left it in progress: the retried queue entry may claim it again.
    assert task.claim()
    assert task.attempts == 2

    ExampleTask.objects.filter(pk=task.pk).update(status=TaskStatus.CANCELED)
    assert not task.claim()
    task.refresh_from_db()
    assert (task.status, task.attempts) == (TaskStatus.CANCELED, 2)


def test_urgent_jobs_get_the_urgent_priority(member):
    assert ExampleJob(owner=member, urgent=True).priority > ExampleJob(owner=member).priority


def test_each_job_model_has_the_urgent_permission():
    assert ("can_process_urgently", "Can process jobs urgently") in ExampleJob._meta.permissions


def test_urgent_jobs_are_queued_ahead_of_normal_ones(member):
    from procrastinate.contrib.django.models import ProcrastinateJob

    normal = ExampleJob.objects.create(owner=member)
    urgent = ExampleJob.objects.create(owner=member, urgent=True)
    (normal_task,) = _add_tasks(normal, TaskStatus.PENDING)
    (urgent_task,) = _add_tasks(urgent, TaskStatus.PENDING)
    normal.start_processing(verified=True)
    urgent.start_processing(verified=True)
    normal_task.refresh_from_db()
    urgent_task.refresh_from_db()

    entries = ProcrastinateJob.objects.filter(
        id__in=[normal_task.queued_job_id, urgent_task.queued_job_id]
    ).order_by("-priority", "id")
    assert [entry.id for entry in entries] == [urgent_task.queued_job_id, normal_task.queued_job_id]
    assert all(entry.queue_name == "dicom" for entry in entries)
    assert normal.status == urgent.status == JobStatus.PENDING


def test_unverified_jobs_wait_until_staff_verify_them(member):
    job = ExampleJob.objects.create(owner=member)
    (task,) = _add_tasks(job, TaskStatus.PENDING)
    job.start_processing(verified=False)
    task.refresh_from_db()
    assert (job.status, task.queued_job_id) == (JobStatus.UNVERIFIED, None)

    job.verify()
    task.refresh_from_db()
    assert job.status == JobStatus.PENDING and task.queued_job_id is not None
