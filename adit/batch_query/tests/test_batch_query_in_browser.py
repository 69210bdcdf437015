"""A research assistant's batch query in a real Chromium: upload a file, watch the job to
Success, look at the results, download the export. The app runs under daphne and a real
worker, on the test database, against the population PACS."""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from playwright.sync_api import Page, expect

from adit.batch_query.models import BatchQueryJob, BatchQueryResult
from adit.core.tests.app_processes import WorkerProcess
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in
from adit.core.tests.factories import xlsx_bytes as xlsx

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_upload_a_file_watch_the_job_and_download_the_results(
    page: Page, researcher, population_server, population, tmp_path
):
    study = population[0]
    batch_file = tmp_path / "patients.xlsx"
    batch_file.write_bytes(
        xlsx(
            ["PatientID", "Modality", "Pseudonym"],
            [study.patient_id, ", ".join(study.modalities), "SUBJ-01"],
            [population[-1].patient_id, "XA", "SUBJ-02"],  # no angiography: nothing found
        )
    )
    app_server = AsgiServer()
    worker = WorkerProcess("dicom")
    try:
        worker.wait_until_ready()
        log_in(page, app_server.url)
        page.goto(app_server.url + "/batch-query/jobs/new/")

        page.get_by_test_id("help-button").click()
        expect(page.get_by_test_id("help-columns")).to_contain_text("SeriesNumber")
        page.get_by_role("button", name="Close").click()

        page.get_by_test_id("source").select_option(str(population_server.pk))
        page.get_by_test_id("project-name").fill("Lung cohort")
        page.get_by_test_id("batch-file").set_input_files(str(batch_file))
        page.get_by_test_id("create-job-button").click()

        expect(page.get_by_test_id("job-fields")).to_contain_text("Success", timeout=60_000)
        expect(page.get_by_test_id("task-table")).to_contain_text("0 studies found")
        page.get_by_test_id("results-link").click()
        rows = page.get_by_test_id("result-row")
        job = BatchQueryJob.objects.get()
        found = BatchQueryResult.objects.filter(job=job).count()
        assert found >= 1
        expect(rows).to_have_count(found + 1)
        expect(rows.first).to_contain_text(study.patient_id)
        expect(rows.last).to_contain_text("0 studies found")
        page.set_viewport_size({"width": 390, "height": 800})
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.set_viewport_size({"width": 1280, "height": 800})

        with page.expect_download() as download_info:
            page.get_by_test_id("export-xlsx-button").click()
        download = download_info.value
        assert download.suggested_filename == f"batch_query_job_{job.pk}_results.xlsx"
        sheet = load_workbook(io.BytesIO(open(download.path(), "rb").read())).active  # noqa: SIM115
        assert sheet is not None
        lines = [row for row in sheet.iter_rows(min_row=2, values_only=True)]
        assert [(row[0], row[1]) for row in lines] == [
            *[("SUBJ-01", study.patient_id)] * found,
            ("SUBJ-02", population[-1].patient_id),
        ]
    finally:
        worker.stop()
        app_server.stop()
