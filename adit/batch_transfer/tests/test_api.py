"""Batch transfer jobs created through the REST API as a script meets them: from JSON rows or
an uploaded batch file, with the page's options, limits, rules and messages."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.batch_transfer.models import BatchTransferJob, Phase
from adit.core.jobs.statuses import JobStatus
from adit.core.models import DicomFolder, Project
from adit.core.tests.factories import grant, unreachable_server
from adit.core.tests.factories import xlsx_bytes as xlsx
from adit.token_authentication.models import Token

from .conftest import HEADER, csv_bytes, give

pytestmark = pytest.mark.django_db

JOBS = "/api/batch-transfer-jobs/"
STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.826.0.1.3680043.8.498.2"
SERIES_1 = "1.2.826.0.1.3680043.8.498.1.1"


def _client(user, read_only: bool = False) -> APIClient:
    _, plain = Token.objects.create_token(user, "x", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client


@pytest.fixture
def api(researcher) -> APIClient:
    return _client(researcher)


@pytest.fixture
def nodes(researcher, tmp_path):
    source = unreachable_server("Hospital PACS")
    grant(source, researcher.active_group, source=True)
    folder = DicomFolder.objects.create(name="Research share", path=str(tmp_path / "share"))
    grant(folder, researcher.active_group, destination=True)
    return source, folder


def _body(**fields) -> dict:
    return {"source": "Hospital PACS", "destination": "Research share", **fields}


def _row(patient_id: str, study_uid: str, series_uid: str = "", pseudonym: str = "") -> dict:
    return dict(zip(HEADER, (patient_id, study_uid, series_uid, pseudonym), strict=True))


def test_a_job_from_rows_with_the_transfer_options_has_a_task_per_study(api, researcher, nodes):
    project = Project.objects.create(name="Lung 2026")
    project.groups.add(researcher.active_group)
    rows = [
        _row("0012345", STUDY_A, SERIES_1, "SUBJ-01"),
        _row("0099", STUDY_B, "", "SUBJ-02"),
    ]

    response = api.post(
        JOBS,
        _body(
            rows=rows,
            project="Lung 2026",
            trial_protocol_id="T-7",
            archive_password="secret",
            convert_to_nifti=True,
            ethics_application_id="EK 123/24",
            check_first=True,
        ),
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    job = BatchTransferJob.objects.get()
    assert (body["id"], body["project"], body["trial_protocol_id"]) == (job.pk, "Lung 2026", "T-7")
    assert (body["encrypt_archive"], body["convert_to_nifti"]) == (True, True)
    assert [
        (t["patient_id"], t["study_uid"], t["series_uids"], t["pseudonym"], t["destination"])
        for t in body["tasks"]
    ] == [
        ("0012345", STUDY_A, [SERIES_1], "SUBJ-01", "Research share"),
        ("0099", STUDY_B, [], "SUBJ-02", "Research share"),
    ]
    assert [task.lines for task in job.tasks.order_by("pk")] == [[2], [3]]
    # Asked to, the studies are checked at the source first; the job waits for its start.
    assert (job.phase, job.status, job.ethics_application_id) == (
        Phase.CHECKING,
        JobStatus.UNVERIFIED,
        "EK 123/24",
    )


@pytest.mark.parametrize("suffix", ["xlsx", "csv"])
def test_a_job_from_an_uploaded_batch_file_started_without_the_check(api, nodes, suffix):
    lines = [_row("0012345", STUDY_A, "", "SUBJ-01"), _row("0099", STUDY_B, "", "SUBJ-02")]
    if suffix == "xlsx":
        data = xlsx(HEADER, *[list(line.values()) for line in lines])
    else:
        data = csv_bytes(*[list(line.values()) for line in lines])
    upload = SimpleUploadedFile(f"studies.{suffix}", data)

    response = api.post(JOBS, _body(file=upload, check_first="false"))

    assert response.status_code == 201, response.json()
    assert [t["study_uid"] for t in response.json()["tasks"]] == [STUDY_A, STUDY_B]
    job = BatchTransferJob.objects.get()
    assert (job.phase, job.status) == (Phase.STARTED, JobStatus.PENDING)
    assert all(task.queued_job_id is not None for task in job.tasks.all())


def test_a_scripts_job_starts_at_once_unless_it_asks_for_the_check(api, nodes):
    response = api.post(JOBS, _body(rows=[_row("0012345", STUDY_A, "", "SUBJ-01")]), format="json")

    assert response.status_code == 201, response.json()
    job = BatchTransferJob.objects.get()
    assert (job.phase, job.status) == (Phase.STARTED, JobStatus.PENDING)


def test_rows_of_a_batch_query_export_go_in_as_they_are(api, nodes):
    rows = [
        {**_row("0012345", STUDY_A, "", "SUBJ-01"), "Line": 2, "Status": "Success"},
        {**_row("0099", "", "", "SUBJ-02"), "Line": 3, "Status": "Failure"},  # found nothing
    ]

    response = api.post(JOBS, _body(rows=rows), format="json")

    assert response.status_code == 201, response.json()
    assert [t["study_uid"] for t in response.json()["tasks"]] == [STUDY_A]
    assert BatchTransferJob.objects.get().skipped_lines == [3]


def _page_problems(client, nodes, data: bytes) -> list[tuple[str, str, str]]:
    """The problems the web form lists for the file, as (line, column, message)."""
    source, folder = nodes
    form = {
        "source": source.pk,
        "destination": folder.pk,
        "batch_file": SimpleUploadedFile("studies.csv", data),
    }
    page = client.post(reverse("batch_transfer:job_create"), form).content.decode()
    rows = page.split('data-testid="batch-file-problem"')[1:]
    cells = [re.findall(r"<td[^>]*>\s*(.*?)\s*</td>", row.split("</tr>")[0]) for row in rows]
    return [(line, column, message.replace("&#x27;", "'")) for line, column, message in cells]


def test_broken_rows_are_refused_with_the_problems_the_page_lists(api, client, researcher, nodes):
    lines = [
        ("0012345", "1.2.3.abc", "", "S1"),
        ("", STUDY_A, "", "S2"),
        ("0099", STUDY_B, "", ""),
    ]
    client.force_login(researcher)
    on_the_page = _page_problems(client, nodes, csv_bytes(*lines))

    response = api.post(JOBS, _body(rows=[_row(*line) for line in lines]), format="json")

    assert response.status_code == 400
    body = response.json()
    problems = [(str(p["line"]), p["column"], p["message"]) for p in body["problems"]]
    assert problems == on_the_page
    assert [(line, column) for line, column, _ in problems] == [
        ("2", "StudyInstanceUID"),
        ("3", "PatientID"),
        ("4", "Pseudonym"),
    ]
    assert problems[1][2] == "This field is required."
    assert problems[2][2] == "You are only allowed to transfer pseudonymized."
    assert body["rows"][0].startswith("The rows have 3 problems (listed in problems)")
    assert BatchTransferJob.objects.count() == 0


def test_the_whole_file_rules_and_the_line_limit_hold_for_rows(api, nodes):
    conflicting = [_row("0012345", STUDY_A, "", "S1"), _row("0012345", STUDY_B, "", "S9")]
    response = api.post(JOBS, _body(rows=conflicting), format="json")
    assert response.json()["problems"] == [
        {
            "line": 3,
            "column": "Pseudonym",
            "message": "Same Patient ID 0012345 can't have different pseudonyms (line 2 has S1).",
        }
    ]

    many = [_row(f"P{n}", f"1.2.3.{n}", "", f"S{n}") for n in range(501)]
    response = api.post(JOBS, _body(rows=many), format="json")
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {"line": 502, "column": "", "message": "More than 500 rows; split the file."}
    ]
    assert BatchTransferJob.objects.count() == 0


def test_a_broken_file_gets_the_sheet_readers_message(api, nodes):
    upload = SimpleUploadedFile("studies.csv", "PatientID\nMüller\n".encode("latin-1"))

    response = api.post(JOBS, _body(file=upload))

    assert response.status_code == 400
    assert response.json() == {
        "file": [
            "The CSV file is not in UTF-8 (Excel's 'CSV UTF-8' format); save it as such and "
            "upload it again."
        ]
    }


def test_the_options_are_checked_as_on_the_page(api, researcher, nodes):
    server = unreachable_server("Research PACS")
    grant(server, researcher.active_group, destination=True)
    rows = [_row("0012345", STUDY_A, "", "S1")]

    to_a_server = api.post(
        JOBS, _body(rows=rows, destination="RESEARCH PACS", convert_to_nifti=True), format="json"
    )
    assert to_a_server.json() == {
        "convert_to_nifti": ["NIfTI conversion only works for folder destinations."]
    }
    nowhere = api.post(JOBS, {"source": "Hospital PACS", "rows": rows}, format="json")
    assert nowhere.json() == {"destination": ["Choose where the studies go."]}
    Project.objects.create(name="Someone else's")
    not_ours = api.post(JOBS, _body(rows=rows, project="Someone else's"), format="json")
    assert not_ours.json() == {"project": ["There is no project “Someone else's” you may choose."]}
    assert BatchTransferJob.objects.count() == 0


def test_a_pseudonym_the_project_gave_another_patient_is_refused(api, researcher, nodes):
    project = Project.objects.create(name="Trial")
    project.groups.add(researcher.active_group)
    project.claim_pseudonym("OTHER-1", "S1")

    response = api.post(
        JOBS, _body(rows=[_row("0012345", STUDY_A, "", "S1")], project="Trial"), format="json"
    )

    assert response.status_code == 400
    [message] = response.json()["non_field_errors"]
    assert "S1" in message
    assert BatchTransferJob.objects.count() == 0


def test_without_the_permission_or_with_a_read_only_token_nothing_is_created(nodes):
    outsider = UserFactory(username="carol", groups=[GroupFactory(name="Radiologie")])
    source, folder = nodes
    grant(source, outsider.active_group, source=True)
    grant(folder, outsider.active_group, destination=True)
    body = _body(rows=[_row("0012345", STUDY_A, "", "S1")])

    response = _client(outsider).post(JOBS, body, format="json")
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "You do not have the permission batch_transfer.add_batchtransferjob in your active "
        "group (Radiologie)."
    )

    give(outsider, "add_batchtransferjob")
    response = _client(outsider, read_only=True).post(JOBS, body, format="json")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("This API token is read-only")
    assert BatchTransferJob.objects.count() == 0
