"""Users, permissions and nodes as staff would set them up for batch transfer, and the steps
of a job run here, in the test's process (the worker's own code, without the queue)."""

from __future__ import annotations

import csv
import io

import pytest

from adit.core.jobs.processing import run_task
from adit.core.jobs.statuses import TaskStatus
from adit.core.tests.factories import give_permissions
from adit.core.tests.node_fixtures import (  # noqa: F401 (fixtures)
    destination_folder,
    destination_server,
    source_server,
)

BASIC_PERMISSIONS = ("add_batchtransferjob", "view_batchtransferjob")
HEADER = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym")


def give(user, *codenames: str) -> None:
    """Adds permissions of the batch transfer app to the user's active group."""
    give_permissions(user, "batch_transfer", *codenames)


def csv_bytes(*rows, header=HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def check_job(job) -> int:
    """Runs the check of the job's current round, as the queue task would."""
    from adit.batch_transfer.checking import check_studies

    job.refresh_from_db()
    checked = check_studies(job.pk, job.check_round)
    job.refresh_from_db()
    return checked


def run_pending_tasks(job) -> None:
    """Runs every pending task to its end, as a worker would."""
    for task in job.tasks.filter(status=TaskStatus.PENDING):
        run_task(None, task._meta.label_lower, task.pk)
    job.refresh_from_db()


@pytest.fixture(autouse=True)
def _no_ethics_approval_needed_unless_asked(settings):
    settings.ETHICS_COMMITTEE_APPROVAL_REQUIRED = False


@pytest.fixture
def researcher(member):
    """alice, allowed batch transfers (pseudonymized only) in her active group."""
    give(member, *BASIC_PERMISSIONS)
    return member
