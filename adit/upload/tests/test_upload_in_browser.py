"""A study nurse uploads a patient's CD export in a real Chromium: the page reads the folder,
shows what it holds, pseudonymizes every file in the browser and sends it to a real Orthanc or
a folder, where the test reads what arrived. The app runs under daphne on the test database.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, Route, expect
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pydicom.valuerep import PersonName

from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.browser import log_in
from adit.core.tests.factories import grant, unreachable_server
from adit.core.transfer.pseudonymizer import (
    Pseudonymizer,
    _derive_seed,
    deidentification_problems,
    profile_for_browsers,
)

from .cd_folders import (
    MUELLER,
    SCHULZ,
    CdFolder,
    Patient,
    Series,
    pydicom_file,
    write_cd_folder,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 800)}
SCREENSHOTS = os.environ.get("ADIT_SCREENSHOTS_DIR")
PSEUDONYM = "LUNG-007"
FINISHED = 60_000  # ms: a whole upload, on a slow CI machine


@pytest.fixture(scope="module")
def app_server(django_db_setup, django_db_blocker) -> Iterator[AsgiServer]:
    """ADIT served by daphne on the test database, for all tests of the module."""
    server = AsgiServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def upload_page(page: Page, app_server, researcher) -> Iterator[Page]:
    """The upload page, logged in as alice; fails the test on any script error (a script the
    Content-Security-Policy refuses, say)."""
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        # Answers with an error status (a refused file) are the page's business.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", note)
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, app_server.url)
    page.goto(app_server.url + "/upload/jobs/new/")
    expect(page.get_by_test_id("drop-zone")).to_be_visible()
    yield page
    assert not errors, f"{errors}\n{app_server.log()[-3000:]}"


def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    for device, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=folder / f"upload-{name}-{device}.png", full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            f"{name} overflows sideways at {width} px"
        )
    page.set_viewport_size({"width": 1280, "height": 800})


def _choose(page: Page, folder: Path, pseudonym: str, destination, project=None) -> None:
    page.get_by_test_id("pseudonym").fill(pseudonym)
    page.get_by_test_id("destination").select_option(str(destination.pk))
    if project is not None:
        page.get_by_test_id("project").select_option(str(project.pk))
    page.get_by_test_id("choose-folder").set_input_files(folder)
    expect(page.get_by_test_id("summary")).to_be_visible()


def _upload(page: Page) -> None:
    page.get_by_test_id("upload-button").click()
    expect(page.get_by_test_id("upload-message")).to_be_visible(timeout=FINISHED)


def _texts(dataset: Dataset):
    """Every value of every element as text: file meta, nested items and private ones too."""
    meta = dataset.file_meta if hasattr(dataset, "file_meta") else Dataset()
    for element in [*meta.iterall(), *dataset.iterall()]:
        if element.VR == "SQ":
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            if isinstance(value, bytes):
                yield value.decode("latin-1")
            elif value is not None:
                yield str(value)


def _assert_nothing_identifies(data: bytes, patient: Patient, **trial: str) -> None:
    dataset = dcmread(DicomBytesIO(data))
    assert str(dataset.PatientID) == PSEUDONYM
    assert str(dataset.PatientName) == PSEUDONYM
    assert not dataset.get("PatientBirthDate")
    texts = " | ".join(_texts(dataset)).lower()
    raw = data.lower()
    for value in patient.identifying:
        assert value.lower() not in texts, f"{value!r} is still in {dataset.SOPInstanceUID}"
        for encoding in ("utf-8", "latin-1", "iso2022_jp"):
            try:
                encoded = value.lower().encode(encoding)
            except UnicodeEncodeError:
                continue
            assert encoded not in raw, f"{value!r} is in the file's bytes ({encoding})"
    assert not [element.tag for element in dataset.iterall() if element.tag.is_private]
    assert deidentification_problems(dataset, PSEUDONYM, **trial) == []


def _assert_uids_consistent(datasets: Collection[Dataset], cd: CdFolder) -> None:
    """One study, the series as in the folder, every UID new."""
    assert {str(dataset.StudyInstanceUID) for dataset in datasets} != {cd.study_uid}
    assert len({str(dataset.StudyInstanceUID) for dataset in datasets}) == 1
    arrived = Counter(str(dataset.SeriesInstanceUID) for dataset in datasets)
    sent = Counter(cd.series_of_file.values())
    assert sorted(arrived.values()) == sorted(sent.values())
    assert not set(arrived) & set(sent)
    for dataset in datasets:
        assert str(dataset.SOPInstanceUID).startswith("2.25.")
        assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID


def test_a_nurse_uploads_a_cd_to_the_research_pacs(
    destination_server, empty_orthanc2, upload_page: Page, tmp_path
):
    cd = write_cd_folder(tmp_path / "CD")
    page = upload_page
    _screenshot(page, "empty", tmp_path)
    _choose(page, cd.root, PSEUDONYM, destination_server)

    expect(page.get_by_test_id("summary-patients")).to_have_text(
        "Müller^Jürgen^Karl (ID 0012345678, born 1961-04-12)"
    )
    studies = page.get_by_test_id("summary-studies").get_by_role("listitem")
    expect(studies).to_have_count(1)
    expect(studies).to_contain_text("CT Thorax Müller Jürgen · CT, MR · 4 series, 7 files")
    expect(page.get_by_test_id("summary-series")).to_have_text("4 series")
    expect(page.get_by_test_id("summary-modalities")).to_have_text("CT, MR")
    expect(page.get_by_test_id("summary-files")).to_contain_text("7 DICOM files")
    expect(page.get_by_test_id("summary-skipped")).to_contain_text("3 files (not DICOM")
    expect(page.get_by_test_id("refusal")).to_be_hidden()
    _screenshot(page, "summary", tmp_path)

    _upload(page)
    expect(page.get_by_test_id("upload-message")).to_contain_text(
        "Upload finished: 7 stored, 3 skipped (not DICOM)."
    )
    expect(page.get_by_test_id("progress-text")).to_contain_text("7 of 7 files")
    expect(page.get_by_test_id("file-errors")).to_be_hidden()
    _screenshot(page, "finished", tmp_path)

    (study_uid,) = empty_orthanc2.list_study_uids()
    files = empty_orthanc2.study_files(study_uid)
    assert len(files) == 7
    for data in files:
        _assert_nothing_identifies(data, MUELLER)
    datasets = [dcmread(DicomBytesIO(data)) for data in files]
    _assert_uids_consistent(datasets, cd)
    assert sorted(dataset.PixelData for dataset in datasets) == sorted(cd.pixel_data)
    syntaxes = {str(dataset.file_meta.TransferSyntaxUID) for dataset in datasets}
    assert {"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"} <= syntaxes  # RLE, JPEG 2000

    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-fields")).to_contain_text("Success")
    expect(page.get_by_test_id("job-pseudonym")).to_have_text(PSEUDONYM)
    expect(page.get_by_test_id("job-files-skipped")).to_have_text("3")


def _folder_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_two_uploads_of_a_project_to_a_folder_share_their_uids(
    destination_folder, project, upload_page: Page, tmp_path
):
    cd = write_cd_folder(tmp_path / "CD")
    share = Path(destination_folder.path)
    page = upload_page
    page.get_by_test_id("trial_protocol_id").fill("LUNG-1")
    page.get_by_test_id("trial_protocol_name").fill("Lung screening")
    _choose(page, cd.root, "LUNG\\007", destination_folder, project)
    page.get_by_test_id("upload-button").click()
    expect(page.locator("[data-error-for=pseudonym]")).to_have_text(
        "A pseudonym must not contain a backslash (DICOM's value separator)."
    )
    expect(page.get_by_test_id("pseudonym")).to_have_class(re.compile("is-invalid"))
    page.get_by_test_id("pseudonym").fill(PSEUDONYM)
    _upload(page)
    expect(page.locator("[data-error-for=pseudonym]")).to_be_hidden()
    expect(page.get_by_test_id("upload-message")).to_contain_text("Upload finished: 7 stored")
    first = _folder_files(share)
    assert len(first) == 7
    for path in first:
        assert "ller" not in str(path.relative_to(share)).lower()
        _assert_nothing_identifies(
            path.read_bytes(),
            MUELLER,
            trial_protocol_id="LUNG-1",
            trial_protocol_name="Lung screening",
        )
    datasets = [dcmread(path) for path in first]
    _assert_uids_consistent(datasets, cd)
    dataset = datasets[0]
    assert dataset.ClinicalTrialProtocolID == "LUNG-1"
    assert dataset.ClinicalTrialProtocolName == "Lung screening"
    assert dataset.PatientComments.startswith(f"Project:LUNG-1 Subject:{PSEUDONYM} Session:")
    assert dataset.PatientAge  # from the birth date, which is gone

    page.get_by_test_id("clear-button").click()
    expect(page.get_by_test_id("summary")).to_be_hidden()
    page.get_by_test_id("choose-folder").set_input_files(cd.root)
    _upload(page)
    expect(page.get_by_test_id("upload-message")).to_contain_text("Upload finished: 7 stored")
    second = [path for path in _folder_files(share) if path not in first]
    assert len(second) == 7
    uids = {
        tuple(sorted({str(dcmread(path).StudyInstanceUID) for path in files}))
        for files in (first, second)
    }
    assert len(uids) == 1, "the project's two uploads gave the study different UIDs"


def test_files_of_two_patients_are_refused_and_broken_ones_listed(
    destination_folder, upload_page: Page, tmp_path
):
    root = tmp_path / "two"
    write_cd_folder(root / "a", MUELLER, series=[Series("CT_small.dcm", "CT", 1, "ISO_IR 100")])
    write_cd_folder(root / "b", SCHULZ, series=[Series("MR_small.dcm", "MR", 1, "ISO_IR 192")])
    ct = (root / "a" / "DICOM").rglob("IM*").__next__().read_bytes()
    (root / "cut_off.dcm").write_bytes(ct[: len(ct) - 500])
    shutil.copyfile(pydicom_file("image_dfl.dcm"), root / "deflated.dcm")
    page = upload_page
    _choose(page, root, PSEUDONYM, destination_folder)

    expect(page.get_by_test_id("refusal")).to_have_text(
        "Upload refused: the files belong to 2 patients. Upload the files of one patient at a time."
    )
    patients = page.get_by_test_id("summary-patients")
    expect(patients).to_contain_text("Müller^Jürgen^Karl (ID 0012345678")
    expect(patients).to_contain_text("Schulz^Erika (ID 0099887766")
    expect(page.get_by_test_id("upload-button")).to_be_disabled()
    unreadable = page.get_by_test_id("summary-unreadable")
    expect(unreadable).to_contain_text("2 files")
    expect(unreadable).to_contain_text("cut_off.dcm: The file is cut off in its pixel data")
    expect(unreadable).to_contain_text("deflated.dcm: Its data set is deflated")
    expect(page.get_by_test_id("summary-skipped")).to_contain_text("6 files")
    _screenshot(page, "refused", tmp_path)

    page.get_by_test_id("clear-button").click()
    expect(page.get_by_test_id("summary")).to_be_hidden()
    expect(page.get_by_test_id("upload-button")).to_be_disabled()

    # Files dropped on the page, not chosen.
    dropped = page.evaluate_handle(
        """([dicom, text]) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(dicom), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], "IM00000"));
            transfer.items.add(new File([text], "README.TXT"));
            return transfer;
        }""",
        [base64.b64encode(ct).decode(), "CD of a patient"],
    )
    page.get_by_test_id("drop-zone").dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.get_by_test_id("summary-files")).to_contain_text("1 DICOM file")
    expect(page.get_by_test_id("summary-skipped")).to_contain_text("1 file (not DICOM")
    expect(page.get_by_test_id("refusal")).to_be_hidden()
    expect(page.get_by_test_id("upload-button")).to_be_enabled()


def test_stop_ends_the_upload_and_the_job_says_canceled(
    destination_folder, upload_page: Page, tmp_path
):
    cd = write_cd_folder(tmp_path / "CD", copies=5)  # 35 files
    let_through = 4
    passed: list[Route] = []
    held: list[Route] = []

    def hold_after_the_first_files(route: Route) -> None:
        if len(passed) < let_through:
            passed.append(route)
            route.continue_()
        else:
            held.append(route)

    page = upload_page
    page.route("**/upload/jobs/*/files/", hold_after_the_first_files)
    _choose(page, cd.root, PSEUDONYM, destination_folder)
    page.get_by_test_id("upload-button").click()
    expect(page.get_by_test_id("progress-text")).to_contain_text(f"{let_through} of 35 files")
    page.get_by_test_id("stop-button").click()

    expect(page.get_by_test_id("upload-message")).to_contain_text(
        f"Upload stopped: {let_through} stored, 3 skipped (not DICOM), 31 not sent."
    )
    for route in held:
        try:
            route.abort()
        except Exception:  # noqa: BLE001 - the page aborted the request itself
            pass
    assert len(_folder_files(Path(destination_folder.path))) == let_through
    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-fields")).to_contain_text("Canceled")


def test_a_destination_that_fails_three_files_in_a_row_stops_the_upload(
    researcher, upload_page: Page, tmp_path
):
    closed = unreachable_server()
    grant(closed, researcher.active_group, destination=True)
    upload_page.reload()
    cd = write_cd_folder(tmp_path / "CD")
    page = upload_page
    _choose(page, cd.root, PSEUDONYM, closed)
    _upload(page)
    # Three at a time: the files sent before the third failure came back failed too.
    expect(page.get_by_test_id("upload-message")).to_have_text(
        re.compile(r"Upload failed: [3-5] not taken by the destination, 3 skipped \(not DICOM\)\.")
    )
    errors = page.get_by_test_id("file-errors")
    # Which files failed depends on the order the three requests at a time come back in.
    expect(errors).to_contain_text(
        re.compile(r"IM\d{5}: Closed cannot receive data: enable C-STORE or STOW-RS\.")
    )
    expect(errors).to_contain_text(
        re.compile(
            r"The destination failed 3 times in a row, so the upload was stopped: [2-4] files"
        )
    )
    page.get_by_test_id("job-link").click()
    expect(page.get_by_test_id("job-fields")).to_contain_text("Failure")


def test_names_in_iso_2022_and_utf_8_are_one_patient_and_do_not_arrive(
    destination_folder, upload_page: Page, tmp_path
):
    yamada = Patient(
        name="Yamada^Tarou=山田^太郎=やまだ^たろう",
        patient_id="JP-4711",
        birth_date="19800202",
        accession_number="A-77",
        identifying=("Yamada", "Tarou", "山田", "太郎", "やまだ", "JP-4711", "19800202"),
    )
    series = [
        Series("CT_small.dcm", "CT", 1, ["", "ISO 2022 IR 87"]),
        Series("MR_small.dcm", "MR", 1, "ISO_IR 192"),
    ]
    cd = write_cd_folder(tmp_path / "CD", yamada, series=series)
    for path in cd.dicom_files:
        dataset = dcmread(path)
        dataset.StudyDescription = "胸部ＣＴ Yamada"
        dataset.save_as(path)
    page = upload_page
    _choose(page, cd.root, PSEUDONYM, destination_folder)
    expect(page.get_by_test_id("summary-patients")).to_have_text(
        "Yamada^Tarou=山田^太郎=やまだ^たろう (ID JP-4711, born 1980-02-02)"
    )
    _upload(page)
    expect(page.get_by_test_id("upload-message")).to_contain_text("Upload finished: 2 stored")
    for path in _folder_files(Path(destination_folder.path)):
        data = path.read_bytes()
        assert b"\x1b$B" not in data  # no JIS-encoded text: everything is UTF-8 now
        _assert_nothing_identifies(data, yamada)
        assert dcmread(path).StudyDescription == f"胸部ＣＴ {PSEUDONYM}"


# -- The JavaScript applies the server's table ----------------------------------------------


def _value_for(vr: str, tag: int):
    """A value pydicom can write for an attribute of this VR."""
    values = {
        "AE": "AETITLE",
        "AS": "042Y",
        "AT": 0x00100010,
        "CS": "CODE",
        "DA": "20200102",
        "DS": "1.5",
        "DT": "20200102120000",
        "FD": 1.5,
        "FL": 1.5,
        "IS": "7",
        "OB": b"\x01\x02",
        "OD": b"\x00" * 8,
        "OF": b"\x00" * 4,
        "OL": b"\x00" * 4,
        "OV": b"\x00" * 8,
        "OW": b"\x01\x02",
        "PN": "Other^Person",
        "SL": -3,
        "SS": -3,
        "SV": -3,
        "TM": "120000",
        "UI": f"1.2.826.0.1.3680043.8.498.{tag}",
        "UL": 3,
        "UN": b"\x01\x02",
        "UR": "https://example.org/x",
        "US": 3,
        "UV": 3,
    }
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "1"
        return Sequence([item])
    if vr in ("SH", "LO", "ST", "LT", "UC", "UT"):
        # Its own text: one attribute's value noted as an identifier must not be another's.
        return f"T{tag:08X}"
    return values[vr]


def _every_listed_attribute(profile: dict) -> tuple[Dataset, dict[int, str]]:
    """A file with one element for each attribute the table lists, and each one's action."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    actions = {}
    for tag_text, action in profile["actions"].items():
        tag = int(tag_text, 16)
        vr = dictionary_VR(tag).split(" or ")[0]
        element = DataElement(tag, vr, _value_for(vr, tag))
        (dataset.file_meta if tag >> 16 == 0x0002 else dataset).add(element)
        actions[tag] = action
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientName = "Doe^Jane"
    dataset.PatientID = "P-1"
    # Attributes the table does not list, handled by their kind.
    dataset.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    dataset.Manufacturer = "ACME"
    dataset.PersonName = "Someone^Else"
    dataset.add_new(0x60003000, "OW", b"\x00\x01")  # an overlay
    dataset.add_new(0x00110010, "LO", "PRIVATE CREATOR")
    dataset.add_new(0x00111001, "LO", "private value")
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset, actions


