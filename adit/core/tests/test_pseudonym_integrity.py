"""Within a project (or a job without one) a patient has one pseudonym and a pseudonym one
patient: checked when a job is created, and recorded when each transfer starts with the
PatientID the source PACS has, so a conflict never reaches the destination."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from adit.core.demo.synthetic import StudySummary, describe_ct_series, generate_ct_series
from adit.core.jobs.processing import run_task
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import (
    DicomFolder,
    DicomServer,
    JobPseudonym,
    Project,
    ProjectPseudonym,
    PseudonymConflict,
    check_pseudonyms,
)
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import run_transfer, server_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def project() -> Project:
    return Project.objects.create(name="Lung study")


def _pairs(project: Project) -> list[tuple[str, str]]:
    return list(project.pseudonyms.order_by("pk").values_list("patient_id", "pseudonym"))


# -- the record ---------------------------------------------------------------------------------


def test_the_same_pair_may_be_claimed_again(project):
    project.claim_pseudonym("PAT-A", "P1")
    project.claim_pseudonym("PAT-A", "P1")
    assert _pairs(project) == [("PAT-A", "P1")]


def test_a_patient_keeps_the_pseudonym_on_record(project):
    project.claim_pseudonym("PAT-A", "P1")
    with pytest.raises(PseudonymConflict) as refused:
        project.claim_pseudonym("PAT-A", "P2")
    assert str(refused.value) == (
        "Patient PAT-A already has the pseudonym P1 in project Lung study; use P1."
    )
    assert _pairs(project) == [("PAT-A", "P1")]


def test_a_pseudonym_is_never_given_to_a_second_patient(project):
    project.claim_pseudonym("PAT-A", "P1")
    with pytest.raises(PseudonymConflict) as refused:
        project.claim_pseudonym("PAT-B", "P1")
    assert str(refused.value) == (
        "The pseudonym P1 is already given to another patient in project Lung study."
    )
    assert _pairs(project) == [("PAT-A", "P1")]


def test_projects_do_not_share_their_records(project):
    other = Project.objects.create(name="Brain study")
    project.claim_pseudonym("PAT-A", "P1")
    other.claim_pseudonym("PAT-A", "B7")
    other.claim_pseudonym("PAT-B", "P1")
    assert _pairs(other) == [("PAT-A", "B7"), ("PAT-B", "P1")]


def test_staff_see_the_records_under_the_project_and_may_delete_a_wrong_one(
    client, staff_user, project
):
    staff_user.is_superuser = True
    staff_user.save()
    project.claim_pseudonym("PAT-A", "P1")
    project.claim_pseudonym("PAT-B", "P2")
    client.force_login(staff_user)
    url = f"/django-admin/core/project/{project.pk}/change/"

    page = client.get(url).content.decode()
    assert "PAT-A" in page and "P1" in page and "PAT-B" in page
    assert 'name="pseudonyms-0-pseudonym"' not in page  # read-only

    wrong = ProjectPseudonym.objects.get(patient_id="PAT-B")
    form = {
        "name": project.name,
        "description": "",
        "pseudonyms-TOTAL_FORMS": "2",
        "pseudonyms-INITIAL_FORMS": "2",
        "pseudonyms-0-id": str(project.pseudonyms.get(patient_id="PAT-A").pk),
        "pseudonyms-0-project": str(project.pk),
        "pseudonyms-1-id": str(wrong.pk),
        "pseudonyms-1-project": str(project.pk),
        "pseudonyms-1-DELETE": "on",
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert _pairs(project) == [("PAT-A", "P1")]
    project.claim_pseudonym("PAT-B", "P3")  # corrected by the next transfer


# -- the check before a job is created -------------------------------------------------------


def test_check_refuses_one_pseudonym_for_two_patients_of_one_job():
    with pytest.raises(PseudonymConflict) as refused:
        check_pseudonyms(None, [("PAT-A", "P1"), ("PAT-A", "P1"), ("PAT-B", "P1")])
    assert str(refused.value) == (
        "The pseudonym P1 would go to two patients, PAT-A and PAT-B; a pseudonym belongs to "
        "one patient, so give each their own."
    )


def test_check_refuses_two_pseudonyms_for_one_patient_of_one_job():
    with pytest.raises(PseudonymConflict) as refused:
        check_pseudonyms(None, [("PAT-A", "P1"), ("PAT-A", "P2")])
    assert "Patient PAT-A would get two pseudonyms, P1 and P2" in str(refused.value)


def test_check_compares_with_the_project_and_records_nothing(project):
    project.claim_pseudonym("PAT-A", "P1")

    with pytest.raises(PseudonymConflict) as refused:
        check_pseudonyms(project, [("PAT-A", "P2")])
    assert str(refused.value) == (
        "Patient PAT-A already has the pseudonym P1 in project Lung study; use P1."
    )
    with pytest.raises(PseudonymConflict) as refused:
        check_pseudonyms(project, [("PAT-B", "P1")])
    assert str(refused.value) == (
        "The pseudonym P1 is already given to another patient in project Lung study."
    )

    check_pseudonyms(project, [("PAT-A", "P1"), ("PAT-C", "P3"), ("", "P4"), ("PAT-D", "")])
    assert _pairs(project) == [("PAT-A", "P1")]


# -- two transfers claiming at once ------------------------------------------------------------


def _wait_until_a_session_waits_for_a_lock() -> None:
    with connection.cursor() as cursor:
        for _ in range(1000):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone() != (0,):
                return
            time.sleep(0.01)
    raise AssertionError("the second claim never waited for the first")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("second_claim", "message"),
    [
        (
            ("PAT-B", "P1"),
            "The pseudonym P1 is already given to another patient in project Race.",
        ),
        (
            ("PAT-A", "P2"),
            "Patient PAT-A already has the pseudonym P1 in project Race; use P1.",
        ),
    ],
)
def test_of_two_claims_at_once_the_second_is_refused(second_claim, message):
    """The first claim's row is not committed yet when the second looks for it: the unique
    constraint makes the second wait, then fail, and that failure is the conflict."""
    project = Project.objects.create(name="Race")
    first_claimed, commit_first = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                project.claim_pseudonym("PAT-A", "P1")
                first_claimed.set()
                commit_first.wait(timeout=30)
        finally:
            connection.close()

    def second() -> None:
        try:
            project.claim_pseudonym(*second_claim)
            outcomes["second"] = "claimed"
        except Exception as error:
            outcomes["second"] = error
        finally:
            connection.close()

    first_thread = threading.Thread(target=first)
    first_thread.start()
    assert first_claimed.wait(timeout=30)
    second_thread = threading.Thread(target=second)
    second_thread.start()
    try:
        _wait_until_a_session_waits_for_a_lock()
    finally:
        commit_first.set()
        first_thread.join(timeout=30)
        second_thread.join(timeout=30)

    refused = outcomes["second"]
    assert isinstance(refused, PseudonymConflict), refused
    assert str(refused) == message
    assert _pairs(project) == [("PAT-A", "P1")]


# -- transfers: what reaches the destination ---------------------------------------------------


@pytest.fixture
def source(orthanc1) -> DicomServer:
    return server_for(orthanc1)


@pytest.fixture
def destination(empty_orthanc2) -> DicomServer:
    return server_for(empty_orthanc2)


def _two_studies_of_one_patient(studies: list[StudySummary]) -> tuple[StudySummary, ...]:
    for study in studies:
        same_patient = [other for other in studies if other.patient_id == study.patient_id]
        if len(same_patient) > 1:
            return tuple(same_patient[:2])
    raise AssertionError("no patient with two studies")


def _patient_ids_at(orthanc) -> set[str]:
    return {
        patient["MainDicomTags"]["PatientID"] for patient in orthanc.rest("GET", "/patients?expand")
    }


@pytest.mark.integration
def test_a_second_pseudonym_for_a_patient_of_the_project_is_refused_and_nothing_stored(
    member, source, destination, empty_orthanc2, orthanc1_studies, project
):
    """The outside test's case: the same patient sent again in the project under another
    pseudonym. The job is refused when created; made through the core directly, its task
    fails with the same message and stores nothing."""
    study = orthanc1_studies[0]
    first = run_transfer(
        member, source, destination, study.patient_id, study.study_instance_uid,
        pseudonym="P1", project=project,
    )  # fmt: skip
    assert first.status == TaskStatus.SUCCESS, first.message
    stored = empty_orthanc2.count_instances()
    message = (
        f"Patient {study.patient_id} already has the pseudonym P1 in project Lung study; use P1."
    )

    with pytest.raises(PseudonymConflict) as refused:
        check_pseudonyms(project, [(study.patient_id, "P2")])
    assert str(refused.value) == message

    second = run_transfer(
        member, source, destination, study.patient_id, study.study_instance_uid,
        pseudonym="P2", project=project,
    )  # fmt: skip
    assert (second.status, second.message) == (TaskStatus.FAILURE, message)
    assert second.job.status == JobStatus.FAILURE
    assert (second.progress_done, second.pseudonymized_study_uid) == (0, "")
    assert empty_orthanc2.count_instances() == stored
    assert _patient_ids_at(empty_orthanc2) == {"P1"}
    assert _pairs(project) == [(study.patient_id, "P1")]


@pytest.mark.integration
def test_the_same_pair_again_gets_the_same_uids(
    member, source, destination, orthanc1_studies, project
):
    earlier, later = _two_studies_of_one_patient(orthanc1_studies)
    tasks = [
        run_transfer(
            member,
            source,
            destination,
            study.patient_id,
            study.study_instance_uid,
            pseudonym="P1",
            project=project,
        )  # fmt: skip
        for study in (earlier, later, earlier)
    ]
    assert [task.status for task in tasks] == [TaskStatus.SUCCESS] * 3, tasks[-1].message
    assert tasks[0].pseudonymized_study_uid == tasks[2].pseudonymized_study_uid
    assert _pairs(project) == [(earlier.patient_id, "P1")]


@pytest.mark.integration
def test_a_pseudonym_of_the_project_is_not_given_to_another_patient(
    member, source, destination, empty_orthanc2, orthanc1_studies, project
):
    first_patient = orthanc1_studies[0]
    other_patient = next(s for s in orthanc1_studies if s.patient_id != first_patient.patient_id)
    first = run_transfer(
        member, source, destination, first_patient.patient_id,
        first_patient.study_instance_uid, pseudonym="P1", project=project,
    )  # fmt: skip
    assert first.status == TaskStatus.SUCCESS, first.message
    stored = empty_orthanc2.count_instances()

    second = run_transfer(
        member, source, destination, other_patient.patient_id,
        other_patient.study_instance_uid, pseudonym="P1", project=project,
    )  # fmt: skip
    assert (second.status, second.message) == (
        TaskStatus.FAILURE,
        "The pseudonym P1 is already given to another patient in project Lung study.",
    )
    assert empty_orthanc2.count_instances() == stored


@pytest.mark.integration
def test_the_patient_id_the_pacs_has_is_recorded_not_the_tasks(
    member, source, destination, orthanc1_studies, project
):
    """A task naming an outdated PatientID (the PACS merged the patient) still claims the
    pseudonym for the patient the PACS has, which a later job cannot give another one; the
    check at creation, knowing only the task's ID, could not have seen this."""
    earlier, later = _two_studies_of_one_patient(orthanc1_studies)
    merged = run_transfer(
        member, source, destination, "MERGED-4711", earlier.study_instance_uid,
        pseudonym="P1", project=project,
    )  # fmt: skip
    assert merged.status == TaskStatus.WARNING  # the mismatching patient IDs
    assert _pairs(project) == [(earlier.patient_id, "P1")]

    again = run_transfer(
        member, source, destination, later.patient_id, later.study_instance_uid,
        pseudonym="P2", project=project,
    )  # fmt: skip
    assert again.status == TaskStatus.FAILURE
    assert f"Patient {later.patient_id} already has the pseudonym P1" in again.message


