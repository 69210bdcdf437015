"""Batch query jobs through the REST API as a script meets them: created from JSON rows or an
uploaded batch file with the page's rules and messages, refused as the page refuses, and the
results of a job that ran read back page by page and as the export files."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import load_workbook
from rest_framework.test import APIClient

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.core.jobs.processing import run_task
from adit.core.jobs.statuses import JobStatus
from adit.core.tests.factories import grant, server_for, unreachable_server
from adit.core.tests.factories import xlsx_bytes as xlsx
from adit.token_authentication.models import Token

from .conftest import give

pytestmark = pytest.mark.django_db

JOBS = "/api/batch-query-jobs/"


def _client(user, read_only: bool = False) -> APIClient:
    _, plain = Token.objects.create_token(user, "x", read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plain}")
    return client


@pytest.fixture
def server(researcher):
    server = unreachable_server("Hospital PACS")
    grant(server, researcher.active_group, source=True)
    return server


@pytest.fixture
def api(researcher) -> APIClient:
    return _client(researcher)


def _body(**fields) -> dict:
    return {"source": "Hospital PACS", "project_name": "Lung study", **fields}


def test_a_job_from_rows_has_a_task_per_row_and_is_started_as_the_page_starts_it(
    api, researcher, server
):
    rows = [
        {"PatientID": "0012345", "Modality": "CT", "From": "2023-01-01", "Until": "20231231"},
        {},  # skipped, as an empty line of a file, and counted in the line numbers
        {"patientname": "Doe, Jane", "PatientBirthDate": "03.04.1971", "Modality": "MR, ct"},
        {"PatientID": "0099", "AccessionNumber": "A1", "SeriesNumber": [1, 2], "Pseudonym": "P4"},
    ]

    response = api.post(
        JOBS, _body(rows=rows, project_description="Why", send_finished_mail=True), format="json"
    )

    assert response.status_code == 201, response.json()
    job = BatchQueryJob.objects.get()
    body = response.json()
    assert (body["id"], body["status"], body["project_name"]) == (job.pk, "PENDING", "Lung study")
    assert (job.owner, job.project_description, job.send_finished_mail) == (
        researcher,
        "Why",
        True,
    )
    assert [
        (t["line"], t["patient_id"], t["patient_name"], t["modalities"], t["source"])
        for t in body["tasks"]
    ] == [
        (2, "0012345", "", ["CT"], "Hospital PACS"),
        (4, "", "Doe^Jane", ["MR", "CT"], "Hospital PACS"),
        (5, "0099", "", [], "Hospital PACS"),
    ]
    first, second, third = body["tasks"]
    assert (first["study_date_start"], first["study_date_end"]) == ("2023-01-01", "2023-12-31")
    assert second["patient_birth_date"] == "1971-04-03"
    assert (third["series_numbers"], third["pseudonym"]) == ([1, 2], "P4")
    # Queued as a job created on the page is: each task waits in the queue.
    assert all(task.queued_job_id is not None for task in job.tasks.all())


@pytest.mark.parametrize("suffix", ["xlsx", "csv"])
def test_a_job_from_an_uploaded_batch_file(api, server, suffix):
    lines = [["PatientID", "Modality"], ["0012345", "CT"], ["0099", "MR"]]
    if suffix == "xlsx":
        data = xlsx(*lines)
    else:
        data = "".join(",".join(line) + "\n" for line in lines).encode()
    upload = SimpleUploadedFile(f"patients.{suffix}", data)

    # A server may also be named by its AE title.
    response = api.post(
        JOBS, {"source": "HOSPITAL PACS", "project_name": "Lung study", "file": upload}
    )

    assert response.status_code == 201, response.json()
    assert [(t["line"], t["patient_id"]) for t in response.json()["tasks"]] == [
        (2, "0012345"),
        (3, "0099"),
    ]
    assert BatchQueryTask.objects.count() == 2


def _page_problems(client, server, data: bytes) -> list[tuple[str, str, str]]:
    """The problems the web form lists for the file, as (line, column, message)."""
    form = {
        "source": server.pk,
        "project_name": "Lung study",
        "batch_file": SimpleUploadedFile("patients.xlsx", data),
    }
    page = client.post(reverse("batch_query:job_create"), form).content.decode()
    rows = page.split('data-testid="batch-file-problem"')[1:]
    cells = [re.findall(r"<td[^>]*>\s*(.*?)\s*</td>", row.split("</tr>")[0]) for row in rows]
    return [(line, column, message.replace("&#x27;", "'")) for line, column, message in cells]


def test_broken_rows_are_refused_with_the_problems_the_page_lists(api, client, researcher, server):
    lines = [
        ("PatientID", "PatientBirthDate", "Modality", "Pseudonym"),
        ("0012345", "31.02.1970", "CT", ""),
        ("00*1", "", "C-T", ""),
        ("0099", "", "", "P\\1"),
    ]
    rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    client.force_login(researcher)
    on_the_page = _page_problems(client, server, xlsx(*lines))

    response = api.post(JOBS, _body(rows=rows), format="json")

    assert response.status_code == 400
    body = response.json()
    problems = [(str(p["line"]), p["column"], p["message"]) for p in body["problems"]]
    assert problems == on_the_page
    assert [(line, column) for line, column, _ in problems] == [
        ("2", "PatientBirthDate"),
        ("3", "PatientID"),
        ("3", "Modality"),
        ("4", "Pseudonym"),
        ("4", "Modality"),
    ]
    assert ("4", "Modality", "Missing Modality.") in problems
    assert all(isinstance(problem["line"], int) for problem in body["problems"])
    assert body["rows"] == [
        "The rows have 5 problems (listed in problems); nothing was created. Correct them and "
        "send them again."
    ]
    assert BatchQueryJob.objects.count() == 0


def test_json_values_a_file_cannot_hold_are_refused_by_row_and_key(api, server):
    rows = [
        {"PatientID": 12345, "Modality": "CT"},
        {"PatientID": "0099", "Modality": ["CT"], "Colour": "red"},
    ]

    response = api.post(JOBS, _body(rows=rows), format="json")

    assert response.status_code == 400
    assert [(p["line"], p["column"]) for p in response.json()["problems"]] == [
        (2, "PatientID"),
        (3, "Colour"),
        (3, "Modality"),
    ]
    messages = [p["message"] for p in response.json()["problems"]]
    assert messages[0].startswith("Must be a string: an ID sent as a number may have lost")
    assert messages[1].startswith("Unknown column; the columns are: PatientID, PatientName")
    assert messages[2] == "Must be a string or a number."


def test_a_broken_file_gets_the_sheet_readers_message(api, server):
    upload = SimpleUploadedFile("secret.xlsx", b"\xd0\xcf\x11\xe0" + bytes(600))

    response = api.post(JOBS, _body(file=upload))

    assert response.status_code == 400
    assert response.json() == {
        "file": [
            "The file is password-protected or in the old Excel format (.xls): remove the "
            "password or save it as an Excel workbook (.xlsx), then upload it again."
        ]
    }


def test_lines_come_as_rows_or_as_a_file_not_both(api, server):
    upload = SimpleUploadedFile("patients.csv", b"PatientID,Modality\n0012345,CT\n")

    response = api.post(JOBS, _body(file=upload, rows="PatientID\n0099"))

    assert response.status_code == 400
    assert response.json() == {"rows": ["Send the lines either as rows or as a file, not both."]}
    assert BatchQueryJob.objects.count() == 0


def test_the_form_fields_and_the_lines_are_checked_together(api, server):
    response = api.post(JOBS, {"source": "Elsewhere", "project_name": ""}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "project_name": ["This field is required."],
        "source": ["There is no DICOM server or folder “Elsewhere” you may use as source."],
        "rows": [
            "Send the lines as rows (a JSON list of objects, one per line) or as a batch file "
            "(multipart, the field file)."
        ],
    }


def test_urgency_needs_its_permission(api, researcher, server):
    rows = [{"PatientID": "0012345", "Modality": "CT"}]

    refused = api.post(JOBS, _body(rows=rows, urgent=True), format="json")
    assert refused.status_code == 400
    assert refused.json() == {
        "urgent": ["Not available to you: your active group lacks the permission."]
    }

    give(researcher, "can_process_urgently")
    created = api.post(JOBS, _body(rows=rows, urgent=True), format="json")
    assert created.status_code == 201 and created.json()["urgent"] is True


def test_more_than_a_thousand_rows_only_for_staff(researcher, staff_user, server):
    rows = [{"PatientID": f"{n:05d}", "Modality": "CT"} for n in range(1001)]

    refused = _client(researcher).post(JOBS, _body(rows=rows), format="json")
    assert refused.status_code == 400
    assert refused.json()["problems"] == [
        {"line": 1002, "column": "", "message": "More than 1000 rows; split the file."}
    ]

    give(staff_user, "add_batchqueryjob")
    grant(server, staff_user.active_group, source=True)
    created = _client(staff_user).post(JOBS, _body(rows=rows), format="json")
    assert created.status_code == 201
    assert len(created.json()["tasks"]) == 1001


def test_without_the_permission_or_with_a_read_only_token_nothing_is_created(server):
    outsider = UserFactory(username="carol", groups=[GroupFactory(name="Kardiologie")])
    grant(server, outsider.active_group, source=True)
    rows = [{"PatientID": "0012345", "Modality": "CT"}]

    response = _client(outsider).post(JOBS, _body(rows=rows), format="json")
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "You do not have the permission batch_query.add_batchqueryjob in your active group "
        "(Kardiologie)."
    )

    give(outsider, "add_batchqueryjob")
    response = _client(outsider, read_only=True).post(JOBS, _body(rows=rows), format="json")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("This API token is read-only")
    assert BatchQueryJob.objects.count() == 0


# -- results -------------------------------------------------------------------------------


@pytest.fixture
def ran_job(api, researcher, orthanc1, orthanc1_studies):
    """A job of three lines run to its end at orthanc1: every study of a patient with several,
    one study by its accession number, and a patient the PACS does not know."""
    source = server_for(orthanc1)
    grant(source, researcher.active_group, source=True)
    patients = [study.patient_id for study in orthanc1_studies]
    first = next(s for s in orthanc1_studies if patients.count(s.patient_id) > 1)
    other = next(s for s in orthanc1_studies if s.patient_id != first.patient_id)
    modalities = sorted(
        {m for s in orthanc1_studies if s.patient_id == first.patient_id for m in s.modalities}
    )
    rows = [
        {"PatientID": first.patient_id, "Modality": ",".join(modalities)},
        {"PatientID": other.patient_id, "AccessionNumber": other.accession_number},
        {"PatientID": "NOBODY-0000", "Modality": "CT"},
    ]
    response = api.post(JOBS, _body(source="ORTHANC1", rows=rows), format="json")
    assert response.status_code == 201, response.json()
    job = BatchQueryJob.objects.get(pk=response.json()["id"])
    for task in job.tasks.all():
        run_task(None, task._meta.label_lower, task.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE, "the unknown patient fails its line"
    patient_studies = [s for s in orthanc1_studies if s.patient_id == first.patient_id]
    return job, patient_studies, other


@pytest.mark.integration
def test_the_results_of_a_job_that_ran_are_the_rows_of_its_export(api, ran_job):
    job, patient_studies, other = ran_job

    response = api.get(f"{JOBS}{job.pk}/results/")

    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert body["count"] == len(patient_studies) + 2 == len(results)
    assert set(results[0]) == {
        "Pseudonym", "PatientID", "PatientName", "BirthDate", "ModalitiesInStudy",
        "StudyDate", "StudyTime", "StudyDescription", "NumberOfStudyRelatedInstances",
        "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription",
        "SeriesNumber", "Line", "Status", "Message",
    }  # fmt: skip
    first_line = [row for row in results if row["Line"] == 2]
    assert {row["StudyInstanceUID"] for row in first_line} == {
        study.study_instance_uid for study in patient_studies
    }
    assert [(row["Line"], row["StudyInstanceUID"], row["Status"]) for row in results[-2:]] == [
        (3, other.study_instance_uid, "Success"),
        (4, "", "Failure"),
    ]
    assert results[-1]["Message"] == "No patient found with this PatientID."
    assert results[-2]["StudyDate"] == (
        f"{other.study_date[:4]}-{other.study_date[4:6]}-{other.study_date[6:]}"
    )

    # The same rows, in the same order, as the export the page links to.
    export = api.get(body["exports"]["csv"])
    assert export.status_code == 200
    exported = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))  # pyright: ignore[reportAttributeAccessIssue]
    assert [(row["Line"], row["StudyInstanceUID"]) for row in exported] == [
        (str(row["Line"]), row["StudyInstanceUID"]) for row in results
    ]
    workbook = api.get(body["exports"]["xlsx"])
    assert workbook.status_code == 200
    sheet = load_workbook(io.BytesIO(b"".join(workbook.streaming_content))).active  # pyright: ignore[reportAttributeAccessIssue]
    assert sheet is not None and sheet.max_row == len(results) + 1


@pytest.mark.integration
def test_the_results_filtered_by_line_and_status_and_paged(api, ran_job):
    job, patient_studies, _ = ran_job
    url = f"{JOBS}{job.pk}/results/"

    by_line = api.get(url, {"line": 3}).json()
    assert [row["Line"] for row in by_line["results"]] == [3]
    failed = api.get(url, {"status": "failure"}).json()
    assert [(row["Line"], row["Status"]) for row in failed["results"]] == [(4, "Failure")]
    page = api.get(url, {"limit": 1, "offset": 1}).json()
    assert (page["count"], len(page["results"])) == (len(patient_studies) + 2, 1)
    assert "offset=2" in page["next"]

    assert api.get(url, {"status": "DONE"}).json() == {
        "status": [
            "Unknown status DONE; one of PENDING, IN_PROGRESS, CANCELED, SUCCESS, WARNING, FAILURE."
        ]
    }
    assert api.get(url, {"line": "two"}).status_code == 400


@pytest.mark.integration
def test_another_users_results_are_not_found(ran_job):
    job, _, _ = ran_job
    stranger = UserFactory(username="bob", groups=[GroupFactory(name="Kardiologie")])
    give(stranger, "add_batchqueryjob", "view_batchqueryjob")

    client = _client(stranger)
    for path in ("results/", "results.xlsx/", "results.csv/"):
        assert client.get(f"{JOBS}{job.pk}/{path}").status_code == 404
    # A read-only token reads.
    owner = _client(job.owner, read_only=True)
    assert owner.get(f"{JOBS}{job.pk}/results/").status_code == 200


@pytest.mark.integration
def test_the_results_take_the_same_queries_however_many_rows_a_page_has(
    api, ran_job, django_assert_num_queries
):
    job, patient_studies, _ = ran_job
    url = f"{JOBS}{job.pk}/results/"
    assert len(patient_studies) > 1, "a line with several studies makes a page of many rows"

    # The site's settings (maintenance), the token and its last use, the job, the count and
    # the page: no query per row.
    with django_assert_num_queries(6):
        one = api.get(url, {"limit": 1})
    with django_assert_num_queries(6):
        every = api.get(url, {"limit": 1000})
    assert (len(one.json()["results"]), len(every.json()["results"])) == (
        1,
        len(patient_studies) + 2,
    )