def _applied(action: str, before: DataElement, after: DataElement | None, profile: dict) -> bool:
    """Whether ``after`` is what the table's ``action`` makes of ``before``."""
    if action == "REMOVE":
        return after is None
    if after is None:
        return False
    if action == "EMPTY":
        return after.is_empty
    if action == "PSEUDONYM":
        return str(after.value) == PSEUDONYM
    if action == "DUMMY":
        return after.value == profile["dummy_text"]
    if action in ("KEYED_HASH", "DICOGNITO"):
        return len(str(after.value)) == 16 and after.value != before.value
    if action == "NEW_UID":
        return str(after.value).startswith("2.25.")
    # KEEP, DATE (uploads keep dates) and CLEAN (nothing identifying in these values).
    return after.value == before.value


def _pseudonymized_in_the_page(page: Page, data: bytes, key: str) -> Dataset:
    pseudonymized = page.evaluate(
        """async ([data, options]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const blob = await window.aditPseudonymizer.pseudonymize(new Blob([bytes]), options);
            const result = new Uint8Array(await blob.arrayBuffer());
            let text = "";
            for (const byte of result) text += String.fromCharCode(byte);
            return btoa(text);
        }""",
        [base64.b64encode(data).decode(), {"pseudonym": PSEUDONYM, "key": key}],
    )
    return dcmread(DicomBytesIO(base64.b64decode(pseudonymized)))


