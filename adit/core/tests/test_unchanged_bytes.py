"""An instance nothing changes on its way arrives as the source sent it, byte for byte in its
data set — also values pydicom would encode otherwise (an odd length, private elements) and a
JPEG 2000 image, which is not encoded again either — by every way of fetching, at a folder and
at a server. Whatever is changed (pseudonymized, stamped, converted, edited in a sequence) is
encoded anew and arrives changed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from django.conf import settings
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom.dsutils import encode

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.synthetic import generate_ct_series
from adit.core.dicom import spool
from adit.core.dicom.files import (
    decode_instance,
    encode_instance,
    file_head,
    forget_received,
    pydicom_file_head,
    read_instance,
    unchanged_data_set,
    unchanged_file,
    write_instance,
)
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.syntaxes import convert_to_explicit_little_endian
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomFolder
from adit.core.tests.factories import run_transfer, server_for
from adit.core.tests.odd_instances import (
    ODD_ELEMENT,
    ODD_PRIVATE_ELEMENT,
    PATIENT_ID,
    PRIVATE_VALUE,
    data_set_of,
    odd_study,
    sent_by_c_get,
)

# -- which instances count as unchanged ------------------------------------------------------


def _odd_file() -> bytes:
    return odd_study()[1]


def test_an_instance_read_for_its_routing_values_is_written_as_it_came():
    data = _odd_file()
    dataset = read_instance(data)
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "PatientID", "Modality", "StudyDate"):
        dataset.get(keyword)
    assert data_set_of(encode_instance(dataset)) == data_set_of(data)
    # pydicom, encoding it again once the Patient ID was read, pads it: what the comparison
    # above would catch.
    decoded = decode_instance(data)
    decoded.get("PatientID")
    assert ODD_ELEMENT not in encode_instance(decoded)


def test_the_file_meta_of_a_passed_on_instance_is_what_pydicom_would_write():
    data = _odd_file()
    from_file = read_instance(data)
    from_file.get("SOPClassUID")
    pynetdicom_meta = FileMetaDataset()
    pynetdicom_meta.MediaStorageSOPClassUID = from_file.SOPClassUID
    pynetdicom_meta.MediaStorageSOPInstanceUID = from_file.SOPInstanceUID
    pynetdicom_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pynetdicom_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.3811.3.0.4")
    pynetdicom_meta.ImplementationVersionName = "PYNETDICOM_304"
    # pynetdicom writes a C-STORE's instance into a file with file meta of its own making.
    received = BytesIO()
    received.write(bytes(128) + b"DICM")
    write_file_meta_info(received, pynetdicom_meta)  # pyright: ignore[reportArgumentType]
    received.write(data_set_of(data))
    as_c_store_brings_it = read_instance(received.getvalue())
    for dataset in (from_file, as_c_store_brings_it):
        assert file_head(dataset) == pydicom_file_head(dataset)
        assert encode_instance(dataset).startswith(file_head(dataset))


@pytest.mark.parametrize(
    "change",
    [
        "set a value",
        "add an element",
        "delete an element",
        "edit inside a sequence",
        "convert the syntax",
    ],
)
def test_a_changed_instance_is_encoded_anew_with_the_change(change):
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.PatientID = "BEFORE"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    dataset.ReferencedImageSequence = Sequence([item])
    dataset.PatientName = "Doe^Jane"
    data = encode_instance(dataset)
    arrived = read_instance(data)
    assert unchanged_data_set(arrived) is not None
    if change == "set a value":
        arrived.PatientID = "AFTER"
    elif change == "add an element":
        arrived.AccessionNumber = "A1"
    elif change == "delete an element":
        del arrived.PatientName
    elif change == "edit inside a sequence":
        arrived.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "4.5.6"
    else:
        arrived.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert unchanged_data_set(arrived) is None
    again = dcmread(BytesIO(encode_instance(arrived)))
    if change == "set a value":
        assert again.PatientID == "AFTER"
    elif change == "add an element":
        assert again.AccessionNumber == "A1"
    elif change == "delete an element":
        assert "PatientName" not in again
    elif change == "edit inside a sequence":
        assert again.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "4.5.6"
    else:
        assert again.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert again.PatientID == "BEFORE"


def test_a_jpeg_2000_instance_converted_for_a_destination_is_encoded_anew():
    jpeg_2000 = read_instance(odd_study()[0])
    assert jpeg_2000.file_meta.TransferSyntaxUID == JPEG2000
    convert_to_explicit_little_endian(jpeg_2000)
    assert unchanged_data_set(jpeg_2000) is None
    assert (
        not dcmread(BytesIO(encode_instance(jpeg_2000)))
        .file_meta["TransferSyntaxUID"]
        .value.is_compressed
    )


# -- transfers, against real Orthancs ---------------------------------------------------------


@pytest.fixture(scope="module")
def odd_pacs(tmp_path_factory, receiver_port) -> Iterator[tuple[OrthancServer, list[bytes]]]:
    """An Orthanc holding the odd study (and knowing the receiver), with its stored files."""
    orthanc = OrthancServer(
        "ODDBYTES",
        storage_dir=tmp_path_factory.mktemp("oddbytes"),
        modalities={"ADIT": (settings.RECEIVER_AE_TITLE, "127.0.0.1", receiver_port)},
    )
    with orthanc:
        files = odd_study()
        orthanc.upload(files)
        study_uid = str(read_instance(files[0]).StudyInstanceUID)
        stored = orthanc.study_files(study_uid)
        assert all(ODD_ELEMENT in data_set_of(file) for file in stored), "Orthanc changed it"
        yield orthanc, stored


def _by_uid(files: list[bytes]) -> dict[str, bytes]:
    """SOPInstanceUID -> the data set of each file."""
    return {str(read_instance(file).SOPInstanceUID): data_set_of(file) for file in files}


@pytest.fixture
def encoding_forbidden(monkeypatch):
    """pydicom's and pynetdicom's encoders fail for any instance with pixel data: whatever
    arrives was passed on as it came."""
    save_as = Dataset.save_as

    def guarded_save_as(self, *args, **kwargs):
        assert "PixelData" not in self, "an unchanged instance was encoded again"
        return save_as(self, *args, **kwargs)

    def guarded_encode(dataset, *args, **kwargs):
        assert "PixelData" not in dataset, "an unchanged instance was encoded again"
        return encode(dataset, *args, **kwargs)

    def guarded_dcmwrite(file, dataset, *args, **kwargs):
        assert "PixelData" not in dataset, "an unchanged instance was encoded again"
        return dcmwrite(file, dataset, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", guarded_save_as)
    monkeypatch.setattr("pydicom.dcmwrite", guarded_dcmwrite)  # as dicomweb-client calls it
    monkeypatch.setattr("pynetdicom.association.encode", guarded_encode)  # send_c_store's


def _destination(to: str, orthanc: OrthancServer, folder: DicomFolder):
    if to == "folder":
        return folder
    if to == "c-store":
        return server_for(orthanc)
    return server_for(
        orthanc,
        host="",
        port=None,
        study_root_find_support=False,
        study_root_get_support=False,
        store_scp_support=False,
        dicomweb_root_url=orthanc.dicomweb_root,
        dicomweb_qido_support=True,
        dicomweb_stow_support=True,
    )


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize("to", ["c-store", "stow-rs", "folder"])
@pytest.mark.parametrize("kind", ["dicomweb", "c-get", "c-move"])
def test_an_unchanged_study_is_passed_on_as_it_came_without_being_encoded_again(
    kind, to, member, odd_pacs, empty_orthanc2, receiving, tmp_path, encoding_forbidden
):
    orthanc, stored = odd_pacs
    study_uid = str(read_instance(stored[0]).StudyInstanceUID)
    # WADO-RS sends the stored files; by C-GET and C-MOVE Orthanc sends them re-encoded.
    sent = _by_uid(stored) if kind == "dicomweb" else sent_by_c_get(orthanc, study_uid, stored)
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))
    destination = _destination(to, empty_orthanc2, folder)

    task = run_transfer(member, server_for(orthanc, kind=kind), destination, PATIENT_ID, study_uid)

    assert task.status == TaskStatus.SUCCESS, f"{task.message}\n{task.log}"
    if to == "folder":
        files = [path.read_bytes() for path in sorted(Path(folder.path).rglob("*.dcm"))]
        assert _by_uid(files) == sent
        if kind == "dicomweb":
            assert all(ODD_ELEMENT in data_set_of(file) for file in files)
            assert all(ODD_PRIVATE_ELEMENT in data_set_of(file) for file in files)
    else:
        # Orthanc stores what it receives re-encoded: that it holds them is what shows here,
        # that they went as they came is what the encoders that were not called show.
        arrived = [read_instance(file) for file in empty_orthanc2.study_files(study_uid)]
        assert {str(dataset.SOPInstanceUID) for dataset in arrived} == set(sent)
        assert {str(dataset[0x00091012].value) for dataset in arrived} == {PRIVATE_VALUE}


def _spooled(data: bytes):
    """The DICOM file's instance as a large one arrives: in a temporary file, read back with
    its large values left there."""
    file = tempfile.TemporaryFile()
    file.write(data)
    return spool.spooled_file(file)


@pytest.fixture(scope="module")
def ct_slice() -> bytes:
    """A CT slice with 512 KiB of pixel data: deferred when spooled, as an instance larger
    than the pipeline's budget is."""
    return encode_instance(next(generate_ct_series(1, seed=23)))


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize("to", ["c-store", "folder"])
def test_a_spooled_instance_goes_from_its_file_without_its_pixel_data_read(
    to, ct_slice, empty_orthanc2, tmp_path, encoding_forbidden
):
    data = ct_slice
    dataset = _spooled(data)
    sop_uid = str(dataset.SOPInstanceUID)

    if to == "c-store":
        assert DicomOperator(server_for(empty_orthanc2)).store([dataset]).stored == 1
        (held,) = empty_orthanc2.study_files(str(dataset.StudyInstanceUID))
        assert read_instance(held).PixelData == read_instance(data).PixelData
    else:
        write_instance(dataset, tmp_path / "copy.dcm")
        assert (tmp_path / "copy.dcm").read_bytes() == data

    # Still on disk: nothing read it into memory (an encoder would have, and failed here).
    assert dataset.get_item(0x7FE00010, keep_deferred=True).value is None
    assert str(dataset.SOPInstanceUID) == sop_uid
    spool.release(dataset)
    assert unchanged_file(dataset) is None  # its name in /proc went with the file


