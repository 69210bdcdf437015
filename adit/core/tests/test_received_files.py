"""Instances arrive into temporary files (dimse.py has pynetdicom receive every C-STORE into
one); none of those files may stay behind, however the fetch ends."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from pydicom import Dataset

from adit.core.dicom import spool
from adit.core.dicom.dimse import discard_unfinished_instance
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.selection import StudySelection
from adit.core.tests.test_dicom_operator import dimse_server


def _read_whole(dataset: Dataset) -> bool:
    """Whether every element's value can be read, those left in the file included."""
    return all(element.value is not None or element.VR == "SQ" for element in dataset)


@pytest.fixture
def temporary_folder(tmp_path, monkeypatch) -> Path:
    """The folder pynetdicom and the spool put their temporary files into during the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["get", "move"])
def test_a_fetched_study_leaves_no_file_behind(
    kind, orthanc1, orthanc1_studies, receiving, temporary_folder
):
    study = orthanc1_studies[0]
    received: list[Dataset] = []
    count = DicomOperator(dimse_server(orthanc1, kind)).fetch_study(
        study.patient_id, study.study_instance_uid, received.append
    )
    assert count == len(received) == sum(len(s.sop_instance_uids) for s in study.series)
    assert all(_read_whole(dataset) for dataset in received)
    assert list(temporary_folder.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["get", "move"])
def test_instances_waiting_on_disk_have_no_name_there_and_read_back_whole(
    kind, orthanc1, orthanc1_studies, receiving, temporary_folder
):
    study = orthanc1_studies[0]
    operator = DicomOperator(dimse_server(orthanc1, kind))
    # A budget this small leaves every instance in the file it arrived in.
    stream = InstanceStream(
        operator, StudySelection(study.patient_id, study.study_instance_uid), budget_bytes=8000
    )
    stream.start()
    try:
        instances = list(stream)
    finally:
        stream.stop(wait=10)
    assert instances and all(spool.is_spooled(dataset) for dataset in instances)
    sop_uids = {uid for series in study.series for uid in series.sop_instance_uids}
    assert {str(dataset.SOPInstanceUID) for dataset in instances} == sop_uids
    assert all(_read_whole(dataset) for dataset in instances)
    # Open while the datasets live, yet nameless: nothing is left if the worker is killed.
    assert list(temporary_folder.iterdir()) == []


class _Message:
    def __init__(self, folder: Path) -> None:
        self._data_set_file = tempfile.NamedTemporaryFile(dir=folder, delete=False)
        self._data_set_file.write(b"\x00" * 132 + b"part of an instance")
        self._data_set_path = Path(self._data_set_file.name)


class _Dimse:
    def __init__(self, message: _Message | None) -> None:
        self.message = message


class _Association:
    def __init__(self, message: _Message | None) -> None:
        self.dimse = _Dimse(message)


def test_the_file_of_an_instance_cut_off_by_a_hang_up_is_removed(temporary_folder):
    message = _Message(temporary_folder)
    discard_unfinished_instance(_Association(message))  # pyright: ignore[reportArgumentType]
    assert list(temporary_folder.iterdir()) == []
    assert message._data_set_file.closed


def test_an_association_that_ended_between_instances_has_nothing_to_discard(temporary_folder):
    discard_unfinished_instance(_Association(None))  # pyright: ignore[reportArgumentType]
