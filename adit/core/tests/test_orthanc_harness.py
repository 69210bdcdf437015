"""The real-PACS harness: the synthetic study generator and Orthanc run as a child process."""

import socket
import subprocess
import tracemalloc
from pathlib import Path

import psutil
import pydicom
import pytest
from django.core.management import CommandError, call_command
from pydicom.uid import ExplicitVRLittleEndian

from adit.core.demo.orthanc import REQUIRED_COMMANDS, OrthancServer, OrthancStartError, free_ports
from adit.core.demo.synthetic import (
    describe_ct_series,
    describe_studies,
    generate_ct_series,
    generate_studies,
    write_studies,
)
from adit.system_packages import ensure_commands
from tests.orthanc_fixtures import DCMTK_ENV, dcmtk


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    # dcmtk prints text in the data set's character set, which need not be UTF-8.
    result = subprocess.run(
        command, capture_output=True, text=True, errors="replace", env=DCMTK_ENV, timeout=30
    )
    if check:
        assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


# -- Generator ---------------------------------------------------------------------------------


def test_same_seed_gives_same_studies_and_another_seed_other_ones():
    first, again, other = describe_studies(42), describe_studies(42), describe_studies(7)

    assert first == again
    assert [ds.SOPInstanceUID for ds in generate_studies(42)] == [
        ds.SOPInstanceUID for ds in generate_studies(42)
    ]
    assert {study.study_instance_uid for study in first}.isdisjoint(
        study.study_instance_uid for study in other
    )
    assert {study.patient_name for study in first} != {study.patient_name for study in other}
    assert {study.patient_id for study in first}.isdisjoint(study.patient_id for study in other)


def test_generated_instances_are_what_describe_studies_predicts():
    studies = describe_studies()
    predicted = {
        (study.study_instance_uid, series.series_instance_uid, sop_uid, series.modality)
        for study in studies
        for series in study.series
        for sop_uid in series.sop_instance_uids
    }
    generated = {
        (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.Modality)
        for ds in generate_studies()
    }

    assert generated == predicted
    assert len(predicted) == sum(study.instance_count for study in studies)
    modalities = {modality for study in studies for modality in study.modalities}
    assert {"CT", "MR", "SR", "PR"} <= modalities
    assert all(study.accession_number.startswith("A0042") for study in studies)


def test_default_set_has_ascii_latin_1_and_utf_8_names():
    names = {study.patient_name for study in describe_studies()}

    assert any(name.isascii() for name in names)
    assert any(not name.isascii() and _fits_latin_1(name) for name in names)
    assert any(not _fits_latin_1(name) for name in names)


def _fits_latin_1(text: str) -> bool:
    return all(ord(letter) < 256 for letter in text)


def test_generated_files_are_valid_dicom(tmp_path: Path):
    names = {study.study_instance_uid: study.patient_name for study in describe_studies()}
    by_sop_uid = {}
    for path in write_studies(tmp_path):
        ds = pydicom.dcmread(path)
        by_sop_uid[ds.SOPInstanceUID] = ds
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        # Decoding with the declared character set gives back the name as it was planned.
        assert str(ds.PatientName) == names[ds.StudyInstanceUID]
        if not _fits_latin_1(str(ds.PatientName)):
            assert ds.SpecificCharacterSet == "ISO_IR 192"
        if ds.Modality in ("CT", "MR"):
            assert ds.pixel_array.shape == (64, 64)
            assert ds.pixel_array.dtype == "uint16"
            assert ds.pixel_array.max() > ds.pixel_array.min()
            assert len(ds.ImagePositionPatient) == 3 and len(ds.PixelSpacing) == 2

    reports = [ds for ds in by_sop_uid.values() if ds.Modality == "SR"]
    assert reports and all(len(ds.ContentSequence) == 3 for ds in reports)
    for state in (ds for ds in by_sop_uid.values() if ds.Modality == "PR"):
        image_reference = state.ReferencedSeriesSequence[0].ReferencedImageSequence[0]
        image = by_sop_uid[image_reference.ReferencedSOPInstanceUID]
        assert image.StudyInstanceUID == state.StudyInstanceUID
        assert image.SOPClassUID == image_reference.ReferencedSOPClassUID


