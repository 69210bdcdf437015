"""Pytest fixtures with two real Orthanc PACS, loaded into the session by the root conftest.

``orthanc1`` holds the synthetic studies of seed 42 (``describe_studies()`` says what exactly)
and must be treated as read-only. ``orthanc2`` starts empty; a test that stores into it asks
for ``empty_orthanc2``, which clears it first. Both know each other, ``ADIT`` (the app's
receiver on ``receiver_port``) and ``STORESCP`` (a dcmtk storescp a test may start on
``storescp_port``) as DICOM modalities, so C-MOVE works between all of them.

dcmtk's tools must be called by absolute path (``dcmtk("findscu")``) with ``DCMTK_ENV``: the
virtualenv holds pynetdicom's Python tools of the same names, and without ``TCP_NODELAY=1``
every C-STORE of dcmtk stalls for 40 ms.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings

from adit.core.demo.orthanc import OrthancServer, free_ports, stop_servers
from adit.core.demo.synthetic import (
    StudySummary,
    describe_ct_series,
    describe_studies,
    generate_ct_series,
    generate_studies,
)
from adit.core.dicom.receiver import Receiver

ORTHANC1_SEED = 42
FRAGILE_SEED = 11
FRAGILE_INSTANCES = 300
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk command line tool, e.g. ``dcmtk("movescu")``."""
    return f"/usr/bin/{tool}"


@dataclass(frozen=True)
class PacsPorts:
    orthanc1_dicom: int
    orthanc1_http: int
    orthanc2_dicom: int
    orthanc2_http: int
    receiver: int
    storescp: int


@pytest.fixture(scope="session")
def pacs_ports() -> PacsPorts:
    """Free ports for the whole test PACS network, chosen together so none is picked twice."""
    return PacsPorts(*free_ports(6))


@pytest.fixture(scope="session")
def receiver_port(pacs_ports: PacsPorts) -> int:
    """Port the Orthancs send C-MOVE results to for the modality ``ADIT``."""
    return pacs_ports.receiver


@pytest.fixture(scope="session")
def storescp_port(pacs_ports: PacsPorts) -> int:
    """Port the Orthancs send C-MOVE results to for the modality ``STORESCP``."""
    return pacs_ports.storescp


def _modalities(ports: PacsPorts) -> dict[str, tuple[str, str, int]]:
    return {
        "ORTHANC1": ("ORTHANC1", "127.0.0.1", ports.orthanc1_dicom),
        "ORTHANC2": ("ORTHANC2", "127.0.0.1", ports.orthanc2_dicom),
        "ADIT": (settings.RECEIVER_AE_TITLE, "127.0.0.1", ports.receiver),
        "STORESCP": ("STORESCP", "127.0.0.1", ports.storescp),
    }


@pytest.fixture(scope="session")
def orthanc1_studies() -> list[StudySummary]:
    """What ``orthanc1`` holds, study by study."""
    return describe_studies(seed=ORTHANC1_SEED)


@pytest.fixture(scope="session")
def orthanc_pair(
    tmp_path_factory, pacs_ports: PacsPorts
) -> Iterator[tuple[OrthancServer, OrthancServer]]:
    """ORTHANC1 with the studies of seed 42 and an empty ORTHANC2, running for the session.

    They are started and stopped together because a clean Orthanc shutdown takes seconds,
    which are paid once when both stop in parallel.
    """
    orthanc1 = OrthancServer(
        "ORTHANC1",
        storage_dir=tmp_path_factory.mktemp("orthanc1"),
        dicom_port=pacs_ports.orthanc1_dicom,
        http_port=pacs_ports.orthanc1_http,
        modalities=_modalities(pacs_ports),
    )
    orthanc2 = OrthancServer(
        "ORTHANC2",
        storage_dir=tmp_path_factory.mktemp("orthanc2"),
        dicom_port=pacs_ports.orthanc2_dicom,
        http_port=pacs_ports.orthanc2_http,
        modalities=_modalities(pacs_ports),
    )
    try:
        orthanc1.start()
        orthanc2.start()
        orthanc1.upload(generate_studies(seed=ORTHANC1_SEED))
        yield orthanc1, orthanc2
    finally:
        stop_servers([orthanc1, orthanc2])


@pytest.fixture(scope="session")
def orthanc1(orthanc_pair: tuple[OrthancServer, OrthancServer]) -> OrthancServer:
    """A running Orthanc ``ORTHANC1`` with the synthetic studies of seed 42. Do not modify."""
    return orthanc_pair[0]


@pytest.fixture(scope="session")
def orthanc2(orthanc_pair: tuple[OrthancServer, OrthancServer]) -> OrthancServer:
    """A running Orthanc ``ORTHANC2``; a test that stores into it uses ``empty_orthanc2``."""
    return orthanc_pair[1]


@pytest.fixture
def empty_orthanc2(orthanc2: OrthancServer) -> OrthancServer:
    """``orthanc2`` with nothing stored, for a test that stores into it."""
    orthanc2.clear()
    return orthanc2


@pytest.fixture(scope="session")
def receiver(receiver_port: int) -> Iterator[Receiver]:
    """ADIT's real C-STORE receiver on ``receiver_port``, which both Orthancs know as ``ADIT``."""
    (channel_port,) = free_ports(1)
    server = Receiver(settings.RECEIVER_AE_TITLE, receiver_port, channel_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiving(receiver: Receiver, settings) -> Receiver:
    """The receiver, with the settings pointing workers' file channel clients at it."""
    settings.FILE_CHANNEL_HOST, settings.FILE_CHANNEL_PORT = receiver.channel_address
    return receiver


@pytest.fixture(scope="session")
def fragile_orthanc(tmp_path_factory, receiver_port: int) -> Iterator[OrthancServer]:
    """An Orthanc of its own with one 300-instance CT study (``fragile_study``), for tests that
    kill it mid-study (``kill()``) and start it again; it knows the receiver as ``ADIT``."""
    orthanc = OrthancServer(
        "FRAGILE",
        storage_dir=tmp_path_factory.mktemp("fragile"),
        modalities={"ADIT": (settings.RECEIVER_AE_TITLE, "127.0.0.1", receiver_port)},
    )
    with orthanc:
        # 128 KiB each: the study does not fit into the sockets' buffers, so a kill mid-way
        # really cuts the stream.
        orthanc.upload(
            generate_ct_series(FRAGILE_INSTANCES, rows=256, columns=256, seed=FRAGILE_SEED)
        )
        yield orthanc


@pytest.fixture
def fragile_pacs(fragile_orthanc: OrthancServer) -> OrthancServer:
    """``fragile_orthanc``, running (a test before may have left it killed)."""
    if not fragile_orthanc.is_running:
        fragile_orthanc.start()
    return fragile_orthanc


@pytest.fixture(scope="session")
def fragile_study() -> StudySummary:
    return describe_ct_series(FRAGILE_INSTANCES, seed=FRAGILE_SEED)
