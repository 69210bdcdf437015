"""What a task's message and log say when its data is bad: sentences, never Python reprs."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ValidationError

from adit.core.jobs.processing import readable_error, run_task
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import server_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_a_task_with_a_malformed_study_uid_fails_with_a_sentence(
    member, orthanc1, empty_orthanc2, caplog
):
    # Rows written without their validators (bulk_create, an old version, the shell).
    job = ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    (task,) = ExampleTask.objects.bulk_create(
        [
            ExampleTask(
                job=job,
                source=server_for(orthanc1),
                destination=server_for(empty_orthanc2),
                patient_id="P1",
                study_uid="1.2.3'+alert(1)+'",
            )
        ]
    )

    with caplog.at_level(logging.INFO):
        run_task(None, task._meta.label_lower, task.pk)

    task.refresh_from_db()
    assert task.status == TaskStatus.FAILURE
    assert "digits and dots" in task.message
    assert not task.message.startswith("[")
    assert "Traceback" not in task.log
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "error, expected",
    [
        (ValidationError(["First.", "Second."]), "First. Second."),
        (ValidationError({"study_uid": ["Bad."]}), "Bad."),
        (KeyError("PatientID"), "Unexpected error: KeyError PatientID."),
        (RuntimeError(), "Unexpected error (RuntimeError)."),
        (OSError("Disk full."), "Disk full."),
    ],
)
def test_readable_error(error, expected):
    assert readable_error(error) == expected
