"""Disk-space warnings and the cleanup of tasks no worker will finish."""

import pytest
from django.core.management import call_command

from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import DicomFolder
from adit.core.tasks import check_disk_space
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import DicomServerFactory

pytestmark = pytest.mark.django_db


def test_admins_are_mailed_about_folders_past_their_warn_size(tmp_path, mailoutbox, settings):
    settings.ADMINS = [("Admin", "admin@example.org")]
    full = tmp_path / "full"
    full.mkdir()
    (full / "study.dcm").write_bytes(b"x" * 4096)
    DicomFolder.objects.create(name="Full", path=str(full), warn_size=0, quota=5)
    DicomFolder.objects.create(name="Roomy", path=str(tmp_path / "roomy"), warn_size=1)
    DicomFolder.objects.create(name="Unwatched", path=str(full))

    over = check_disk_space(timestamp=0)  # pyright: ignore[reportCallIssue]

    assert over == [f"Full ({full}): 0.0 GB of 5 GB used (warn size 0 GB)."]
    (mail,) = mailoutbox
    assert mail.subject.endswith("Warning, low disk space!")
    assert "Full" in mail.body and "Roomy" not in mail.body


def test_cleanup_ends_tasks_no_worker_runs_and_settles_canceling_jobs(member, capsys):
    server = DicomServerFactory()
    job = ExampleJob.objects.create(owner=member, status=JobStatus.IN_PROGRESS)
    orphan = ExampleTask.objects.create(
        job=job,
        source=server,
        destination=server,
        study_uid="1.2.3",
        status=TaskStatus.IN_PROGRESS,
        queued_job_id=987654,  # a queue entry that no longer exists
    )
    canceling = ExampleJob.objects.create(owner=member, status=JobStatus.CANCELING)
    ExampleTask.objects.create(
        job=canceling, source=server, destination=server, study_uid="1.2.4",
        status=TaskStatus.CANCELED,
    )  # fmt: skip

    call_command("cleanup_jobs")

    orphan.refresh_from_db()
    assert orphan.status == TaskStatus.FAILURE
    assert "interrupted" in orphan.message and "reset it" in orphan.message
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE
    canceling.refresh_from_db()
    assert canceling.status == JobStatus.CANCELED
    assert "2 stuck task(s) or job(s) cleaned up." in capsys.readouterr().out