@pytest.mark.integration
def test_dcmtk_accepts_the_report_and_the_presentation_state(tmp_path: Path):
    ensure_commands(REQUIRED_COMMANDS)
    paths = {pydicom.dcmread(path).Modality: path for path in write_studies(tmp_path)}

    report = _run(dcmtk("dsrdump"), str(paths["SR"]))
    _run(dcmtk("dcmpschk"), str(paths["PR"]))

    assert "Diagnostic Imaging Report" in report.stdout
    assert "E:" not in report.stderr


def test_large_ct_series_is_streamed_one_slice_at_a_time():
    slice_bytes = 512 * 512 * 2
    tracemalloc.start()
    try:
        generated = 0
        for ds in generate_ct_series(40, seed=3):
            generated += len(ds.PixelData)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert generated == 40 * slice_bytes
    assert peak < 12 * slice_bytes
    summary = describe_ct_series(40, seed=3)
    assert summary.instance_count == 40 and summary.modalities == ("CT",)
    assert summary.study_instance_uid == next(generate_ct_series(40, seed=3)).StudyInstanceUID


# -- Orthanc -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_orthanc1_holds_exactly_the_described_studies(orthanc1, orthanc1_studies, tmp_path):
    assert orthanc1.count_instances() == sum(study.instance_count for study in orthanc1_studies)
    assert orthanc1.list_study_uids() == sorted(
        study.study_instance_uid for study in orthanc1_studies
    )
    first = orthanc1_studies[0]
    assert orthanc1.study_instance_uids(first.study_instance_uid) == sorted(
        uid for series in first.series for uid in series.sop_instance_uids
    )

    _run(
        dcmtk("findscu"), "-S", "-aet", "ADIT", "-aec", "ORTHANC1", "-X", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
        "-k", "AccessionNumber=A0042*", "-k", "ModalitiesInStudy",
        "-k", "NumberOfStudyRelatedInstances",
        orthanc1.host, str(orthanc1.dicom_port),
    )  # fmt: skip

    answers = [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    expected = {study.study_instance_uid: study for study in orthanc1_studies}
    assert len(answers) == len(expected)
    for answer in answers:
        study = expected[answer.StudyInstanceUID]
        assert str(answer.PatientName) == study.patient_name  # non-Latin-1 names survive
        assert tuple(sorted(answer.ModalitiesInStudy)) == study.modalities
        assert answer.NumberOfStudyRelatedInstances == study.instance_count


@pytest.mark.integration
def test_upload_does_not_duplicate_instances(empty_orthanc2):
    study = describe_studies(seed=5, patients=1)[0]
    instances = list(generate_studies(seed=5, patients=1))

    first = empty_orthanc2.upload(instances)
    second = empty_orthanc2.upload(instances)

    assert (first.stored, first.already_stored) == (len(instances), 0)
    assert (second.stored, second.already_stored) == (0, len(instances))
    assert empty_orthanc2.count_instances() == len(instances)
    assert study.study_instance_uid in empty_orthanc2.list_study_uids()


@pytest.mark.integration
def test_c_move_from_orthanc1_to_orthanc2(orthanc1, orthanc1_studies, empty_orthanc2):
    study = orthanc1_studies[1]

    _run(
        dcmtk("movescu"), "-S", "-aet", "ADIT", "-aec", "ORTHANC1", "-aem", "ORTHANC2",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_instance_uid}",
        orthanc1.host, str(orthanc1.dicom_port),
    )  # fmt: skip

    assert empty_orthanc2.study_instance_uids(study.study_instance_uid) == sorted(
        uid for series in study.series for uid in series.sop_instance_uids
    )
    assert empty_orthanc2.count_instances() == study.instance_count


@pytest.mark.integration
def test_c_move_to_a_known_modality(orthanc1, orthanc1_studies, storescp_port, tmp_path):
    series = orthanc1_studies[0].series[0]

    # movescu's own storage SCP poses as the modality STORESCP that both Orthancs know.
    _run(
        dcmtk("movescu"), "-S", "-aet", "STORESCP", "-aec", "ORTHANC1",
        "-aem", "STORESCP", "--port", str(storescp_port), "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={orthanc1_studies[0].study_instance_uid}",
        "-k", f"SeriesInstanceUID={series.series_instance_uid}",
        orthanc1.host, str(orthanc1.dicom_port),
    )  # fmt: skip

    received = {pydicom.dcmread(path).SOPInstanceUID for path in tmp_path.iterdir()}
    assert received == set(series.sop_instance_uids)


