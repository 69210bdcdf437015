"""Instances that pydicom would not encode again as they came: a Patient ID of odd length
(pydicom pads it once it was read, and every transfer reads it), private elements of odd
length and of VR UN, in an uncompressed and a JPEG 2000 image. What arrives of them shows
whether ADIT passed the bytes on or encoded the instance anew."""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.dsutils import split_dataset

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.sample_studies import syntax_study
from adit.core.dicom.dimse import GET_MODELS, storage_contexts_for_get

PATIENT_ID = "ODD-BYTES"  # 9 bytes; pydicom writes it padded to 10
PRIVATE_VALUE = "ODD VALUE"


def _element(group: int, element: int, value: bytes) -> bytes:
    """An LO element, explicit VR little endian, with the length of its value as it is."""
    return struct.pack("<HH", group, element) + b"LO" + struct.pack("<H", len(value)) + value


# The odd elements as they must arrive.
ODD_ELEMENT = _element(0x0010, 0x0020, PATIENT_ID.encode())
ODD_PRIVATE_ELEMENT = _element(0x0009, 0x1012, PRIVATE_VALUE.encode())


def odd_study() -> list[bytes]:
    """Two DICOM files of one new study: the JPEG 2000 and the explicit VR little endian image
    of the sample study, each with the private elements and the odd value."""
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for dataset in syntax_study(seed=17):
        syntax = str(dataset.file_meta.TransferSyntaxUID)
        if syntax not in (JPEG2000, ExplicitVRLittleEndian):
            continue
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.PatientID = PATIENT_ID
        files.append(_with_odd_elements(dataset))
    assert len(files) == 2
    return files


def _with_odd_elements(dataset: Dataset) -> bytes:
    dataset.add_new(0x00090010, "LO", "ADIT TEST")
    dataset.add_new(0x00091011, "UN", b"\x01\x02\x03\x04")
    dataset.add_new(0x00091012, "LO", PRIVATE_VALUE)
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for odd in (ODD_ELEMENT, ODD_PRIVATE_ELEMENT):
        padded = _element(*struct.unpack("<HH", odd[:4]), odd[8:] + b" ")
        assert data.count(padded) == 1
        # No group length covers the element: only its own length changes.
        data = data.replace(padded, odd)
    return data


def data_set_of(file: bytes) -> bytes:
    """The data set of a DICOM file: what follows its preamble and file meta information."""
    assert file[128:132] == b"DICM"
    (group_length,) = struct.unpack("<I", file[140:144])
    return file[144 + group_length :]


def sent_by_c_get(orthanc: OrthancServer, study_uid: str, files: list[bytes]) -> dict[str, bytes]:
    """SOPInstanceUID -> the data set as the PACS sends it by C-GET, taken by pynetdicom as a
    plain client. (Orthanc, through DCMTK, sends its files re-encoded: sequences of defined
    length, odd values padded; ADIT must pass on what it sent, not what it stores.)"""
    classes = sorted(
        {str(dcmread(BytesIO(file), stop_before_pixels=True).SOPClassUID) for file in files}
    )
    contexts = storage_contexts_for_get(classes)
    sent: dict[str, bytes] = {}

    def keep(event) -> int:
        # ADIT has pynetdicom receive into files (see dimse.py): the data set follows the meta.
        _, offset = split_dataset(event.dataset_path)
        sent[str(event.request.AffectedSOPInstanceUID)] = event.dataset_path.read_bytes()[offset:]
        event.dataset_path.unlink()  # pynetdicom leaves a C-GET's files behind
        return 0x0000

    ae = AE("ADITTEST")
    ae.requested_contexts = [build_context(GET_MODELS["study"]), *contexts]
    roles = [build_role(uid, scp_role=True) for uid in classes]
    assoc = ae.associate(
        "127.0.0.1",
        orthanc.dicom_port,
        ae_title=orthanc.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, keep)],
    )
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        for status, _ in assoc.send_c_get(identifier, GET_MODELS["study"]):
            assert status.Status in (0x0000, 0xFF00)
    finally:
        assoc.release()
    assert len(sent) == len(files)
    return sent
