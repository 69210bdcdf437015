"""Transfer jobs created through the REST API (``adit.core.transfer.api``), as any transfer
kind offers it: here the example app's ``/api/example-jobs/``, with a script's token."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from adit.core import validators
from adit.core.dicom.operator import DicomOperator
from adit.core.jobs.statuses import JobStatus
from adit.core.models import DicomNode, Project
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import (
    DicomFolderFactory,
    DicomServerFactory,
    give_permissions,
    grant,
    server_for,
)
from adit.core.transfer.study import excluded_modalities
from adit.token_authentication.models import Token

URL = "/api/example-jobs/"


@dataclass
class Api:
    """A script of ``user`` with a token, posting bodies as JSON."""

    client: Client
    user: Any
    token: str

    def post(self, body: Any, token: str | None = None):
        return self.client.post(
            URL,
            data=json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Token {token or self.token}"},
        )


def give(user, *codenames: str) -> None:
    give_permissions(user, "example_app", *codenames)


def api_for(user) -> Api:
    _, plain = Token.objects.create_token(user, "script")
    return Api(Client(), user, plain)


@pytest.fixture
def api(member) -> Api:
    """alice's script; her active group (Thoraxklinik) may create example jobs."""
    give(member, "add_examplejob")
    return api_for(member)


@pytest.fixture
def nodes(member, tmp_path) -> None:
    """A source, a destination server and folder of alice's active group; a server and a
    project of her other group."""
    group, other_group = member.active_group, member.groups.exclude(pk=member.active_group_id)[0]
    grant(DicomServerFactory(name="Clinical PACS", ae_title="CLINPACS"), group, source=True)
    grant(DicomServerFactory(name="Research PACS", ae_title="RESPACS"), group, destination=True)
    share = DicomFolderFactory(name="Research share", path=str(tmp_path / "share"))
    grant(share, group, destination=True)
    grant(DicomServerFactory(name="Other department", ae_title="OTHER"), other_group, source=True)
    Project.objects.create(name="Lung").groups.add(group)
    Project.objects.create(name="Other project").groups.add(other_group)


def body(**changes) -> dict:
    """A valid body, with ``changes``."""
    return {
        "source": "Clinical PACS",
        "destination": "Research share",
        "studies": [{"study_uid": "1.2.3", "patient_id": "4711"}],
        "pseudonym": "SUBJ-1",
        **changes,
    }


def pseudonyms_by_study(answer: dict) -> dict[str, str]:
    return {task["study_uid"]: task["pseudonym"] for task in answer["tasks"]}


@pytest.mark.django_db
def test_a_valid_body_creates_the_job_with_its_tasks_and_starts_it(api, nodes):
    response = api.post(
        body(
            source="CLINPACS",  # a server by its AE title
            studies=[
                {"study_uid": "1.2.3", "patient_id": "4711", "series_uids": ["1.2.3.1", "1.2.3.2"]},
                {"study_uid": "1.2.4", "patient_id": "4711"},
            ],
            project="Lung",
            trial_protocol_id="T-1",
            trial_protocol_name="Screening",
            archive_password="s3cret",
            send_finished_mail=True,
        )
    )

    assert response.status_code == 201, response.json()
    answer = response.json()
    job = ExampleJob.objects.get()
    assert (answer["id"], answer["status"], answer["owner"]) == (job.pk, "PENDING", "alice")
    assert answer["project"] == "Lung"
    assert (answer["trial_protocol_id"], answer["trial_protocol_name"]) == ("T-1", "Screening")
    assert (answer["encrypt_archive"], answer["convert_to_nifti"]) == (True, False)
    assert answer["progress"] == {"processed": 0, "total": 2, "unit": "tasks"}
    tasks = [
        (t["status"], t["source"], t["destination"], t["patient_id"], t["study_uid"])
        + (t["series_uids"], t["pseudonym"])
        for t in answer["tasks"]
    ]
    assert tasks == [
        ("PENDING", "Clinical PACS", "Research share", "4711", "1.2.3")
        + (["1.2.3.1", "1.2.3.2"], "SUBJ-1"),
        ("PENDING", "Clinical PACS", "Research share", "4711", "1.2.4", [], "SUBJ-1"),
    ]
    assert (job.archive_password, job.send_finished_mail) == ("s3cret", True)
    # Queued for a worker, as a job from the pages.
    assert all(task.queued_job_id for task in ExampleTask.objects.all())


