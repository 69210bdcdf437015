"""Whoever can store a study in a source PACS controls every value a search shows. Such values
must reach the page as text, run nothing, and never become a link or a selection they do not
safely name. In a real Chromium, against daphne and a real Orthanc holding hostile studies.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from pydicom import dcmread

from adit.core.demo.synthetic import generate_ct_series
from adit.core.models import DicomServer
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in
from adit.core.tests.factories import grant, server_for

from ..models import SelectiveTransferJob
from .conftest import give

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.django_db(transaction=True),
    # The hostile UID is no valid UI value; pydicom warns when it writes it, as it should.
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
]

BAD_UID = "1.2.3'+alert(document.domain)+'"
# Each value closes a JavaScript string, an attribute and an element, and carries a backslash
# (DICOM's value separator: it makes the value a multi-value).
PATIENT_ID = "P'\"<b>1"  # no backslash: this study stays usable
PATIENT_NAME = "O'Br\"ien<script>alert(2)</script>^Jane<img src=x onerror=alert(3)>"
DESCRIPTION = "</td><script>alert(4)</script>'\"\\x'+alert(5)+'"
OTHER_PATIENT_ID = "Q'\"><svg onload=alert(6)>\\2"


def _hostile_study(seed: int, patient_id: str, study_uid: str | None) -> list:
    instances = list(generate_ct_series(instances=2, rows=16, columns=16, seed=seed))
    for dataset in instances:
        dataset.PatientID = patient_id
        dataset.PatientName = PATIENT_NAME
        dataset.StudyDescription = DESCRIPTION
        dataset.StudyDate = "20240724"
        if study_uid is not None:
            dataset.StudyInstanceUID = study_uid
    return instances


@pytest.fixture
def hostile_source(researcher, empty_orthanc2) -> DicomServer:
    """ORTHANC2 holding three hostile studies: one with a script for a Study Instance UID (as
    Orthanc accepts it), one whose patient ID is a multi-value, one usable."""
    empty_orthanc2.upload(_hostile_study(1, PATIENT_ID, BAD_UID))
    empty_orthanc2.upload(_hostile_study(2, OTHER_PATIENT_ID, None))
    empty_orthanc2.upload(_hostile_study(3, PATIENT_ID, None))
    server = server_for(empty_orthanc2)
    grant(server, researcher.active_group, source=True, destination=True)
    return server


@pytest.fixture
def app_server(researcher):
    server = AsgiServer()
    yield server
    server.stop()


@pytest.fixture
def watched_page(page: Page):
    """The page, with every dialog, page error and console complaint recorded (a dialog is
    dismissed, so that a script that got through cannot block the test)."""
    seen: dict[str, list[str]] = {"dialogs": [], "errors": [], "console": []}

    def on_dialog(dialog) -> None:
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            seen["console"].append(message.text)

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", on_console)
    page.seen = seen  # type: ignore[attr-defined]
    return page


def test_hostile_pacs_values_are_shown_as_text_and_run_nothing(
    watched_page: Page, app_server, researcher, hostile_source, tmp_path
):
    page = watched_page
    give(researcher, "can_download_study")
    log_in(page, app_server.url)
    response = page.goto(app_server.url + "/selective-transfer/")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]

    page.get_by_test_id("source").select_option(str(hostile_source.pk))
    page.get_by_test_id("destination").select_option(str(hostile_source.pk))
    page.get_by_test_id("patient-id").fill("*")
    page.get_by_test_id("patient-id").press("Enter")
    rows = page.get_by_test_id("study-row")
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("search-message")).to_have_count(0)  # the search has ended

    for index in range(3):
        row = rows.nth(index)
        expect(row.get_by_test_id("patient-name")).to_have_text(
            "O'Br\"ien<script>alert(2)</script>, Jane<img src=x onerror=alert(3)>"
        )
        expect(row.get_by_test_id("description")).to_contain_text(DESCRIPTION)
    assert page.locator("tbody script, tbody img, tbody svg, tbody b").count() == 0

    bad_uid_row = rows.filter(has_text="is not a valid DICOM UID")
    expect(bad_uid_row.get_by_test_id("unusable")).to_have_text(
        f"Cannot be transferred or downloaded: the Study Instance UID “{BAD_UID}” is not a valid "
        "DICOM UID (digits and dots, at most 64)."
    )
    expect(bad_uid_row.get_by_role("checkbox")).to_have_count(0)
    expect(bad_uid_row.get_by_test_id("download-button")).to_have_count(0)

    multi_valued_row = rows.filter(has_text="contains a backslash")
    expect(multi_valued_row.get_by_test_id("patient-id")).to_have_text(OTHER_PATIENT_ID)
    expect(multi_valued_row.get_by_role("checkbox")).to_have_count(0)

    # The usable study, named by its hostile patient ID, downloads and transfers as it is.
    usable_row = rows.filter(has=page.get_by_role("checkbox"))
    expect(usable_row).to_have_count(1)
    expect(usable_row.get_by_test_id("patient-id")).to_have_text(PATIENT_ID)
    page.get_by_test_id("pseudonym").fill("SAFE-1")
    with page.expect_download() as download_info:
        usable_row.get_by_test_id("download-button").click()
    archive = tmp_path / "study.zip"
    download_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert len(names) == 2
        assert dcmread(io.BytesIO(zipped.read(names[0]))).PatientID == "SAFE-1"

    usable_row.get_by_role("checkbox").check()
    page.get_by_test_id("transfer-button").click()
    expect(page.get_by_test_id("transfer-message")).to_contain_text(
        "Successfully submitted transfer job"
    )
    task = SelectiveTransferJob.objects.get(owner=researcher).tasks.get()
    assert (task.patient_id, task.pseudonym) == (PATIENT_ID, "SAFE-1")

    seen = page.seen  # type: ignore[attr-defined]
    assert seen["dialogs"] == []
    assert seen["errors"] == []
    assert seen["console"] == []  # no CSP violation, no Alpine expression error
