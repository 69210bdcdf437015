"""The client's REST API methods against a live ADIT: queries with snake_case filters that give
pydicom Datasets, and following, listing and canceling jobs."""

from __future__ import annotations

from datetime import date

import pytest
from adit_client import AditBadRequest, AditClient, AditNotFound, Job

from adit.core.jobs import registry
from adit.core.jobs.statuses import JobStatus
from adit.core.models import Project
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.factories import give_permissions
from adit.token_authentication.models import Token

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def transfer_job(owner, server, status=JobStatus.PENDING):
    """A one-task transfer job of the kind the API serves at transfer-jobs, made in the
    database."""
    kind = next(k for k in registry.all_kinds() if k.api and k.api.name == "transfer-jobs")
    job = kind.job_model.objects.create(owner=owner, status=status)
    kind.task_model.objects.create(
        job=job, source=server, destination=server, patient_id="P1", study_uid="1.2.3"
    )
    return job


def test_studies_are_queried_with_python_values_and_come_as_datasets(
    client, source, orthanc1_studies
):
    study = orthanc1_studies[0]

    by_patient = client.query_studies("ORTHANC1", patient_id=study.patient_id)
    by_name_and_date = client.query_studies(
        "ORTHANC1",
        patient_name=study.patient_name[:3] + "*",
        study_date=(date(int(study.study_date[:4]), 1, 1), None),
        modalities=list(study.modalities)[:1],
    )

    expected = {s.study_instance_uid for s in orthanc1_studies if s.patient_id == study.patient_id}
    assert {answer.StudyInstanceUID for answer in by_patient} == expected
    found = next(a for a in by_patient if a.StudyInstanceUID == study.study_instance_uid)
    assert str(found.PatientName) == study.patient_name
    assert found.StudyDate == study.study_date
    assert study.study_instance_uid in {answer.StudyInstanceUID for answer in by_name_and_date}


def test_series_of_a_study_and_a_limit(client, source, orthanc1_studies):
    study = max(orthanc1_studies, key=lambda s: len(s.series))

    series = client.query_series("ORTHANC1", study.study_instance_uid)
    two = client.query_studies("ORTHANC1", limit=2)

    assert {s.SeriesInstanceUID for s in series} == {s.series_instance_uid for s in study.series}
    assert len(two) == 2


def test_a_bad_filter_or_an_unknown_server_is_an_exception_saying_so(client, source):
    with pytest.raises(AditBadRequest, match="StudyDate"):
        client.query_studies("ORTHANC1", study_date="last week")
    with pytest.raises(AditNotFound, match="Nowhere"):
        client.query_studies("Nowhere")


def test_nodes_are_listed_with_their_roles(client, source, destination):
    nodes = {node["name"]: node for node in client.list_nodes()}
    assert nodes["ORTHANC1"]["roles"] == ["source"]
    assert nodes["ORTHANC2"]["roles"] == ["destination"]


def test_jobs_are_listed_followed_and_canceled(client, member, source):
    done = transfer_job(member, source, JobStatus.SUCCESS)
    pending = transfer_job(member, source)

    listed = client.list_jobs(status="PENDING")
    finished = client.wait_for_job(done.pk, progress=False)
    with pytest.raises(TimeoutError, match="PENDING"):
        client.wait_for_job(pending.pk, timeout=0.2, poll_interval=0.1, progress=False)
    canceled = client.cancel_job(pending.pk)

    assert [job.id for job in listed] == [pending.pk]
    assert isinstance(finished, Job) and finished.status == "SUCCESS" and finished.finished
    assert canceled.status == "CANCELED" and canceled.finished
    assert client.get_job(pending.pk).status == "CANCELED"


def test_an_unknown_kind_of_job_is_a_value_error(client):
    with pytest.raises(ValueError, match="batch-query"):
        client.list_jobs(kind="mass")


def test_a_read_only_token_cannot_cancel(adit_http, member, source):
    job = transfer_job(member, source)
    _, plain = Token.objects.create_token(member, "read", read_only=True)
    reader = AditClient(adit_http.url, plain)

    assert reader.get_job(job.pk).status == "PENDING"
    with pytest.raises(Exception, match="read-only") as refused:
        reader.cancel_job(job.pk)
    assert getattr(refused.value, "status_code", None) == 403


@pytest.fixture
def transfer_permission(member):
    give_permissions(member, "selective_transfer", "add_selectivetransferjob")


def test_the_readme_example_runs_as_written(
    adit_http, token, source, destination, transfer_permission, orthanc1_studies, empty_orthanc2
):
    clear_task_queue()
    study = orthanc1_studies[0]
    with WorkerProcess("dicom"):
        # The example of the issue and the README, with this ADIT and its servers.
        client = AditClient(server_url=adit_http.url, auth_token=token)
        studies = client.query_studies(
            source_server="ORTHANC1",
            patient_id=study.patient_id,
            study_date=f"{study.study_date}-{study.study_date}",
        )
        job = client.create_transfer_job(
            source_server="ORTHANC1",
            destination_server="ORTHANC2",
            study_uids=[s.StudyInstanceUID for s in studies],
            pseudonymize=True,
        )
        job = client.wait_for_job(job.id, timeout=180, progress=False)

    assert job.status == "SUCCESS", job.data
    destination.accesses.update(source=True)  # to look at what arrived
    (task,) = job.tasks
    pseudonym = task["pseudonym"]
    assert pseudonym and pseudonym != study.patient_id
    held = client.query_studies("ORTHANC2", patient_id=pseudonym)
    assert [str(s.StudyInstanceUID) for s in held] == [task["pseudonymized_study_uid"]]
    assert not client.query_studies("ORTHANC2", patient_id=study.patient_id)


def test_automatic_pseudonyms_are_the_same_in_every_job_of_a_project(
    client, member, source, destination, transfer_permission, orthanc1_studies
):
    project = Project.objects.create(name="Lung screening")
    project.groups.add(member.active_group)
    study = orthanc1_studies[0]
    other = next(s for s in orthanc1_studies if s.patient_id != study.patient_id)

    first = client.create_transfer_job(
        "ORTHANC1", "ORTHANC2", [study.study_instance_uid], pseudonymize=True, project=project.name
    )
    second = client.create_transfer_job(
        "ORTHANC1",
        "ORTHANC2",
        [study.study_instance_uid, other.study_instance_uid],
        pseudonymize=True,
        project=project.name,
    )

    pseudonyms = {task["study_uid"]: task["pseudonym"] for task in second.tasks}
    assert first.tasks[0]["pseudonym"] == pseudonyms[study.study_instance_uid]
    assert pseudonyms[other.study_instance_uid] != pseudonyms[study.study_instance_uid]


def test_a_refused_job_names_the_field(client, source, destination, transfer_permission):
    with pytest.raises(AditBadRequest, match="study_uid"):
        client.create_transfer_job("ORTHANC1", "ORTHANC2", ["1.2.x"], pseudonymize=True)
