"""A PACS with a population built for batch queries, and users allowed to query it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.population import describe_population, generate_population
from adit.core.demo.synthetic import StudySummary
from adit.core.models import DicomServer
from adit.core.tests.factories import give_permissions, grant, server_for

POPULATION = {"patients": 12, "studies_per_patient": 5, "seed": 7}


def give(user, *codenames: str) -> None:
    """Adds permissions of the batch query app to the user's active group."""
    give_permissions(user, "batch_query", *codenames)


@pytest.fixture(scope="session")
def population() -> list[StudySummary]:
    return describe_population(**POPULATION)


@pytest.fixture(scope="session")
def population_orthanc(tmp_path_factory) -> Iterator[OrthancServer]:
    """An Orthanc of its own, so that other tests' PACS keep what they count on."""
    with OrthancServer("POPULATION", storage_dir=tmp_path_factory.mktemp("population")) as pacs:
        pacs.upload(generate_population(**POPULATION))
        pacs.upload([_twin_of_first_patient()])
        yield pacs


TWIN_PATIENT_ID = "TWIN-0001"


def _twin_of_first_patient():
    """Another patient with the first one's name and birth date (as happens): a search by
    name and birth date cannot tell them apart."""
    dataset = next(generate_population(**POPULATION))
    dataset.PatientID = TWIN_PATIENT_ID
    dataset.StudyDate = "20240615"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(dataset, keyword, generate_uid(prefix="2.25."))
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


@pytest.fixture
def researcher(member):
    give(member, "add_batchqueryjob", "view_batchqueryjob")
    return member


@pytest.fixture
def population_server(researcher, population_orthanc) -> DicomServer:
    server = server_for(population_orthanc, name="Population PACS")
    grant(server, researcher.active_group, source=True)
    return server


def run_lines(owner, source: DicomServer, csv_text: str):
    """A job of the lines of a CSV batch file, each task run here to its end."""
    from adit.batch_query.batch_file import read_batch_file
    from adit.batch_query.models import BatchQueryJob
    from adit.core.jobs.processing import run_task

    batch = read_batch_file(csv_text.encode(), "lines.csv", max_lines=None)
    assert batch.problems == []
    job = BatchQueryJob.create_with_tasks(
        owner=owner, source=source, tasks=batch.tasks, project_name="Test"
    )
    for task in job.tasks.all():
        run_task(None, task._meta.label_lower, task.pk)
    job.refresh_from_db()
    return job, list(job.tasks.order_by("line"))
