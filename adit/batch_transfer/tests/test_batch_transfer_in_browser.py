"""A data manager's batch transfer in a real Chromium: upload a sheet, read what the check
found at the source, upload the corrected sheet, start the transfer and watch it to Success.
The app runs under daphne and a real worker, on the test database, against real Orthancs."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in

from .conftest import csv_bytes

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_upload_check_correct_start_and_watch_to_success(
    page: Page, researcher, source_server, destination_server, orthanc1_studies, tmp_path
):
    clear_task_queue()
    first, second = orthanc1_studies[0], orthanc1_studies[3]
    wrong = tmp_path / "studies.csv"
    wrong.write_bytes(
        csv_bytes(
            [first.patient_id, first.study_instance_uid, "", "LUNG-001"],
            ["12345678", second.study_instance_uid, "", "LUNG-002"],  # a typo in the ID
        )
    )
    corrected = tmp_path / "corrected.csv"
    corrected.write_bytes(
        csv_bytes(
            [first.patient_id, first.study_instance_uid, "", "LUNG-001"],
            [second.patient_id, second.study_instance_uid, "", "LUNG-002"],
        )
    )
    app_server = AsgiServer()
    worker = WorkerProcess("dicom")
    try:
        worker.wait_until_ready()
        log_in(page, app_server.url)
        page.goto(app_server.url + "/batch-transfer/jobs/new/")
        page.get_by_test_id("source").select_option(str(source_server.pk))
        page.get_by_test_id("destination").select_option(str(destination_server.pk))
        page.get_by_test_id("new_project_name").fill("Lung screening 2026")
        page.get_by_test_id("ethics_application_id").fill("EK 123/26")  # required by default
        expect(page.get_by_test_id("check_first")).to_be_checked()
        page.get_by_test_id("batch_file").set_input_files(str(wrong))
        page.get_by_test_id("create-job-button").click()

        panel = page.get_by_test_id("check-panel")
        expect(panel).to_contain_text("1 found", timeout=60_000)
        expect(panel).to_contain_text("1 with a patient mismatch")
        expect(page.get_by_test_id("task-table")).to_contain_text(f"as {second.patient_id}")

        page.get_by_test_id("corrected-file").set_input_files(str(corrected))
        with page.expect_response(lambda response: "/progress/" in response.url):
            pass  # the panel refreshes meanwhile: the chosen file must stay chosen
        page.get_by_test_id("upload-corrected-file").click()
        expect(page.get_by_role("alert")).to_contain_text("1 of them are checked now")
        expect(panel).to_contain_text("2 found", timeout=60_000)

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("start-transfer").click()
        expect(page.get_by_role("alert")).to_contain_text("The transfer of 2 studies was started.")
        expect(page.get_by_test_id("job-fields")).to_contain_text("Success", timeout=90_000)
        expect(page.get_by_test_id("job-message")).to_contain_text("All tasks succeeded.")
        expect(page.get_by_test_id("check-panel")).to_have_count(0)
        table = page.get_by_test_id("task-table")
        expect(table).to_contain_text("LUNG-001")
        expect(table).to_contain_text("LUNG-002")
        expect(page.get_by_test_id("job-fields")).to_contain_text("Lung screening 2026")
        expect(page.get_by_test_id("job-ethics")).to_have_text("EK 123/26")
        page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
    finally:
        worker.stop()
        app_server.stop()
