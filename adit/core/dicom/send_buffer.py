"""How ADIT's associations send: with a bound on what they hold in memory, and for a
C-STORE's data set, straight to the socket.

pynetdicom encodes a whole DIMSE message into P-DATA PDUs and queues them all at once for its
DUL thread, which sends them as fast as the peer reads: a 200 MiB instance sent from its file
was read whole into that queue, so the file saved nothing. ``bound_sending`` gives an
association a queue that holds at most ``SEND_BUFFER_BYTES`` of P-DATA: the thread that sends
waits for the DUL thread to catch up, and reads the next piece of the file only then.

The DUL thread also costs time per PDU: each goes through its queue, an event of its state
machine and an encoding of its own, about 0.1 ms of CPU, and a 0.5 MB CT slice at the 16 KiB
PDUs most PACS accept takes 32 of them (``cli bench dicomweb`` and ``cli bench transfer``
measure it). ``send_c_store_request`` therefore writes a C-STORE request's PDUs to the socket
itself, from the data set's bytes or file, in a few system calls per megabyte. It takes turns
with the DUL thread (``_SocketTurn``): it writes only once everything queued before it is
written, and the DUL thread writes nothing in between.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
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
        # P-DATA the DUL thread has taken but not yet written to the socket.
        self.being_written = 0

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
        if isinstance(item, P_DATA):
            self.being_written += 1
        return item

    def written(self) -> None:
        """The DUL thread wrote the P-DATA it took last."""
        with self.mutex:
            self.being_written -= 1
            self.not_full.notify_all()

    def wait_until_written(self, stall_seconds: float) -> None:
        """Returns once every P-DATA put so far is on the socket.

        Raises:
            SendStalled: The DUL thread wrote nothing for ``stall_seconds``.
        """
        with self.not_full:
            taken, last_progress = self.taken, time.monotonic()
            while (self.queue or self.being_written) and self._sender_alive():
                self.not_full.wait(_POLL_SECONDS)
                if self.taken != taken:
                    taken, last_progress = self.taken, time.monotonic()
                elif time.monotonic() - last_progress > stall_seconds:
                    raise SendStalled(
                        f"The peer has taken no data for {stall_seconds:g} s (PDUs still queued)."
                    )


def bound_sending(assoc: Association, stall_seconds: float) -> None:
    """Gives an established association the bounded send queue and the turns for writing to
    its socket (see the module docstring)."""
    dul = assoc.dul
    bounded = _BoundedSendQueue(dul.is_alive, SEND_BUFFER_BYTES, stall_seconds)
    old = dul.to_provider_queue
    # Nothing was sent on the association yet, so this is empty; kept in order regardless.
    while True:
        try:
            bounded.put(old.get_nowait())
        except queue.Empty:
            break
    dul.to_provider_queue = bounded
    turn = _SocketTurn(bounded, stall_seconds)
    dul_send = dul._send  # pyright: ignore[reportPrivateUsage]

    def send_in_turn(pdu) -> None:
        with turn.lock:
            try:
                dul_send(pdu)
            finally:
                if isinstance(pdu, P_DATA_TF):
                    bounded.written()

    dul._send = send_in_turn  # pyright: ignore[reportPrivateUsage]
    assoc._adit_socket_turn = turn  # pyright: ignore[reportAttributeAccessIssue]


def _pdu_bytes(item: object) -> int:
    if not isinstance(item, P_DATA):
        return 0
    return sum(len(data) for _, data in item.presentation_data_value_list)


# -- C-STORE requests written to the socket ------------------------------------------------

# Data set fragments for a peer that sets no maximum PDU length (PS3.8 D.1: 0, unlimited).
UNLIMITED_FRAGMENT_BYTES = 1024 * 1024
# What one system call is handed at most; also what is read of a file at once.
_WRITE_BYTES = 1024 * 1024
# Buffers one sendmsg() takes (Linux's IOV_MAX is 1024).
_MAX_BUFFERS = 512
# A P-DATA-TF PDU of one PDV (PS3.8 9.3.5): PDU type 04H, a reserved byte, the PDU length; the
# PDV item's length, its presentation context ID and its message control header (bit 0: a
# command, bit 1: the last fragment).
_PDV_PDU_HEAD = struct.Struct(">BBLLBB")
_PDU_TYPE_P_DATA_TF = 0x04
_DATA_SET_FRAGMENT = 0x00
_LAST_DATA_SET_FRAGMENT = 0x02


class SendStalled(TimeoutError):
    """The peer took no data for as long as the association's network timeout."""


