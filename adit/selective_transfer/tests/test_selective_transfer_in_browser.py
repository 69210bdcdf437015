"""The first complete user flow, in a real Chromium: search a PACS, pick a study, transfer it,
watch the job to Success, find the study (pseudonymized as asked) at the destination.

The app runs under daphne (HTTP + WebSocket) and a real worker, both on the test database.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pydicom import dcmread

from adit.core.dicom.operator import DicomOperator
from adit.core.models import DicomServer
from adit.core.tests.app_processes import WorkerProcess
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in
from adit.core.tests.factories import grant, server_for

from .conftest import give

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 800)}
SCREENSHOTS = os.environ.get("ADIT_SCREENSHOTS_DIR")


@pytest.fixture
def app_server(researcher):
    server = AsgiServer()
    yield server
    server.stop()


@pytest.fixture
def worker(researcher):
    with WorkerProcess("dicom") as worker:
        worker.wait_until_ready()
        yield worker


def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    for device, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=folder / f"{name}-{device}.png", full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            f"{name} overflows sideways at {width} px"
        )
    page.set_viewport_size({"width": 1280, "height": 800})


def _search(page: Page, source: DicomServer, destination, patient_id: str) -> None:
    page.get_by_test_id("source").select_option(str(source.pk))
    page.get_by_test_id("destination").select_option(str(destination.pk))
    page.get_by_test_id("patient-id").fill(patient_id)
    page.get_by_test_id("patient-id").press("Enter")


@pytest.mark.parametrize("kind", ["c-get", "c-move", "dicomweb"])
def test_a_researcher_transfers_a_study_pseudonymized_and_watches_it_arrive(
    kind,
    page: Page,
    receiver,
    researcher,
    source_server,
    destination_server,
    orthanc1,
    orthanc1_studies,
    tmp_path,
):
    server_for(orthanc1, kind=kind)  # the source, reachable as this kind of PACS
    host, port = receiver.channel_address
    channel = {"FILE_CHANNEL_HOST": host, "FILE_CHANNEL_PORT": str(port)}
    app_server = AsgiServer()
    worker = WorkerProcess("dicom", env=channel)
    try:
        worker.wait_until_ready()
        _transfer_and_watch(page, app_server, source_server, destination_server, orthanc1_studies)
        if kind == "c-get":
            _screenshot(page, "job", tmp_path)
    finally:
        worker.stop()
        app_server.stop()


def _transfer_and_watch(page, app_server, source_server, destination_server, orthanc1_studies):
    study = orthanc1_studies[0]
    others = [item for item in orthanc1_studies if item.patient_id == study.patient_id]
    log_in(page, app_server.url)
    page.goto(app_server.url + "/selective-transfer/")
    _search(page, source_server, destination_server, study.patient_id)

    rows = page.get_by_test_id("study-row")
    expect(rows).to_have_count(len(others))
    page.get_by_test_id("study-row").filter(has_text=study.study_date[:4]).first.get_by_role(
        "checkbox"
    ).check()
    page.get_by_test_id("pseudonym").fill("SUBJ-0815")
    page.get_by_test_id("transfer-button").click()
    expect(page.get_by_test_id("transfer-message")).to_contain_text(
        "Successfully submitted transfer job"
    )

    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-fields")).to_contain_text("Success", timeout=60_000)

    arrived = list(DicomOperator(destination_server).find_studies(PatientID="SUBJ-0815"))
    assert len(arrived) == 1
    assert str(arrived[0].PatientName) == "SUBJ-0815"
    assert str(arrived[0].StudyInstanceUID) not in {item.study_instance_uid for item in others}


def test_pseudonym_is_required_and_foreign_nodes_are_not_offered(
    page: Page, app_server, researcher, source_server, destination_server, orthanc2
):
    foreign = server_for(orthanc2, name="Other department", ae_title="OTHERDEPT")
    grant(foreign, researcher.groups.exclude(pk=researcher.active_group_id).first(), source=True)
    log_in(page, app_server.url)
    page.goto(app_server.url + "/selective-transfer/")

    source_options = page.get_by_test_id("source").locator("option").all_inner_texts()
    assert any("ORTHANC1" in option for option in source_options)
    assert not any("Other department" in option for option in source_options)

    page.get_by_test_id("destination").select_option(str(destination_server.pk))
    expect(page.get_by_label("Archive password")).to_be_hidden()  # folders only
    page.get_by_test_id("transfer-button").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("This field is required.")


def test_unpseudonymized_transfer_to_a_folder_with_the_permission(
    page: Page,
    app_server,
    worker,
    researcher,
    source_server,
    destination_folder,
    orthanc1_studies,
):
    give(researcher, "can_transfer_unpseudonymized")
    study = orthanc1_studies[-1]
    log_in(page, app_server.url)
    page.goto(app_server.url + "/selective-transfer/")
    _search(page, source_server, destination_folder, study.patient_id)
    expect(page.get_by_label("Archive password")).to_be_visible()
    expect(page.get_by_test_id("study-row").first).to_be_visible()
    page.locator(f'input[value$="{study.study_instance_uid}"]').check()
    page.get_by_test_id("transfer-button").click()
    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-fields")).to_contain_text("Success", timeout=60_000)

    files = list(Path(destination_folder.path).rglob("*.dcm"))
    assert len(files) == study.instance_count  # unpseudonymized: nothing is left out
    patient_folders = {file.relative_to(destination_folder.path).parts[1] for file in files}
    assert patient_folders == {study.patient_id}


def test_search_page_layout(page: Page, app_server, source_server, destination_server, tmp_path):
    log_in(page, app_server.url)
    page.goto(app_server.url + "/selective-transfer/")
    _search(page, source_server, destination_server, "*")
    expect(page.get_by_test_id("study-row").first).to_be_visible()
    _screenshot(page, "search", tmp_path)
    page.get_by_test_id("help-button").click()
    expect(page.get_by_role("dialog")).to_contain_text("Pseudonym")


def test_a_study_downloads_as_zip_file_by_file(
    page: Page,
    app_server,
    researcher,
    source_server,
    destination_server,
    orthanc1_studies,
    tmp_path,
):
    give(researcher, "can_download_study")
    study = orthanc1_studies[0]
    log_in(page, app_server.url)
    page.goto(app_server.url + "/selective-transfer/")
    _search(page, source_server, destination_server, study.patient_id)
    page.get_by_test_id("pseudonym").fill("DL-1")
    row = page.locator("tr", has=page.locator(f'input[value$="{study.study_instance_uid}"]'))
    with page.expect_download() as download_info:
        row.get_by_test_id("download-button").click()
    archive = tmp_path / "study.zip"
    download_info.value.save_as(archive)

    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        kept = [series for series in study.series if series.modality not in ("SR", "PR")]
        assert len(names) == sum(series.instance_count for series in kept)
        assert all(name.startswith("DL-1/") and name.endswith(".dcm") for name in names)
        for name in names:
            dataset = dcmread(io.BytesIO(zipped.read(name)))
            assert dataset.PatientID == "DL-1"
            assert study.patient_id not in name
