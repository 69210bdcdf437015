"""A C-STORE destination that fails while an instance is being sent to it: one that stops
reading, one that hangs up. A real Orthanc cannot be made to do either, so the destination is
a fake PACS (pynetdicom) whose reading the test stops or whose connection it closes.

ADIT writes an unchanged instance's data set to the socket itself (send_buffer.py); these tests
check that such a failure ends the store promptly with an error that names the destination,
never a hang."""

from __future__ import annotations

import threading
import time

import pytest
from pynetdicom import evt

from adit.core.dicom.dimse import DimseConnector, DimsePeer, DimseTimeouts
from adit.core.dicom.errors import DicomTimeoutError, RetriableDicomError
from adit.core.dicom.files import encode_instance, read_instance
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

SIDE = 4096  # a 4096 x 4096 16-bit image: 32 MiB, far more than the sockets buffer


def _large_unchanged_instance():
    dataset = fake_ct_instance("1.2.3.4", "1.2.3.4.1", 1, pixel_bytes=2)
    dataset.Rows = dataset.Columns = SIDE
    dataset.PixelData = bytes(SIDE * SIDE * 2)
    # As it would arrive from a PACS: read from its bytes, which it is sent as.
    return read_instance(encode_instance(dataset))


def _connector(pacs: FakePacs, network_timeout: float) -> DimseConnector:
    peer = DimsePeer(
        name="Broken destination", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port
    )
    timeouts = DimseTimeouts(connection=5, acse=5, dimse=10, network=network_timeout)
    return DimseConnector(peer, "ADIT", timeouts)


def _accept_any_store(event) -> int:
    return 0x0000


def test_a_destination_that_stops_reading_mid_instance_ends_the_store_after_the_network_timeout():
    stalled = []

    def stop_reading(event) -> None:
        stalled.append(event.assoc)
        event.assoc.dul._is_transport_event = lambda: False

    with FakePacs(
        "STALLED", store=_accept_any_store, more_handlers=[(evt.EVT_ACCEPTED, stop_reading)]
    ) as pacs:
        try:
            connector = _connector(pacs, network_timeout=1)
            started = time.monotonic()
            with pytest.raises(DicomTimeoutError, match="to Broken destination.*no data for 1 s"):
                connector.store([_large_unchanged_instance()])
            assert time.monotonic() - started < 15
        finally:
            for assoc in stalled:  # its reader would never see the connection end
                assoc.dul.kill_dul()
                assoc._kill = True


def test_a_destination_that_hangs_up_mid_instance_ends_the_store_with_a_retriable_error():
    pdus_received = 0
    hung_up = threading.Event()

    def hang_up_after_a_few_pdus(event) -> None:
        nonlocal pdus_received
        pdus_received += 1
        if pdus_received == 20 and not hung_up.is_set():
            hung_up.set()
            event.assoc.dul.socket.socket.close()

    with FakePacs(
        "HANGSUP",
        store=_accept_any_store,
        more_handlers=[(evt.EVT_PDU_RECV, hang_up_after_a_few_pdus)],
    ) as pacs:
        connector = _connector(pacs, network_timeout=5)
        started = time.monotonic()
        with pytest.raises(RetriableDicomError, match="Broken destination"):
            connector.store([_large_unchanged_instance()])
        assert hung_up.is_set()
        assert time.monotonic() - started < 15