@pytest.mark.django_db
def test_a_job_waits_for_staff_to_verify_it_as_from_the_pages(api, nodes, staff_user, settings):
    settings.JOBS_NEED_STAFF_VERIFICATION = True
    give(staff_user, "add_examplejob")
    for name in ("Clinical PACS", "Research share"):
        grant(
            DicomNode.objects.get(name=name), staff_user.active_group, source=True, destination=True
        )

    users = api.post(body())
    staffs = api_for(staff_user).post(body())

    assert (users.status_code, users.json()["status"]) == (201, "UNVERIFIED")
    assert (staffs.status_code, staffs.json()["status"]) == (201, "PENDING")
    waiting = ExampleTask.objects.get(job__owner=api.user)
    assert waiting.queued_job_id is None


INVALID_BODIES = [
    pytest.param(
        body(source="Nowhere"),
        ["source"],
        "There is no DICOM server “Nowhere” you may use as a source.",
        id="unknown source",
    ),
    pytest.param(
        body(source="Other department"),
        ["source"],
        "There is no DICOM server “Other department” you may use as a source.",
        id="source of another group",
    ),
    pytest.param(
        body(source="Research share"),
        ["source"],
        "There is no DICOM server “Research share” you may use as a source.",
        id="folder as source",
    ),
    pytest.param(
        body(destination="Clinical PACS"),
        ["destination"],
        "There is no DICOM server or folder “Clinical PACS” you may use as a destination.",
        id="source as destination",
    ),
    pytest.param(
        body(studies=[{"study_uid": "1.2.x", "patient_id": "4711"}]),
        ["studies", "0", "study_uid"],
        "A DICOM UID consists of digits and dots only: “1.2.x”.",
        id="bad study UID",
    ),
    pytest.param(
        body(studies=[{"study_uid": "1.2.3", "series_uids": ["1.2.3.1", "1.2.3..2"]}]),
        ["studies", "0", "series_uids", "1"],
        "A DICOM UID consists of digits and dots only: “1.2.3..2”.",
        id="bad series UID",
    ),
    pytest.param(
        body(studies=[{"study_uid": "1.2.3", "patient_id": 4711}]),
        ["studies", "0", "patient_id"],
        "Must be text (a JSON string), not a number or anything else.",
        id="patient ID as a number",
    ),
    pytest.param(
        body(studies=[{"study_uid": "1.2.3", "patient_id": "47\\11"}]),
        ["studies", "0", "patient_id"],
        "Contains an invalid backslash character: “47\\11”.",
        id="patient ID with a backslash",
    ),
    pytest.param(
        body(studies=[]),
        ["studies"],
        "Name at least one study to transfer.",
        id="no study",
    ),
    pytest.param(
        body(studies=[{"study_uid": "1.2.3"}, {"study_uid": "1.2.3", "series_uids": ["1.2"]}]),
        ["studies", "1", "study_uid"],
        "The study is listed already (at index 0); list each study once, with all its series_uids.",
        id="a study twice",
    ),
    pytest.param(
        body(studies=[{"study_uid": f"1.2.{n}"} for n in range(501)]),
        ["studies"],
        "At most 500 studies per job are allowed (501 given); split them into several jobs.",
        id="too many studies",
    ),
    pytest.param(
        body(pseudonymize=True),
        ["pseudonymize"],
        "Give a pseudonym or set pseudonymize (ADIT chooses one per patient), not both.",
        id="pseudonym and pseudonymize",
    ),
    pytest.param(
        body(pseudonym="SUBJ*"),
        ["pseudonym"],
        "A pseudonym must not contain * or ? (they are wildcards in DICOM searches).",
        id="pseudonym with a wildcard",
    ),
    pytest.param(
        body(pseudonym=""),
        ["pseudonym"],
        "This field is required. You may only transfer pseudonymized: give a pseudonym, or "
        "set pseudonymize to true.",
        id="unpseudonymized without the permission",
    ),
    pytest.param(
        body(destination="Research PACS", convert_to_nifti=True),
        ["convert_to_nifti"],
        "NIfTI conversion only works for folder destinations.",
        id="NIfTI to a server",
    ),
    pytest.param(
        body(destination="RESPACS", archive_password="s3cret"),
        ["archive_password"],
        "An archive password only works for folder destinations.",
        id="archive password to a server",
    ),
    pytest.param(
        body(encrypt_archive=True),
        ["archive_password"],
        "An encrypted archive needs a password: give the archive_password.",
        id="encryption without a password",
    ),
    pytest.param(
        body(urgent=True),
        ["urgent"],
        "You may not have jobs processed urgently: that needs the permission "
        "example_app.can_process_urgently in your active group.",
        id="urgent without the permission",
    ),
    pytest.param(
        body(project="Other project"),
        ["project"],
        "There is no project “Other project” your active group (Thoraxklinik) may transfer within.",
        id="project of another group",
    ),
    pytest.param(
        body(trial_protocol_id="T\\1"),
        ["trial_protocol_id"],
        "Contains an invalid backslash character: “T\\1”.",
        id="trial ID with a backslash",
    ),
    pytest.param(
        body(pseudonymise=True),
        ["pseudonymise"],
        "Unknown field; the fields are source, destination, studies, pseudonym, pseudonymize, "
        "project, trial_protocol_id, trial_protocol_name, urgent, archive_password, "
        "encrypt_archive, convert_to_nifti, send_finished_mail.",
        id="misspelt option",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("sent, path, message", INVALID_BODIES)
def test_each_invalid_field_is_a_400_naming_it_and_nothing_is_created(
    api, nodes, sent, path, message
):
    response = api.post(sent)

    assert response.status_code == 400, response.json()
    errors = response.json()
    for key in path:
        errors = errors[key]
    assert errors == [message]
    assert not ExampleJob.objects.exists() and not ExampleTask.objects.exists()


@pytest.mark.django_db
def test_the_options_a_permission_allows_are_taken(api, nodes):
    give(api.user, "can_process_urgently", "can_transfer_unpseudonymized")

    response = api.post(body(pseudonym="", urgent=True))

    assert response.status_code == 201, response.json()
    assert response.json()["urgent"] is True
    assert response.json()["tasks"][0]["pseudonym"] == ""


@pytest.mark.django_db
def test_creating_needs_the_add_permission_in_the_active_group(member, nodes):
    other_group = member.groups.exclude(pk=member.active_group_id)[0]
    other_group.permissions.add(
        Permission.objects.get(content_type__app_label="example_app", codename="add_examplejob")
    )

    response = api_for(member).post(body())

    assert response.status_code == 403
    assert response.json() == {
        "detail": "You do not have the permission example_app.add_examplejob in your active "
        "group (Thoraxklinik)."
    }
    assert not ExampleJob.objects.exists()


@pytest.mark.django_db
def test_a_read_only_token_cannot_create(api, nodes):
    _, read_only = Token.objects.create_token(api.user, "dashboard", read_only=True)

    response = api.post(body(), token=read_only)

    assert response.status_code == 403
    assert "This API token is read-only" in response.json()["detail"]
    assert not ExampleJob.objects.exists()


@pytest.mark.django_db
def test_automatic_pseudonyms_are_the_patient_s_in_every_job_of_the_project(api, nodes):
    first = api.post(
        body(
            pseudonym="",
            pseudonymize=True,
            project="Lung",
            studies=[
                {"study_uid": "1.1", "patient_id": "P1"},
                {"study_uid": "1.2", "patient_id": "P2"},
                {"study_uid": "1.3", "patient_id": "P1"},
            ],
        )
    )
    second = api.post(
        body(
            pseudonym="",
            pseudonymize=True,
            project="Lung",
            studies=[
                {"study_uid": "2.1", "patient_id": "P1"},
                {"study_uid": "2.2", "patient_id": "P3"},
            ],
        )
    )

    assert (first.status_code, second.status_code) == (201, 201), (first.json(), second.json())
    one, two = pseudonyms_by_study(first.json()), pseudonyms_by_study(second.json())
    assert one["1.1"] == one["1.3"] == two["2.1"]
    assert len({one["1.1"], one["1.2"], two["2.2"]}) == 3
    for pseudonym in (one["1.1"], one["1.2"], two["2.2"]):
        validators.validate_pseudonym(pseudonym)
        assert pseudonym not in ("P1", "P2", "P3")


@pytest.mark.django_db
def test_automatic_pseudonyms_without_a_project_hold_within_the_job(api, nodes):
    studies = [{"study_uid": "1.1", "patient_id": "P1"}, {"study_uid": "1.2", "patient_id": "P1"}]
    first = api.post(body(pseudonym="", pseudonymize=True, studies=studies))
    second = api.post(body(pseudonym="", pseudonymize=True, studies=studies[:1]))

    one, two = pseudonyms_by_study(first.json()), pseudonyms_by_study(second.json())
    assert one["1.1"] == one["1.2"]
    assert two["1.1"] != one["1.1"]  # each job its own secret


@pytest.mark.django_db
def test_a_patient_keeps_the_pseudonym_the_project_recorded(api, nodes):
    project = Project.objects.get(name="Lung")
    project.claim_pseudonym("P1", "GIVEN-BY-HAND")

    automatic = api.post(
        body(
            pseudonym="",
            pseudonymize=True,
            project="Lung",
            studies=[{"study_uid": "1.1", "patient_id": "P1"}],
        )
    )
    another_patient = api.post(
        body(
            pseudonym="GIVEN-BY-HAND",
            project="Lung",
            studies=[{"study_uid": "1.2", "patient_id": "P2"}],
        )
    )

    assert pseudonyms_by_study(automatic.json()) == {"1.1": "GIVEN-BY-HAND"}
    assert another_patient.status_code == 400
    assert another_patient.json() == {
        "pseudonym": [
            "The pseudonym GIVEN-BY-HAND is already given to another patient in project Lung."
        ]
    }
    assert ExampleJob.objects.count() == 1


# -- against a real PACS ----------------------------------------------------------------------


@pytest.fixture
def orthanc_nodes(member, orthanc1, orthanc2):
    source, destination = server_for(orthanc1), server_for(orthanc2)
    grant(source, member.active_group, source=True)
    grant(destination, member.active_group, destination=True)
    return source, destination


@pytest.mark.integration
@pytest.mark.django_db
def test_pseudonymize_looks_up_the_patient_of_a_study_given_without_one(
    api, orthanc_nodes, orthanc1_studies
):
    study = orthanc1_studies[0]
    response = api.post(
        {
            "source": "ORTHANC1",
            "destination": "ORTHANC2",
            "studies": [{"study_uid": study.study_instance_uid}],
            "pseudonymize": True,
        }
    )

    assert response.status_code == 201, response.json()
    (task,) = response.json()["tasks"]
    assert task["patient_id"] == study.patient_id
    assert task["pseudonym"] not in ("", study.patient_id)
    assert (task["study_date"], task["modalities"]) == (
        f"{study.study_date[:4]}-{study.study_date[4:6]}-{study.study_date[6:]}",
        list(study.modalities),
    )


@pytest.mark.integration
@pytest.mark.django_db
def test_pseudonymize_refuses_a_study_the_source_does_not_hold(api, orthanc_nodes):
    response = api.post(
        {
            "source": "ORTHANC1",
            "destination": "ORTHANC2",
            "studies": [{"study_uid": "1.2.3.999"}],
            "pseudonymize": True,
        }
    )

    assert response.status_code == 400
    assert response.json() == {
        "studies": {
            "0": {
                "study_uid": [
                    "The source ORTHANC1 holds no study with this UID, so its patient (whose "
                    "pseudonym pseudonymize chooses) is unknown."
                ]
            }
        }
    }
    assert not ExampleJob.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_job_from_the_api_transfers_the_study_under_its_automatic_pseudonym(
    api, orthanc_nodes, empty_orthanc2, orthanc1_studies
):
    clear_task_queue()
    study = orthanc1_studies[0]
    # Series that may carry burnt-in names stay behind when pseudonymizing.
    kept = [s for s in study.series if s.modality not in excluded_modalities(pseudonymized=True)]
    response = api.post(
        {
            "source": "ORTHANC1",
            "destination": "ORTHANC2",
            "studies": [{"study_uid": study.study_instance_uid}],
            "pseudonymize": True,
        }
    )
    assert response.status_code == 201, response.json()
    job = ExampleJob.objects.get(pk=response.json()["id"])

    with WorkerProcess("dicom") as worker:
        deadline = time.monotonic() + 120
        while not job.is_finished:
            assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
            assert time.monotonic() < deadline, f"the job did not finish:\n{worker.log()}"
            time.sleep(0.2)
            job.refresh_from_db()

    task = job.tasks.get()
    assert job.status == JobStatus.SUCCESS, task.message
    found = list(DicomOperator(orthanc_nodes[1]).find_studies(PatientID=task.pseudonym))
    assert [str(answer.StudyInstanceUID) for answer in found] == [task.pseudonymized_study_uid]
    assert str(found[0].PatientName) == task.pseudonym
    assert task.pseudonymized_study_uid != study.study_instance_uid
    assert empty_orthanc2.count_instances() == sum(s.instance_count for s in kept) > 0
    assert not list(DicomOperator(orthanc_nodes[1]).find_studies(PatientID=study.patient_id))
