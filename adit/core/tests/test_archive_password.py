"""The password of a job's ZIPs is stored encrypted, only while the job runs, and a job that lost
it refuses to run again instead of writing ZIPs without it. (The ZIPs themselves: see
test_transfer.py.)"""

import pytest

from adit.core.encryption import DecryptionError
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.job_pages import flashes, make_job, stored_row, url

pytestmark = pytest.mark.django_db

PASSWORD = "Ärzte-Passwort 42!"
BLOCKER = "the password was deleted when the job ended"


def finish(job: ExampleJob, task_status: str) -> ExampleJob:
    """Ends every task of the job with `task_status` as a worker would, and the job with them."""
    job.tasks.update(status=task_status)
    job.refresh_status()
    return ExampleJob.objects.get(pk=job.pk)


def test_password_is_stored_encrypted_while_the_job_runs(member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.SUCCESS, TaskStatus.PENDING])
    job.archive_password = PASSWORD
    job.save()
    job.refresh_status()

    stored = ExampleJob.objects.get(pk=job.pk)
    assert stored.status == JobStatus.IN_PROGRESS
    assert PASSWORD not in stored_row(job)
    assert PASSWORD.encode().hex() not in stored_row(job)
    assert stored.encrypted_archive_password
    assert stored.archive_password == PASSWORD
    assert stored.encrypt_archive


@pytest.mark.parametrize(
    ("task_status", "job_status"),
    [
        (TaskStatus.SUCCESS, JobStatus.SUCCESS),
        (TaskStatus.WARNING, JobStatus.WARNING),
        (TaskStatus.FAILURE, JobStatus.FAILURE),
    ],
)
def test_password_is_deleted_when_the_job_ends(member, task_status, job_status):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], archive_password=PASSWORD)

    ended = finish(job, task_status)

    assert ended.status == job_status
    assert ended.encrypted_archive_password == ""
    assert ended.archive_password == ""
    assert ended.encrypt_archive  # what the job was for is still known
    assert PASSWORD not in stored_row(job)


def test_a_canceled_job_keeps_its_password_encrypted_and_resumes(client, member):
    job = make_job(
        member,
        JobStatus.CANCELING,
        [TaskStatus.SUCCESS, TaskStatus.CANCELED],
        archive_password=PASSWORD,
    )
    job.refresh_status()
    assert job.status == JobStatus.CANCELED
    assert PASSWORD not in stored_row(job)
    client.force_login(member)

    response = client.post(url("job_resume", job))

    assert response.status_code == 302
    resumed = ExampleJob.objects.get(pk=job.pk)
    assert resumed.status != JobStatus.CANCELED
    assert resumed.archive_password == PASSWORD


def test_password_survives_a_task_that_is_retried(member):
    job = make_job(member, JobStatus.IN_PROGRESS, [TaskStatus.FAILURE, TaskStatus.IN_PROGRESS])
    job.archive_password = PASSWORD
    job.save()
    failed = job.tasks.get(status=TaskStatus.FAILURE)

    failed.reset()  # the job still runs, so its task may run again

    job.refresh_status()
    assert ExampleJob.objects.get(pk=job.pk).archive_password == PASSWORD


def test_password_of_another_secret_key_is_reported(member, settings):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], archive_password=PASSWORD)
    settings.SECRET_KEY = "a-different-secret-key-on-a-misconfigured-worker"

    with pytest.raises(DecryptionError, match="another DJANGO_SECRET_KEY"):
        ExampleJob.objects.get(pk=job.pk).archive_password  # noqa: B018


@pytest.mark.parametrize(
    ("action", "job_status", "task_statuses"),
    [
        ("retry", JobStatus.FAILURE, [TaskStatus.SUCCESS, TaskStatus.FAILURE]),
        ("restart", JobStatus.SUCCESS, [TaskStatus.SUCCESS]),
    ],
)
def test_ended_job_without_its_password_cannot_run_again(
    client, staff_user, action, job_status, task_statuses
):
    job = make_job(staff_user, JobStatus.IN_PROGRESS, task_statuses, archive_password=PASSWORD)
    job.refresh_status()
    assert job.status == job_status
    client.force_login(staff_user)

    page = client.get(url("job_detail", job)).content.decode()
    response = client.post(url(f"job_{action}", job))

    assert f'data-testid="action-{action}"' not in page
    assert (
        f"This job cannot run again: its studies go into password-protected ZIPs, and {BLOCKER}"
        in page
    )
    assert response.status_code == 400
    assert f"Job {job.pk} cannot be" in response.content.decode()
    assert BLOCKER in response.content.decode()
    assert flashes(response) == []
    assert ExampleJob.objects.get(pk=job.pk).status == job_status
    assert sorted(job.tasks.values_list("status", flat=True)) == sorted(task_statuses)


def test_task_of_an_ended_job_without_its_password_cannot_be_reset(client, member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.FAILURE], archive_password=PASSWORD)
    job.refresh_status()
    task = job.tasks.get()
    client.force_login(member)

    page = client.get(url("task_detail", task)).content.decode()
    response = client.post(url("task_reset", task))

    assert 'data-testid="action-reset"' not in page
    assert response.status_code == 400 and BLOCKER in response.content.decode()
    assert ExampleTask.objects.get(pk=task.pk).status == TaskStatus.FAILURE


def test_ended_job_without_a_password_runs_again_as_before(client, member):
    job = make_job(member, JobStatus.CANCELING, [TaskStatus.SUCCESS, TaskStatus.CANCELED])
    job.refresh_status()
    client.force_login(member)

    response = client.post(url("job_resume", job))

    assert flashes(response) == [f"Job with ID {job.pk} will be resumed"]
