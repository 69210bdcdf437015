"""Studies as hospital archives hold them — compressed images (JPEG 2000, JPEG-LS, RLE, JPEG),
RT objects, waveforms, SR, segmentations, deflated and big endian files, multi-frame images —
go through every way of fetching to a server and to a folder, pseudonymized and not, and
arrive instance by instance as the source holds them: same transfer syntax, pixel data byte
for byte. A destination that takes uncompressed data only gets them decoded without loss; an
instance that cannot be decoded fails with a message naming its syntax and the destination.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, UID

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.sample_studies import mixed_object_study, multiframe_study, syntax_study
from adit.core.dicom.syntaxes import syntax_of
from adit.core.jobs.statuses import TaskStatus
from adit.core.models import DicomFolder
from adit.core.tests.factories import run_transfer, server_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

STUDIES: dict[str, Callable[[], list[Dataset]]] = {
    "syntaxes": syntax_study,
    "mixed objects": mixed_object_study,
    "multi-frame": multiframe_study,
}
VIDEO_ENDOSCOPIC = UID("1.2.840.10008.5.1.4.1.1.77.1.1.1")


def _video_study() -> list[Dataset]:
    """The syntax study plus an MPEG-2 video, which ADIT cannot decode."""
    instances = syntax_study(seed=9)
    video = copy.deepcopy(instances[-1])
    video.SOPClassUID = video.file_meta.MediaStorageSOPClassUID = VIDEO_ENDOSCOPIC
    video.SOPInstanceUID = video.file_meta.MediaStorageSOPInstanceUID = UID(
        "1.2.826.0.1.3680043.9.7"
    )
    video.SeriesInstanceUID = "1.2.826.0.1.3680043.9.8"
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    video.NumberOfFrames = 1
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(400)])
    video["PixelData"].VR = "OB"
    return [*instances, video]


@pytest.fixture(scope="module")
def variety_pacs(tmp_path_factory, receiver_port) -> Iterator[OrthancServer]:
    """An Orthanc holding the three sample studies and a video study; it knows the receiver."""
    orthanc = OrthancServer(
        "VARIETY",
        storage_dir=tmp_path_factory.mktemp("variety"),
        modalities={"ADIT": (settings.RECEIVER_AE_TITLE, "127.0.0.1", receiver_port)},
    )
    with orthanc:
        for make in (*STUDIES.values(), _video_study):
            orthanc.upload(make())
        yield orthanc


@pytest.fixture(scope="module")
def uncompressed_only_pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    with OrthancServer(
        "PLAINONLY", storage_dir=tmp_path_factory.mktemp("plainonly"), accept_compressed=False
    ) as orthanc:
        yield orthanc


def _arrived_at_server(orthanc: OrthancServer, study_uid: str) -> list[Dataset]:
    return [dcmread(BytesIO(data)) for data in orthanc.study_files(study_uid)]


def _arrived_in_folder(folder: DicomFolder) -> list[Dataset]:
    return [dcmread(path) for path in sorted(Path(folder.path).rglob("*.dcm"))]


def _binary(dataset: Dataset) -> bytes:
    """What must arrive unchanged: pixel data, or the waveform of an ECG."""
    for keyword in ("PixelData", "WaveformSequence"):
        if keyword in dataset:
            value = dataset[keyword].value
            if keyword == "PixelData":
                return bytes(value)
            return b"".join(bytes(item.WaveformData) for item in value)
    return b""


def _identity(dataset: Dataset) -> tuple[str, bytes]:
    """How an instance is recognised after pseudonymization changed its UIDs."""
    return str(dataset.SOPClassUID), _binary(dataset)


@pytest.mark.parametrize("pseudonymize", [False, True], ids=["plain", "pseudonymized"])
@pytest.mark.parametrize("to_folder", [False, True], ids=["to-server", "to-folder"])
@pytest.mark.parametrize("kind", ["dicomweb", "c-get", "c-move"])
@pytest.mark.parametrize("study_name", list(STUDIES))
def test_every_instance_arrives_in_its_own_transfer_syntax(
    study_name, kind, to_folder, pseudonymize, member, variety_pacs, empty_orthanc2, receiving,
    tmp_path,
):  # fmt: skip
    source_instances = STUDIES[study_name]()
    if pseudonymize:
        excluded = set(settings.EXCLUDE_MODALITIES)
        source_instances = [ds for ds in source_instances if ds.Modality not in excluded]
    study_uid = str(source_instances[0].StudyInstanceUID)
    patient_id = str(source_instances[0].PatientID)
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))
    destination = folder if to_folder else server_for(empty_orthanc2)

    task = run_transfer(
        member,
        server_for(variety_pacs, kind=kind),
        destination,
        patient_id,
        study_uid,
        **({"pseudonym": "VARIETY-01"} if pseudonymize else {}),
    )

    assert task.status == TaskStatus.SUCCESS, f"{task.message}\n{task.log}"
    assert task.progress_done == len(source_instances)
    if to_folder:
        arrived = _arrived_in_folder(folder)
    else:
        arrived = _arrived_at_server(empty_orthanc2, task.pseudonymized_study_uid or study_uid)
    assert len(arrived) == len(source_instances)
    by_identity = {_identity(ds): ds for ds in arrived}
    assert len(by_identity) == len(arrived)  # every instance recognisable, none twice
    for original in source_instances:
        copy = by_identity.get(_identity(original))
        assert copy is not None, f"{original.SOPClassUID.name} did not arrive unchanged"
        assert syntax_of(copy) == syntax_of(original), original.SOPClassUID.name
        if pseudonymize:
            assert copy.PatientID == "VARIETY-01"
            assert copy.SOPInstanceUID != original.SOPInstanceUID
        else:
            assert copy.SOPInstanceUID == original.SOPInstanceUID
            assert copy.PatientName == original.PatientName


def test_a_destination_that_takes_uncompressed_data_only_gets_it_decoded_without_loss(
    member, variety_pacs, uncompressed_only_pacs
):
    uncompressed_only_pacs.clear()
    source_instances = syntax_study()
    study_uid = str(source_instances[0].StudyInstanceUID)

    task = run_transfer(
        member,
        server_for(variety_pacs, kind="c-get"),
        server_for(uncompressed_only_pacs),
        str(source_instances[0].PatientID),
        study_uid,
    )

    assert task.status == TaskStatus.SUCCESS, f"{task.message}\n{task.log}"
    assert "in JPEG 2000 Image Compression went to PLAINONLY as Explicit VR Little Endian" in (
        task.log
    )
    arrived = {
        str(ds.SOPInstanceUID): ds for ds in _arrived_at_server(uncompressed_only_pacs, study_uid)
    }
    assert len(arrived) == len(source_instances)
    for original in source_instances:
        copy = arrived[str(original.SOPInstanceUID)]
        assert not syntax_of(copy).is_compressed
        assert np.array_equal(copy.pixel_array, original.pixel_array), original.SOPClassUID.name


def test_an_instance_no_syntax_of_the_destination_fits_fails_by_name_and_the_rest_arrive(
    member, variety_pacs, uncompressed_only_pacs
):
    uncompressed_only_pacs.clear()
    source_instances = _video_study()
    study_uid = str(source_instances[0].StudyInstanceUID)

    task = run_transfer(
        member,
        server_for(variety_pacs, kind="c-get"),
        server_for(uncompressed_only_pacs),
        str(source_instances[0].PatientID),
        study_uid,
    )

    assert task.status == TaskStatus.FAILURE
    assert "1 instance(s) could not be stored" in task.message
    assert "PLAINONLY does not accept MPEG2 Main Profile / Main Level" in task.message
    held = uncompressed_only_pacs.study_instance_uids(study_uid)
    assert len(held) == len(source_instances) - 1


def test_a_zip_archive_holds_every_instance_in_its_own_syntax(member, variety_pacs, tmp_path):
    import pyzipper

    source_instances = syntax_study()
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))
    task = run_transfer(
        member,
        server_for(variety_pacs, kind="dicomweb"),
        folder,
        str(source_instances[0].PatientID),
        str(source_instances[0].StudyInstanceUID),
        archive_password="s3cret-pass",
    )

    assert task.status == TaskStatus.SUCCESS, f"{task.message}\n{task.log}"
    (archive_path,) = Path(folder.path).rglob("*.zip")
    with pyzipper.AESZipFile(archive_path) as archive:
        archive.setpassword(b"s3cret-pass")
        arrived = [dcmread(BytesIO(archive.read(name))) for name in archive.namelist()]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in arrived}
    assert len(by_uid) == len(source_instances)
    for original in source_instances:
        copy = by_uid[str(original.SOPInstanceUID)]
        assert syntax_of(copy) == syntax_of(original)
        assert _binary(copy) == _binary(original)


@pytest.mark.parametrize("study_name", ["syntaxes", "multi-frame"])
def test_compressed_images_convert_to_nifti_whatever_dcm2niix_decodes_itself(
    study_name, member, variety_pacs, tmp_path
):
    source_instances = STUDIES[study_name]()
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))
    task = run_transfer(
        member,
        server_for(variety_pacs, kind="c-get"),
        folder,
        str(source_instances[0].PatientID),
        str(source_instances[0].StudyInstanceUID),
        convert_to_nifti=True,
    )

    assert task.status in (TaskStatus.SUCCESS, TaskStatus.WARNING), f"{task.message}\n{task.log}"
    assert "No NIfTI file was produced" not in task.log
    niftis = list(Path(folder.path).rglob("*.nii*"))
    assert len(niftis) == len(source_instances)  # one series of one image each
