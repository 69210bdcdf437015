"""The bounded send queue (send_buffer.py) as pynetdicom's threads use it, and the C-STORE
data sets ADIT writes to the socket itself."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

import pytest
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, P_DATA

from adit.core.dicom.send_buffer import (
    SendStalled,
    _BoundedSendQueue,
    _data_set_pdus,
    _SocketTurn,
    _write,
)

KIB = 1024


class _Dul:
    """pynetdicom's DUL thread, as far as the queue sees it."""

    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


def _pdu(size: int) -> P_DATA:
    pdu = P_DATA()
    pdu.presentation_data_value_list.append((1, b"\x00" * size))
    return pdu


def _put_in_thread(sending: _BoundedSendQueue, item) -> threading.Thread:
    thread = threading.Thread(target=sending.put, args=(item,), daemon=True)
    thread.start()
    return thread


def test_a_sender_waits_while_the_queue_holds_its_limit_and_goes_on_once_it_was_taken():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=64 * KIB, stall_seconds=30)
    for _ in range(4):
        sending.put(_pdu(16 * KIB))
    blocked = _put_in_thread(sending, _pdu(16 * KIB))
    blocked.join(timeout=0.3)
    assert blocked.is_alive()  # 80 KiB would exceed the 64 KiB limit
    assert sending.queued_bytes == 64 * KIB

    sending.get(False)  # what pynetdicom's DUL thread does when it sends a PDU
    blocked.join(timeout=2)
    assert not blocked.is_alive()
    assert sending.queued_bytes == 64 * KIB
    assert sending.qsize() == 4


def test_a_pdu_larger_than_the_limit_goes_into_an_empty_queue():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=16 * KIB, stall_seconds=30)
    sending.put(_pdu(100 * KIB))
    assert sending.qsize() == 1


def test_an_abort_never_waits_for_room():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=16 * KIB, stall_seconds=30)
    sending.put(_pdu(16 * KIB))
    sending.put(A_ABORT())
    assert sending.qsize() == 2


def test_nothing_waits_on_an_association_whose_dul_has_ended():
    dul = _Dul()
    sending = _BoundedSendQueue(dul.is_alive, limit=16 * KIB, stall_seconds=30)
    sending.put(_pdu(16 * KIB))
    blocked = _put_in_thread(sending, _pdu(16 * KIB))
    blocked.join(timeout=0.2)
    assert blocked.is_alive()
    dul.alive = False  # aborted: nothing will take from the queue any more
    blocked.join(timeout=2)
    assert not blocked.is_alive()


def test_a_sender_stops_waiting_when_nothing_was_taken_for_the_stall_time():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=16 * KIB, stall_seconds=0.3)
    sending.put(_pdu(16 * KIB))
    started = time.monotonic()
    sending.put(_pdu(16 * KIB))  # the peer stopped reading: pynetdicom's timeouts take over
    assert 0.3 <= time.monotonic() - started < 5
    assert sending.qsize() == 2


# -- C-STORE data sets written to the socket ------------------------------------------------


def _decoded_pdus(stream: bytes) -> list[tuple[int, int, bytes]]:
    """(context ID, message control header, fragment) of each P-DATA-TF PDU, decoded by
    pynetdicom as a peer's DUL would."""
    pdus = []
    while stream:
        assert stream[0] == 0x04
        length = int.from_bytes(stream[2:6], "big")
        pdu = P_DATA_TF()
        pdu.decode(stream[: 6 + length])
        for item in pdu.presentation_data_value_items:
            assert item.data is not None
            pdus.append((item.context_id, item.data[0], item.data[1:]))
        stream = stream[6 + length :]
    return pdus


def _joined(batches) -> bytes:
    return b"".join(bytes(buffer) for batch in batches for buffer in batch)


@pytest.mark.parametrize("size", [0, 1, 16 * KIB - 6, 16 * KIB - 5, 3 * 1024 * KIB + 17])
def test_a_data_set_goes_in_fragments_that_a_peer_puts_back_together(size, tmp_path):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    fragment = 16 * KIB - 6  # what a peer with a maximum PDU length of 16 KiB takes
    file = tmp_path / "instance.dcm"
    file.write_bytes(b"file meta before the data set" + data)
    for source in (memoryview(data), (file, len(b"file meta before the data set"))):
        pdus = _decoded_pdus(_joined(_data_set_pdus(source, 7, fragment)))
        assert b"".join(fragment for _, _, fragment in pdus) == data
        assert all(context_id == 7 for context_id, _, _ in pdus)
        assert all(len(piece) <= fragment for _, _, piece in pdus)
        # Data set fragments; only the last one says so (PS3.8 E.2).
        assert [control for _, control, _ in pdus] == [0x00] * (len(pdus) - 1) + [0x02]
        assert len(pdus) == max(1, -(-size // fragment))


def test_a_write_to_a_peer_that_stopped_reading_ends_after_the_stall_time():
    ours, peer = socket.socketpair()
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KIB)
        started = time.monotonic()
        with pytest.raises(SendStalled, match="no data for 0.3 s"):
            _write(ours, [memoryview(bytes(8 * 1024 * KIB))], stall_seconds=0.3)
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        ours.close()
        peer.close()


def test_a_write_goes_on_as_the_peer_reads():
    ours, peer = socket.socketpair()
    data = bytes(range(256)) * 16 * 1024  # 4 MiB, far more than the socket buffers hold
    received = bytearray()

    def read() -> None:
        while len(received) < len(data) + 12:
            received.extend(peer.recv(64 * KIB))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _write(ours, [b"head", memoryview(data), b"tail of it"[:8]], stall_seconds=5)
        reader.join(timeout=10)
        assert bytes(received) == b"head" + data + b"tail of "
    finally:
        ours.close()
        peer.close()


def test_a_direct_write_waits_until_the_dul_thread_wrote_what_was_queued_before_it():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=64 * KIB, stall_seconds=30)
    turn = _SocketTurn(sending, stall_seconds=30)
    sending.put(_pdu(16 * KIB))
    took_turn = threading.Event()

    def write_directly() -> None:
        with turn.own_turn():
            took_turn.set()

    threading.Thread(target=write_directly, daemon=True).start()
    assert not took_turn.wait(0.2)
    sending.get(False)  # the DUL thread took the PDU ...
    assert not took_turn.wait(0.2)  # ... but has not written it yet
    sending.written()
    assert took_turn.wait(2)


def test_a_direct_write_does_not_wait_forever_for_a_dul_thread_that_writes_nothing():
    sending = _BoundedSendQueue(_Dul().is_alive, limit=64 * KIB, stall_seconds=30)
    turn = _SocketTurn(sending, stall_seconds=0.3)
    sending.put(_pdu(16 * KIB))
    with pytest.raises(SendStalled):
        with turn.own_turn():
            pass


def test_a_write_waits_on_a_socket_numbered_above_what_select_can_watch():
    # A busy web process holds many descriptors; select() fails on one above 1023.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    ours, peer = socket.socketpair()
    try:
        assert ours.fileno() > 1024
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KIB)
        with pytest.raises(SendStalled):
            _write(ours, [memoryview(bytes(8 * 1024 * KIB))], stall_seconds=0.3)
    finally:
        ours.close()
        peer.close()
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