def test_the_page_applies_the_servers_table_to_every_listed_attribute(upload_page: Page):
    profile = profile_for_browsers()
    original, actions = _every_listed_attribute(profile)
    buffer = DicomBytesIO()
    original.save_as(buffer, enforce_file_format=True)
    result = _pseudonymized_in_the_page(upload_page, buffer.getvalue(), "a" * 64)
    assert deidentification_problems(result, PSEUDONYM) == []
    wrong = []
    for tag, action in actions.items():
        before = (original.file_meta if tag >> 16 == 0x0002 else original)[tag]
        after = (result.file_meta if tag >> 16 == 0x0002 else result).get(tag)
        if not _applied(action, before, after, profile):
            shown = after.value if after is not None else "(removed)"
            wrong.append(f"{keyword_for_tag(tag)} ({action}): {before.value!r} -> {shown!r}")
    assert not wrong, wrong
    assert str(result.FrameOfReferenceUID).startswith("2.25.")
    assert result.Manufacturer == "ACME"
    assert len(str(result.PersonName)) == 16
    assert 0x60003000 not in result and 0x00111001 not in result and 0x00110010 not in result
    assert result.SOPClassUID == original.SOPClassUID
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert result.PatientIdentityRemoved == "YES"
    assert list(result.DeidentificationMethod) == profile["deidentification_method"]
    assert [item.CodeValue for item in result.DeidentificationMethodCodeSequence] == [
        code for code, _ in profile["deidentification_codes"]
    ]


