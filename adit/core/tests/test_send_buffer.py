"""The bounded send queue (send_buffer.py) as pynetdicom's threads use it."""

from __future__ import annotations

import threading
import time

from pynetdicom.pdu_primitives import A_ABORT, P_DATA

from adit.core.dicom.send_buffer import _BoundedSendQueue

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
