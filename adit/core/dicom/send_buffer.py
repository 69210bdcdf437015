"""A bound on what an association holds in memory while it sends.

pynetdicom encodes a whole DIMSE message into P-DATA PDUs and queues them all at once for its
DUL thread, which sends them as fast as the peer reads: a 200 MiB instance sent from its file
was read whole into that queue, so the file saved nothing. ``bound_sending`` gives an
association a queue that holds at most ``SEND_BUFFER_BYTES`` of P-DATA: the thread that sends
waits for the DUL thread to catch up, and reads the next piece of the file only then.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA

logger = logging.getLogger(__name__)

# Far more than a socket takes at once, so the peer never waits for the sender's next PDU.
SEND_BUFFER_BYTES = 4 * 1024 * 1024
# How often a waiting sender looks whether the association is still alive.
_POLL_SECONDS = 0.05


class _BoundedSendQueue(queue.Queue):
    """pynetdicom's ``to_provider_queue``, holding at most ``limit`` bytes of P-DATA.

    Only the threads that send wait here; the DUL thread takes from the queue and never puts
    into it. A PDU larger than the limit goes into an empty queue, so nothing waits forever on
    room that can never come. When the DUL thread has ended (the association was aborted or
    lost) or has taken nothing for ``stall_seconds``, a PDU goes in without waiting: the
    association then ends by pynetdicom's own timeouts as it would without the bound.
    """

    def __init__(self, sender_alive: Callable[[], bool], limit: int, stall_seconds: float):
        super().__init__()
        self._sender_alive = sender_alive
        self._limit = limit
        self._stall_seconds = stall_seconds
        self.queued_bytes = 0
        self.taken = 0

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        size = _pdu_bytes(item)
        with self.not_full:
            taken = self.taken
            last_progress = time.monotonic()
            while (
                size
                and self.queued_bytes
                and self.queued_bytes + size > self._limit
                and self._sender_alive()
            ):
                self.not_full.wait(_POLL_SECONDS)
                if self.taken != taken:
                    taken = self.taken
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self._stall_seconds:
                    logger.warning(
                        "The peer has taken no data for %g s; queuing the rest of the message.",
                        self._stall_seconds,
                    )
                    break
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def _put(self, item) -> None:
        self.queue.append(item)
        self.queued_bytes += _pdu_bytes(item)

    def _get(self):
        item = self.queue.popleft()
        self.queued_bytes -= _pdu_bytes(item)
        self.taken += 1
        return item


def bound_sending(assoc: Association, stall_seconds: float) -> None:
    """Gives an established association the bounded send queue (see the module docstring)."""
    bounded = _BoundedSendQueue(assoc.dul.is_alive, SEND_BUFFER_BYTES, stall_seconds)
    old = assoc.dul.to_provider_queue
    # Nothing was sent on the association yet, so this is empty; kept in order regardless.
    while True:
        try:
            bounded.put(old.get_nowait())
        except queue.Empty:
            break
    assoc.dul.to_provider_queue = bounded


def _pdu_bytes(item: object) -> int:
    if not isinstance(item, P_DATA):
        return 0
    return sum(len(data) for _, data in item.presentation_data_value_list)
