"""The two Orthanc PACS of the demo mode ('uv run cli up --demo')."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from adit.core.demo.orthanc import OrthancServer


def demo_pacs() -> list[OrthancServer]:
    """ORTHANC1 and ORTHANC2 as the settings place them, keeping their data in the data folder.

    Each knows the other and ADIT's receiver, so C-MOVE works between all three.
    """
    receiver = (settings.RECEIVER_AE_TITLE, settings.RECEIVER_HOST, settings.RECEIVER_PORT)
    nodes = {
        "ORTHANC1": (settings.ORTHANC1_URL, settings.ORTHANC1_DICOM_PORT),
        "ORTHANC2": (settings.ORTHANC2_URL, settings.ORTHANC2_DICOM_PORT),
    }
    modalities = {
        name: (name, "127.0.0.1", dicom_port) for name, (_url, dicom_port) in nodes.items()
    }
    modalities["ADIT"] = receiver
    return [
        OrthancServer(
            name,
            storage_dir=settings.DATA_DIR / "demo" / name.lower(),
            dicom_port=dicom_port,
            http_port=urlsplit(url).port,
            modalities=modalities,
        )
        for name, (url, dicom_port) in nodes.items()
    ]
