"""A study of large multi-frame instances fetched with a small byte budget: the fetching
process grows by about the budget, not by the study or its instances.

Each fetch runs in a process of its own (fetch_memory_probe.py), so that its peak resident
set size is its own. Numbers of the issue this guards: six 200 MB instances peaked at 1.2 GB
over C-GET (the whole study queued) and 2.4 GB over WADO-RS (twice the study).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.orthanc_fixtures import OrthancServer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
FRAMES = 80  # of 512 x 512 x 16 bit: 40 MiB an instance
INSTANCE_BYTES = FRAMES * 512 * 512 * 2
INSTANCES = 6
BUDGET = 16 * MIB
PATIENT_ID = "MEMORY1"


def _large_instances(study_uid: str, series_uid: str) -> Iterator[Dataset]:
    for number in range(1, INSTANCES + 1):
        sop_uid = generate_uid()
        dataset = Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = sop_uid
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.PatientID = PATIENT_ID
        dataset.PatientName = "Memory^Test"
        dataset.StudyDate = "20240101"
        dataset.Modality = "CT"
        dataset.InstanceNumber = number
        dataset.Rows = dataset.Columns = 512
        dataset.NumberOfFrames = FRAMES
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 0
        # Each instance its own bytes, so that nothing can be shared between them.
        dataset.PixelData = number.to_bytes(2, "little") * (INSTANCE_BYTES // 2)
        yield dataset


@pytest.fixture(scope="module")
def large_study(tmp_path_factory, receiver_port) -> Iterator[tuple[OrthancServer, str]]:
    from django.conf import settings

    study_uid, series_uid = generate_uid(), generate_uid()
    orthanc = OrthancServer(
        "HEAVY",
        storage_dir=tmp_path_factory.mktemp("heavy"),
        modalities={"ADIT": (settings.RECEIVER_AE_TITLE, "127.0.0.1", receiver_port)},
    )
    with orthanc:
        orthanc.upload(_large_instances(study_uid, series_uid))
        yield orthanc, study_uid


def _server_fields(orthanc: OrthancServer, protocol: str) -> dict:
    if protocol == "WADO-RS":
        return {
            "name": "HEAVY web",
            "ae_title": "HEAVYW",
            "dicomweb_root_url": orthanc.dicomweb_root,
            "dicomweb_qido_support": True,
            "dicomweb_wado_support": True,
        }
    fields = {
        "name": "HEAVY",
        "ae_title": "HEAVY",
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "study_root_find_support": True,
    }
    fields["study_root_get_support" if protocol == "C-GET" else "study_root_move_support"] = True
    return fields


def _probe(arguments: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "adit.core.tests.fetch_memory_probe", json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("protocol", ["C-GET", "WADO-RS", "C-MOVE"])
def test_a_fetch_holds_the_budget_and_the_instances_in_flight_not_the_study(
    protocol, large_study, receiving
):
    orthanc, study_uid = large_study
    report = _probe(
        {
            "server": _server_fields(orthanc, protocol),
            "patient_id": PATIENT_ID,
            "study_uid": study_uid,
            "budget_bytes": BUDGET,
            "channel_port": receiving.channel_address[1],
        }
    )
    assert report["instances"] == INSTANCES
    assert report["pixel_bytes"] == INSTANCES * INSTANCE_BYTES
    grown = report["peak"] - report["baseline"]
    print(f"{protocol}: grew by {grown / MIB:.0f} MiB")
    # The budget, the pixel data the consumer reads (each instance arrives into a file and
    # waits there), and some allocator slack: far less than the 240 MiB study, which the
    # fetch held whole (C-GET), twice (WADO-RS) before.
    assert grown < BUDGET + INSTANCE_BYTES + 16 * MIB, f"grew by {grown / MIB:.0f} MiB"


@pytest.mark.parametrize("protocol", ["C-GET", "WADO-RS", "C-MOVE"])
def test_a_transfer_of_large_instances_holds_about_its_budget_not_the_instances(
    protocol, large_study, receiving, empty_orthanc2
):
    orthanc, study_uid = large_study
    report = _probe(
        {
            "server": _server_fields(orthanc, protocol),
            "destination": {
                "name": "ORTHANC2",
                "ae_title": empty_orthanc2.ae_title,
                "host": "127.0.0.1",
                "port": empty_orthanc2.dicom_port,
                "store_scp_support": True,
            },
            "patient_id": PATIENT_ID,
            "study_uid": study_uid,
            "budget_bytes": BUDGET,
            "channel_port": receiving.channel_address[1],
        }
    )
    assert report["instances"] == INSTANCES
    assert len(empty_orthanc2.study_instance_uids(study_uid)) == INSTANCES
    grown = report["peak"] - report["baseline"]
    print(f"{protocol} stored: grew by {grown / MIB:.0f} MiB")
    # Each instance arrives into a file (by C-GET, from the receiver, as a WADO-RS part) and
    # is sent from it in pieces, never whole in memory: the process holds its budget and some
    # allocator slack, less than one of the 40 MiB instances.
    assert grown < BUDGET + 8 * MIB, f"grew by {grown / MIB:.0f} MiB"