@pytest.mark.integration
def test_without_a_project_a_pseudonym_stays_one_patients_within_the_job(
    member, source, destination, orthanc1_studies
):
    first_patient = orthanc1_studies[0]
    other_patient = next(s for s in orthanc1_studies if s.patient_id != first_patient.patient_id)
    job = ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    tasks = [
        ExampleTask.objects.create(
            job=job,
            source=source,
            destination=destination,
            patient_id=study.patient_id,
            study_uid=study.study_instance_uid,
            pseudonym="SAME",
        )
        for study in (first_patient, other_patient)
    ]
    for task in tasks:
        run_task(None, task._meta.label_lower, task.pk)
        task.refresh_from_db()
    assert tasks[0].status == TaskStatus.SUCCESS, tasks[0].message
    assert (tasks[1].status, tasks[1].message) == (
        TaskStatus.FAILURE,
        "The pseudonym SAME is already given to another patient in this job.",
    )

    # Another job has a secret of its own: the pseudonym is free there.
    elsewhere = run_transfer(
        member, source, destination, other_patient.patient_id,
        other_patient.study_instance_uid, pseudonym="SAME",
    )  # fmt: skip
    assert elsewhere.status == TaskStatus.SUCCESS, elsewhere.message

    job.delete()
    assert list(JobPseudonym.objects.values_list("patient_id", "pseudonym")) == [
        (other_patient.patient_id, "SAME")
    ]


@pytest.mark.integration
def test_a_study_without_patient_id_is_not_pseudonymized(member, empty_orthanc2, tmp_path):
    """Whose pseudonym it would be cannot be told, so it could become two patients'."""
    study = describe_ct_series(2, seed=7)

    def without_patient_id():
        for dataset in generate_ct_series(2, rows=16, columns=16, seed=7):
            dataset.PatientID = ""
            yield dataset

    empty_orthanc2.upload(without_patient_id())
    source = server_for(empty_orthanc2)
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))
    task = run_transfer(member, source, folder, "", study.study_instance_uid, pseudonym="P1")
    assert task.status == TaskStatus.FAILURE
    assert task.message == (
        f"The study {study.study_instance_uid} has no PatientID at ORTHANC2, so ADIT cannot "
        "tell whose pseudonym P1 would be; it is not transferred."
    )
    assert not (tmp_path / "export").exists() or not any((tmp_path / "export").rglob("*"))