class _SocketTurn:
    """Whose turn it is to write to an association's socket: pynetdicom's DUL thread writes
    each PDU holding ``lock``; ``send_c_store_request`` holds it for a whole message, once the
    DUL thread has written everything queued before."""

    def __init__(self, bounded: _BoundedSendQueue, stall_seconds: float):
        self.lock = threading.Lock()
        self.bounded = bounded
        self.stall_seconds = stall_seconds

    @contextmanager
    def own_turn(self) -> Iterator[None]:
        self.bounded.wait_until_written(self.stall_seconds)
        with self.lock:
            yield


def can_write_directly(assoc: Association) -> bool:
    """Whether ``send_c_store_request`` can send on the association (``bound_sending`` set it
    up, and its socket is a plain one)."""
    socket_wrapper = getattr(assoc.dul, "socket", None)
    return isinstance(getattr(assoc, "_adit_socket_turn", None), _SocketTurn) and (
        type(getattr(socket_wrapper, "socket", None)) is socket.socket
    )


def send_c_store_request(
    assoc: Association, request: C_STORE, context_id: int, data_set: memoryview | tuple[Path, int]
) -> None:
    """Sends a C-STORE request whose data set is already encoded in the context's transfer
    syntax: ``data_set`` is its bytes, or a file and the offset where it begins. The response
    is read as for any request (``assoc.dimse.get_msg``).

    The command set is encoded by pynetdicom, as for its own requests; the data set goes in
    fragments of the peer's maximum PDU length, read from the file piece by piece.

    Raises:
        SendStalled: The peer took no data for the association's network timeout.
        OSError: The connection was lost.
    """
    turn = assoc._adit_socket_turn  # pyright: ignore[reportAttributeAccessIssue]
    assert isinstance(turn, _SocketTurn), "bound_sending() was not called for the association"
    request.DataSet = BytesIO()  # present, so the command says a data set follows; sent below
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    maximum_pdu = assoc.dimse.maximum_pdu_size
    command = [P_DATA_TF(pdata).encode() for pdata in message.encode_msg(context_id, maximum_pdu)]
    fragment = maximum_pdu - 6 if maximum_pdu else UNLIMITED_FRAGMENT_BYTES
    sock = assoc.dul.socket.socket  # pyright: ignore[reportOptionalMemberAccess]
    assert sock is not None, "the association has no connection"
    with turn.own_turn():
        _write(sock, command, turn.stall_seconds)
        for buffers in _data_set_pdus(data_set, context_id, fragment):
            _write(sock, buffers, turn.stall_seconds)


def _data_set_pdus(
    data_set: memoryview | tuple[Path, int], context_id: int, fragment: int
) -> Iterator[list]:
    """The data set's P-DATA-TF PDUs, as the buffers of a write at a time."""
    if isinstance(data_set, memoryview):
        yield from _fragments(data_set, context_id, fragment, is_end=True)
        return
    path, offset = data_set
    with open(path, "rb") as file:
        remaining = file.seek(0, 2) - file.seek(offset)
        # Whole fragments per read, so that only the file's last one is short.
        read_size = max(1, _WRITE_BYTES // fragment) * fragment
        while True:
            piece = memoryview(file.read(min(read_size, remaining)))
            remaining -= len(piece)
            if remaining and not piece:
                raise OSError(f"{path} ended {remaining} byte(s) early")
            yield from _fragments(piece, context_id, fragment, is_end=not remaining)
            if not remaining:
                return


def _fragments(data: memoryview, context_id: int, fragment: int, is_end: bool) -> Iterator[list]:
    """``data`` cut into PDUs of one fragment each, batched by ``_WRITE_BYTES``; the last one
    is the message's last if ``is_end``. An empty end still sends its (empty) last fragment."""
    buffers: list = []
    batched = 0
    start = 0
    while True:
        end = min(start + fragment, len(data))
        last = end == len(data)
        if last and not is_end and start == end:
            break
        control = _LAST_DATA_SET_FRAGMENT if last and is_end else _DATA_SET_FRAGMENT
        length = end - start
        buffers.append(
            _PDV_PDU_HEAD.pack(_PDU_TYPE_P_DATA_TF, 0, length + 6, length + 2, context_id, control)
        )
        buffers.append(data[start:end])
        batched += length
        if batched >= _WRITE_BYTES or last:
            yield buffers
            buffers, batched = [], 0
        if last:
            break
        start = end


def _write(sock: socket.socket, buffers: list, stall_seconds: float) -> None:
    """Writes the buffers in order, waiting at most ``stall_seconds`` at a time for the peer
    to take more; the socket stays blocking for pynetdicom's own use of it."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    # poll(), not select(): a busy process may hold more than select's 1024 descriptors.
    writable = select.poll()
    writable.register(sock, select.POLLOUT)
    while views:
        try:
            sent = sock.sendmsg(views[:_MAX_BUFFERS], [], socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if not sent:
            if not writable.poll(stall_seconds * 1000):
                raise SendStalled(f"The peer has taken no data for {stall_seconds:g} s.")
            continue
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0