def _elements(dataset: Dataset, prefix: str = "") -> dict[str, object]:
    """Every element by its path, with its value (a sequence by its number of items)."""
    found: dict[str, object] = {}
    for element in dataset:
        path = f"{prefix}{element.tag:08X}"
        if element.VR == "SQ":
            found[path] = len(element.value)
            for index, item in enumerate(element.value):
                found.update(_elements(item, f"{path}[{index}]."))
        else:
            found[path] = element.value
    return found


def test_the_page_pseudonymizes_a_cd_as_the_server_does(upload_page: Page, tmp_path):
    """Keyed with the project's seed, the page's new UIDs, keyed hashes, scrubbed texts and
    removed attributes are the server pseudonymizer's, element for element; only what
    dicognito replaces on the server (names, accession number, study ID) and the record of
    the method differ."""
    cd = write_cd_folder(tmp_path / "CD")
    secret = "the project's secret"
    differs = {"AccessionNumber", "StudyID", "DeidentificationMethod"}
    differs |= {"DeidentificationMethodCodeSequence", "SpecificCharacterSet"}
    for path in cd.dicom_files:
        in_page = _pseudonymized_in_the_page(upload_page, path.read_bytes(), _derive_seed(secret))
        on_server = dcmread(path)
        Pseudonymizer(PSEUDONYM, secret).pseudonymize(on_server)
        elements = {}
        for dataset in (in_page, on_server):
            for skipped in differs:
                dataset.pop(skipped, None)
            found = _elements(dataset.file_meta, "meta.") | _elements(dataset)
            elements[id(dataset)] = {
                path: "a name" if isinstance(value, PersonName) and str(value) else value
                for path, value in found.items()
                if path not in ("meta.00020000", "meta.00020012", "meta.00020013")
            }
        assert elements[id(in_page)] == elements[id(on_server)], path