@pytest.mark.integration
def test_move_only_orthanc_refuses_c_get(tmp_path, empty_orthanc2):
    study = describe_studies(seed=9, patients=1)[0]
    modalities = {"ORTHANC2": ("ORTHANC2", "127.0.0.1", empty_orthanc2.dicom_port)}
    identifier = ["-k", "QueryRetrieveLevel=STUDY"]
    identifier += ["-k", f"StudyInstanceUID={study.study_instance_uid}"]
    received = tmp_path / "received"
    received.mkdir()
    with OrthancServer(
        "MOVEONLY", storage_dir=tmp_path / "pacs", modalities=modalities, allow_get=False
    ) as pacs:
        pacs.upload(generate_studies(seed=9, patients=1))
        address = [pacs.host, str(pacs.dicom_port)]

        get = _run(
            dcmtk("getscu"), "-S", "-aec", "MOVEONLY", "-od", str(received), *identifier, *address,
            check=False,
        )  # fmt: skip
        _run(dcmtk("movescu"), "-S", "-aec", "MOVEONLY", "-aem", "ORTHANC2", *identifier, *address)

    # Orthanc answers a refused C-GET by aborting the association.
    assert get.returncode != 0 and "aborted" in get.stderr.lower()
    assert list(received.iterdir()) == []
    assert empty_orthanc2.count_instances() == study.instance_count


@pytest.mark.integration
def test_modalities_can_be_added_and_removed_at_run_time(orthanc2):
    orthanc2.add_modality("EXTRA", "EXTRA_AE", "127.0.0.1", 11999)
    try:
        assert orthanc2.rest("GET", "/modalities?expand")["EXTRA"]["AET"] == "EXTRA_AE"
    finally:
        orthanc2.remove_modality("EXTRA")
    assert "EXTRA" not in orthanc2.rest("GET", "/modalities")
    assert "EXTRA" not in orthanc2.modalities


@pytest.mark.integration
def test_stop_leaves_no_orthanc_process(tmp_path):
    server = OrthancServer("STOPME", storage_dir=tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None and psutil.pid_exists(pid)

    server.stop()
    server.stop()

    assert not server.is_running
    assert not psutil.pid_exists(pid)
    config = str(server.config_path)
    assert not [p for p in psutil.process_iter(["cmdline"]) if config in (p.info["cmdline"] or [])]


@pytest.mark.integration
def test_start_on_a_busy_port_fails_with_orthancs_reason(tmp_path):
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        server = OrthancServer("BUSY", storage_dir=tmp_path, http_port=busy.getsockname()[1])

        with pytest.raises(OrthancStartError) as raised:
            server.start()

    message = str(raised.value)
    assert "already in use" in message
    assert str(server.log_path) in message
    assert not server.is_running


# -- populate_orthancs ---------------------------------------------------------------------------


@pytest.mark.integration
def test_populate_orthancs_uploads_the_demo_studies_once(empty_orthanc2, settings, capsys):
    # ORTHANC2 stands in for both demo Orthancs: orthanc1 must not be emptied by --reset.
    settings.ORTHANC1_URL = settings.ORTHANC2_URL = empty_orthanc2.url
    empty_orthanc2.upload(generate_studies(seed=5, patients=1))
    studies = describe_studies()

    call_command("populate_orthancs", "--reset")
    call_command("populate_orthancs")

    assert empty_orthanc2.list_study_uids() == sorted(s.study_instance_uid for s in studies)
    assert empty_orthanc2.count_instances() == sum(s.instance_count for s in studies)
    first_run, second_run = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "0 were already there" in first_run
    assert "0 instance(s) stored now" in second_run


def test_populate_orthancs_names_the_orthanc_it_cannot_reach(settings):
    settings.ORTHANC1_URL = f"http://127.0.0.1:{free_ports(1)[0]}"

    with pytest.raises(CommandError, match="ORTHANC1 at http://127.0.0.1"):
        call_command("populate_orthancs")
