"""A WADO-RS retrieval of a 1000-instance study through ADIT keeps daphne's memory bounded:
the web process holds the few instances in flight, never the study.

daphne runs in a process of its own (AsgiServer), so that its resident set size is its own;
after a 100-instance warm-up (imports, the first association or HTTP session, Django's first
request) its high-water mark (VmHWM) is reset to its current size, and the retrieval of the
1000 instances must raise it by less than 40 MiB. The instances are 256x256 at 16 bit, 128 KiB
of pixel data each, so the study weighs 128 MiB: a retrieval that held it (as datasets, or as
the encoded response) would raise the peak by at least that much; one that streams holds the
InstanceStream's few instances and a chunk or two on their way to the socket.

The client reads as fast as the instances come, as a script does. A client slower than the
PACS makes the web server's sends wait (adit.web_server), which tests/test_web_server.py tests
with a plain streaming response.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)

from adit.core.dicom.multipart import Part, boundary_of, iter_parts
from adit.core.tests.factories import grant, server_for
from tests.orthanc_fixtures import OrthancServer

from .conftest import api_root

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
ROWS = COLUMNS = 256
PIXEL_BYTES = ROWS * COLUMNS * 2
INSTANCES = 1000
WARM_UP_INSTANCES = 100
BOUND = 40 * MIB


@dataclass(frozen=True)
class Study:
    uid: str
    series_uid: str
    sop_uids: tuple[UID, ...]

    @classmethod
    def new(cls, instances: int) -> Study:
        return cls(generate_uid(), generate_uid(), tuple(generate_uid() for _ in range(instances)))

    def instances(self) -> Iterator[Dataset]:
        for number, sop_uid in enumerate(self.sop_uids, start=1):
            dataset = Dataset()
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
            dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dataset.SOPClassUID = CTImageStorage
            dataset.SOPInstanceUID = sop_uid
            dataset.StudyInstanceUID = self.uid
            dataset.SeriesInstanceUID = self.series_uid
            dataset.PatientID = "MEMORY2"
            dataset.PatientName = "Memory^Web"
            dataset.StudyDate = "20240101"
            dataset.Modality = "CT"
            dataset.InstanceNumber = number
            dataset.Rows, dataset.Columns = ROWS, COLUMNS
            dataset.SamplesPerPixel = 1
            dataset.PhotometricInterpretation = "MONOCHROME2"
            dataset.BitsAllocated = dataset.BitsStored = 16
            dataset.HighBit = 15
            dataset.PixelRepresentation = 0
            # Each instance its own bytes, so that nothing can be shared between them.
            dataset.PixelData = number.to_bytes(2, "little") * (PIXEL_BYTES // 2)
            yield dataset


STUDY = Study.new(INSTANCES)
WARM_UP = Study.new(WARM_UP_INSTANCES)


@pytest.fixture(scope="module")
def memory_pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    """An Orthanc holding the 1000-instance study and the 100-instance warm-up study."""
    orthanc = OrthancServer("MEMORYPACS", storage_dir=tmp_path_factory.mktemp("memory-pacs"))
    with orthanc:
        for study in (STUDY, WARM_UP):
            orthanc.upload(study.instances())
        yield orthanc


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int) -> int:
    """Makes the process's high-water mark its current resident size (Linux 4.0 and later);
    returns that size in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory_kib(pid, "VmRSS") * 1024


def peak(pid: int) -> int:
    """The process's peak resident set size since the last reset, in bytes."""
    return memory_kib(pid, "VmHWM") * 1024


def parts_as_they_arrive(url: str, accept: str, headers: dict[str, str]) -> Iterator[Part]:
    """The parts of a multipart answer, each as soon as it is complete."""
    response = requests.get(url, headers={**headers, "Accept": accept}, stream=True, timeout=120)
    assert response.status_code == 200, response.text
    boundary = boundary_of(response.headers["Content-Type"])
    yield from iter_parts(response.iter_content(256 * 1024), boundary)


def retrieve(root: str, study_uid: str, headers: dict[str, str]) -> list[str]:
    """The SOP Instance UIDs of the study's instances, read part by part as they arrive."""
    accept = 'multipart/related; type="application/dicom"'
    uids = []
    for part in parts_as_they_arrive(f"{root}/studies/{study_uid}", accept, headers):
        assert part.content_type.startswith("application/dicom"), part.body[:300]
        uids.append(str(dcmread(BytesIO(part.body), stop_before_pixels=True).SOPInstanceUID))
    return uids