def test_a_spooled_file_the_dataset_does_not_keep_open_is_not_sent_by_its_number(
    ct_slice, tmp_path
):
    path = tmp_path / "slice.dcm"
    path.write_bytes(ct_slice)
    # pydicom keeps a file opened for reading by its name only; the file object goes.
    dataset = spool.spooled_file(path.open("rb"))
    assert unchanged_file(dataset) is None


def test_a_changed_spooled_instance_is_not_sent_from_its_file(ct_slice):
    dataset = _spooled(ct_slice)
    assert unchanged_file(dataset) is not None
    forget_received(dataset)  # what pseudonymizing and stamping do first
    assert unchanged_file(dataset) is None


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize("spooled", [False, True])
def test_a_pseudonymized_study_is_encoded_anew_and_keeps_no_identifying_value(
    spooled, member, odd_pacs, empty_orthanc2, tmp_path, settings
):
    if spooled:
        settings.TRANSFER_PIPELINE_BYTES = 1024  # every instance waits on disk
    orthanc, stored = odd_pacs
    study_uid = str(read_instance(stored[0]).StudyInstanceUID)
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))

    task = run_transfer(
        member, server_for(orthanc), folder, PATIENT_ID, study_uid, pseudonym="ODD-PSEUDO"
    )

    assert task.status == TaskStatus.SUCCESS, f"{task.message}\n{task.log}"
    files = [path.read_bytes() for path in sorted(Path(folder.path).rglob("*.dcm"))]
    assert len(files) == len(stored)
    for file in files:
        dataset = read_instance(file)
        assert dataset.PatientID == "ODD-PSEUDO"
        assert str(dataset.StudyInstanceUID) != study_uid
        assert PATIENT_ID.encode() not in file
