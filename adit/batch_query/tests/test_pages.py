"""The batch query pages as a user meets them: the form that creates nothing while a line has
a problem, the permission rules, the results page and the two exports read back."""

from __future__ import annotations

import csv
import datetime
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import load_workbook

from adit.accounts.tests.factories import UserFactory
from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.core.sheet_reader import Column, read_sheet
from adit.core.tests.factories import xlsx_bytes as xlsx

from .conftest import give, run_lines

pytestmark = pytest.mark.django_db

NEW = reverse("batch_query:job_create")


def _post(client, server, data: bytes, filename: str = "patients.xlsx", **fields):
    upload = SimpleUploadedFile(filename, data)
    form = {"source": server.pk, "project_name": "Lung study", "batch_file": upload, **fields}
    return client.post(NEW, form)


@pytest.fixture
def logged_in(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture
def server(researcher):
    from adit.core.tests.factories import grant, unreachable_server

    server = unreachable_server("Hospital PACS")
    grant(server, researcher.active_group, source=True)
    return server


def test_a_valid_file_creates_a_job_with_a_task_per_line_and_remembers_the_choices(
    logged_in, researcher, server
):
    data = xlsx(["PatientID", "Modality"], ["0012345", "CT"], [None, None], ["0099", "MR"])

    response = _post(logged_in, server, data, send_finished_mail="on")

    job = BatchQueryJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("batch_query:job_detail", args=[job.pk])
    assert [(t.line, t.patient_id, t.source_id) for t in job.tasks.order_by("line")] == [
        (2, "0012345", server.pk),
        (4, "0099", server.pk),
    ]
    assert (job.project_name, job.owner, job.send_finished_mail) == ("Lung study", researcher, True)
    researcher.refresh_from_db()
    assert researcher.preferences["batch_query"] == {
        "source": server.pk,
        "send_finished_mail": True,
    }
    page = logged_in.get(NEW).content.decode()
    assert f'value="{server.pk}"\n                                            selected' in page or (
        f'<option value="{server.pk}" selected' in " ".join(page.split())
    )


def test_every_problem_is_listed_and_nothing_is_created(logged_in, server):
    data = xlsx(
        ["PatientID", "PatientBirthDate", "Modality"],
        ["0012345", "31.02.1970", "CT"],
        [12345, "", "CT"],
        ["0099", "", ""],
    )

    response = _post(logged_in, server, data)

    page = " ".join(response.content.decode().split())
    assert response.status_code == 200
    assert "The batch file has 3 problems (listed below); nothing was created." in page
    rows = page.split('data-testid="batch-file-problem"')[1:]
    cells = [re.findall(r"<td[^>]*>\s*(.*?)\s*</td>", row.split("</tr>")[0]) for row in rows]
    assert [(line, column) for line, column, _ in cells] == [
        ("2", "PatientBirthDate"),
        ("3", "PatientID"),
        ("4", "Modality"),
    ]
    assert "Missing Modality." in page
    assert BatchQueryJob.objects.count() == 0 and BatchQueryTask.objects.count() == 0


def test_a_file_that_is_no_spreadsheet_gets_a_message_not_an_error_page(logged_in, server):
    response = _post(logged_in, server, b"\xd0\xcf\x11\xe0" + bytes(600), "secret.xlsx")

    assert response.status_code == 200
    assert "password-protected" in response.content.decode()
    assert BatchQueryJob.objects.count() == 0


def test_more_than_a_thousand_lines_only_for_staff(client, researcher, staff_user, server):
    from adit.core.tests.factories import grant

    text = "PatientID,Modality\n" + "".join(f"{n:05d},CT\n" for n in range(1001))
    client.force_login(researcher)
    response = _post(client, server, text.encode(), "many.csv")
    assert "More than 1000 rows; split the file." in response.content.decode()
    assert BatchQueryJob.objects.count() == 0

    give(staff_user, "add_batchqueryjob")
    grant(server, staff_user.active_group, source=True)
    client.force_login(staff_user)
    response = _post(client, server, text.encode(), "many.csv")
    assert response.status_code == 302
    assert BatchQueryJob.objects.get().tasks.count() == 1001


def test_the_sample_files_are_valid_batch_files(logged_in, server):
    for suffix in ("xlsx", "csv"):
        response = logged_in.get(reverse("batch_query:sample_file", args=[suffix]))
        assert response.status_code == 200
        assert f"batch_query_sample.{suffix}" in response["Content-Disposition"]
        content = b"".join(response.streaming_content)  # pyright: ignore[reportAttributeAccessIssue]
        created = _post(logged_in, server, content, f"sample.{suffix}")
        assert created.status_code == 302, created.content.decode()[-3000:]
    assert [job.tasks.count() for job in BatchQueryJob.objects.all()] == [5, 5]


def test_permissions_no_permission_is_403_someone_elses_job_is_404(client, member):
    client.force_login(member)  # without the batch query permission
    assert client.get(NEW).status_code == 403
    assert client.get(reverse("batch_query:sample_file", args=["csv"])).status_code == 403

    stranger = UserFactory(username="bob")
    job = BatchQueryJob.objects.create(owner=stranger, project_name="Not yours")
    give(member, "add_batchqueryjob", "view_batchqueryjob")
    for name in ("job_detail", "job_results", "job_export_xlsx", "job_export_csv"):
        assert client.get(reverse(f"batch_query:{name}", args=[job.pk])).status_code == 404
    assert client.get("/batch-query/sample.exe").status_code == 404
    assert client.get("/batch-query/sample.%0A").status_code == 404
    own = BatchQueryJob.objects.create(owner=member, project_name="Mine")
    results = reverse("batch_query:job_results", args=[own.pk])
    assert client.get(results, {"line": "²"}).status_code == 200  # shows all, no error


@pytest.mark.integration
def test_results_page_and_both_exports_list_every_line(
    logged_in, researcher, population_server, population
):
    study = population[0]
    lines = (
        "PatientID,Modality,Pseudonym\n"
        f"{study.patient_id},{study.modalities[0]},P-1\n"
        "NOBODY-0000,CT,P-2\n"
    )
    job, (found_line, failed_line) = run_lines(researcher, population_server, lines)
    found = list(found_line.results.all())
    assert found

    page = logged_in.get(reverse("batch_query:job_results", args=[job.pk])).content.decode()
    assert page.count('data-testid="result-row"') == len(found) + 1
    assert "No patient found with this PatientID." in page
    only_failed = logged_in.get(
        reverse("batch_query:job_results", args=[job.pk]), {"status": "FA"}
    ).content.decode()
    assert only_failed.count('data-testid="result-row"') == 1
    by_line = logged_in.get(
        reverse("batch_query:job_results", args=[job.pk]), {"line": "2"}
    ).content.decode()
    assert by_line.count('data-testid="result-row"') == len(found)

    response = logged_in.get(reverse("batch_query:job_export_xlsx", args=[job.pk]))
    assert f"batch_query_job_{job.pk}_results.xlsx" in response["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active  # pyright: ignore[reportAttributeAccessIssue]
    rows = list(sheet.iter_rows(values_only=True))  # type: ignore[union-attr]
    header = rows[0]
    assert header == (
        "Pseudonym", "PatientID", "PatientName", "BirthDate", "ModalitiesInStudy", "StudyDate",
        "StudyTime", "StudyDescription", "NumberOfStudyRelatedInstances", "AccessionNumber",
        "StudyInstanceUID", "Line", "Status", "Message",
    )  # fmt: skip
    records = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    assert [(r["Line"], r["Status"], r["PatientID"]) for r in records] == [
        *[(2, "Success", study.patient_id)] * len(found),
        (3, "Failure", "NOBODY-0000"),
    ]
    first = records[0]
    assert first["StudyInstanceUID"] == found[0].study_uid
    assert isinstance(first["StudyDate"], datetime.datetime)  # a date cell, not text
    assert first["StudyDate"].date() == found[0].study_date
    family, given = study.patient_name.split("^")
    assert first["PatientName"] == f"{family}, {given}"
    assert records[-1]["Message"] == "No patient found with this PatientID."
    assert records[-1]["StudyInstanceUID"] is None

    response = logged_in.get(reverse("batch_query:job_export_csv", args=[job.pk]))
    text = b"".join(response.streaming_content).decode("utf-8-sig")  # pyright: ignore[reportAttributeAccessIssue]
    csv_rows = list(csv.reader(io.StringIO(text)))
    assert tuple(csv_rows[0]) == header
    assert [row[1] for row in csv_rows[1:]] == [r["PatientID"] for r in records]
    assert csv_rows[1][5] == found[0].study_date.isoformat()

    # What a batch transfer reads from it, with the core's reader it will use.
    needed = [Column("PatientID", "id"), Column("StudyInstanceUID", "text"),
              Column("Pseudonym", "text")]  # fmt: skip
    for data, name in ((xlsx(*rows), "export.xlsx"), (text.encode(), "export.csv")):
        sheet_read = read_sheet(data, name, needed, ignore_other_columns=True)
        assert sheet_read.problems == []
        assert [
            (row.values["PatientID"], row.values["StudyInstanceUID"], row.values["Pseudonym"])
            for row in sheet_read.rows
        ][: len(found)] == [(study.patient_id, result.study_uid, "P-1") for result in found]