@pytest.mark.parametrize("kind", ["c-get", "dicomweb"])
def test_a_1000_instance_retrieval_holds_the_instances_in_flight_not_the_study(
    adit_http, api_user, memory_pacs, kind
):
    ae_title = {"c-get": "MEMORYGET", "dicomweb": "MEMORYWEB"}[kind]
    server = server_for(memory_pacs, name=f"Memory PACS ({kind})", kind=kind, ae_title=ae_title)
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    root = api_root(adit_http.url, server)
    pid = adit_http.process.pid

    assert len(retrieve(root, WARM_UP.uid, api_user.headers)) == WARM_UP_INSTANCES
    before = reset_peak(pid)
    uids = retrieve(root, STUDY.uid, api_user.headers)
    grown = peak(pid) - before

    assert len(uids) == INSTANCES
    assert set(uids) == set(STUDY.sop_uids)
    print(f"{kind}: daphne's peak was {grown / MIB:.1f} MiB above its size after the warm-up")
    assert grown < BOUND, f"daphne's peak grew by {grown / MIB:.0f} MiB"


# -- one frame of a large multi-frame instance -----------------------------------------------

LARGE_FRAMES = 100
FRAME_BYTES = 512 * 512 * 2  # 0.5 MiB: 50 MiB of pixel data per instance
FRAME_BOUND = 20 * MIB


def _large_multiframe(study_uid: str, syntax: UID) -> Dataset:
    """A 100-frame instance, uncompressed or as JPEG 2000 fragments (Orthanc stores them as
    they are: no codec runs anywhere); every frame its own bytes, so a wrong one cannot pass."""
    dataset = next(Study(study_uid, generate_uid(), (generate_uid(),)).instances())
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = (
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    )
    dataset.Rows = dataset.Columns = 512
    dataset.NumberOfFrames = LARGE_FRAMES
    frames = [bytes([number % 251]) * FRAME_BYTES for number in range(1, LARGE_FRAMES + 1)]
    dataset.file_meta.TransferSyntaxUID = syntax
    if syntax.is_encapsulated:
        dataset.PixelData = encapsulate(frames, has_bot=True)
        dataset["PixelData"].VR = "OB"
    else:
        dataset.PixelData = b"".join(frames)
    return dataset


LARGE_STUDY_UID = generate_uid()
LARGE = [
    _large_multiframe(LARGE_STUDY_UID, ExplicitVRLittleEndian),
    _large_multiframe(LARGE_STUDY_UID, JPEG2000Lossless),
]


@pytest.fixture(scope="module")
def large_pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    orthanc = OrthancServer("LARGEFRAMES", storage_dir=tmp_path_factory.mktemp("large-frames"))
    with orthanc:
        orthanc.upload([*LARGE, *WARM_UP.instances()])
        yield orthanc


def _frames(root: str, dataset: Dataset, numbers: str, headers: dict[str, str]) -> list[bytes]:
    url = (
        f"{root}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}/frames/{numbers}"
    )
    return [
        part.body for part in parts_as_they_arrive(url, 'multipart/related; type="*/*"', headers)
    ]


@pytest.mark.parametrize("kind", ["c-get", "dicomweb"])
def test_frames_of_a_large_instance_are_read_one_at_a_time(adit_http, api_user, large_pacs, kind):
    """The instance waits on disk as it arrives; each frame asked for is read from there when
    its turn comes: one frame, or all of them, raise the peak by about a frame, not the
    instance."""
    ae_title = {"c-get": "LARGEGET", "dicomweb": "LARGEWEB"}[kind]
    server = server_for(large_pacs, name=f"Large frames ({kind})", kind=kind, ae_title=ae_title)
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    root = api_root(adit_http.url, server)
    pid = adit_http.process.pid
    warm_up = next(WARM_UP.instances())
    _frames(root, warm_up, "1", api_user.headers)
    every_frame = ",".join(str(number) for number in range(1, LARGE_FRAMES + 1))

    for dataset in LARGE:
        name = dataset.file_meta.TransferSyntaxUID.name
        for numbers in ("60", every_frame):
            before = reset_peak(pid)
            frames = _frames(root, dataset, numbers, api_user.headers)
            grown = peak(pid) - before

            expected = [bytes([int(number) % 251]) * FRAME_BYTES for number in numbers.split(",")]
            assert frames == expected, name
            assert grown < FRAME_BOUND, (
                f"{name}, {len(frames)} frame(s) of {FRAME_BYTES / MIB:.1f} MiB: daphne's peak "
                f"grew by {grown / MIB:.0f} MiB (the instance: "
                f"{LARGE_FRAMES * FRAME_BYTES / MIB:.0f} MiB)"
            )
