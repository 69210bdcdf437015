"""The file channel: how the receiver hands each stored instance to the worker that asked for it.

A worker that fetches by C-MOVE cannot receive the instances itself: the PACS sends them by
C-STORE to ADIT's receiver, a separate process. So the worker first subscribes at the receiver
for what it is about to fetch, then sends the C-MOVE, then takes the instances from its
subscription. This module holds the wire protocol and the worker's side; the receiver's side is
in `receiver.py`.

Wire protocol, one TCP connection per subscription. Every message is a frame: a 4-byte
big-endian length, then that many bytes. A header frame holds a UTF-8 JSON object; an instance
travels as its JSON header frame followed by one frame with the file's bytes.

    receiver -> worker  {"type": "challenge", "protocol": 2, "nonce": <64 hex digits>}
    worker -> receiver  {"type": "subscribe", "protocol": 2, "source_ae": ..., "study_uid": ...,
                         "series_uids": [...], "move_message_id": <int, optional>,
                         "mac": <HMAC, see below>}
    receiver -> worker  {"type": "subscribed"}
                        or {"type": "refused",
                            "reason": "unauthenticated" | "invalid", "message": ...}
    receiver -> worker  {"type": "instance", "sop_instance_uid": ..., "series_uid": ...,
                         "calling_ae": ...}, then a frame with the DICOM Part 10 file
    worker -> receiver  {"type": "ack", "sop_instance_uid": ...}
    receiver -> worker  {"type": "refused_caller", "calling_ae": ..., "sop_instance_uid": ...}
                        (an instance of the subscribed study came from another AE title and
                        was refused; no ack), or {"type": "stopping"} before the receiver ends

The receiver answers the PACS's C-STORE with success only after the worker acknowledged the
instance, and refuses it otherwise, so an instance is never reported as stored while nobody
holds it. Closing the connection ends the subscription.

Subscriptions may overlap: two workers fetching the same study (or a study and one of its
series) from the same PACS each send a C-MOVE, so the PACS sends every instance they share
once per C-MOVE, and the receiver gives each copy to a subscription that has not had that
instance yet. "move_message_id" is the Message ID of the worker's C-MOVE; a PACS that names
it in its C-STORE (MoveOriginatorMessageID, PS3.7 9.1.1.1) gets its instances routed to that
subscription first.

Every connection is authenticated by challenge and response: the worker proves it knows the
channel's shared secret (settings.FILE_CHANNEL_SECRET, by default derived from SECRET_KEY) by
sending the hex HMAC-SHA256, under that secret, of the receiver's fresh random nonce and its
whole subscribe message (see `subscription_mac`). A subscription without the right MAC is
refused before anything is registered, and a recorded one cannot be replayed because the nonce
differs for every connection. The channel does not encrypt: instances travel in clear, so keep
it on loopback or a private network (or a VPN) between ADIT's hosts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import selectors
import socket
import struct
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from adit.core.dicom.errors import DicomError, RetriableDicomError, ServiceStoppingError
from adit.core.validators import shown

# 2: the receiver challenges every connection and the worker answers with a MAC.
PROTOCOL_VERSION = 2

# Headers are a few hundred bytes; the cap keeps a confused peer from making us allocate
# gigabytes for what should be JSON.
MAX_HEADER_SIZE = 64 * 1024
_LENGTH_PREFIX = struct.Struct(">I")
MAX_FRAME_SIZE = 2**32 - 1
# What a large instance is received in, piece by piece, on its way into a file.
_FILE_CHUNK = 1024 * 1024

# Once the first byte of a message has arrived, the rest is already on its way; a peer that
# stops in the middle of a message for this long is gone.
STALL_TIMEOUT = 30.0

# DICOM (PS3.5 6.2) limits an AE title to 16 characters and a UID to 64.
_MAX_AE_TITLE = 16
_MAX_UID = 64
MAX_MESSAGE_ID = 0xFFFF


class ChannelClosedError(ConnectionError):
    """The peer closed the connection, or stopped sending in the middle of a frame."""


class ProtocolError(Exception):
    """The peer sent something that is not a valid message of this protocol."""


class ReceiverStoppingError(ServiceStoppingError):
    """The receiver shut down (SIGTERM, a restart) in the middle of a subscription."""


class ChannelAuthenticationError(DicomError):
    """The receiver refused the worker because their file channel secrets differ.

    Retrying will not help: the secret is configuration, the same on the receiver and on every
    worker.
    """


# What a MAC of this protocol covers starts with this, so that it can mean nothing else.
_MAC_CONTEXT = f"adit file channel {PROTOCOL_VERSION} subscribe\n".encode()


def configured_secret() -> bytes:
    """The shared secret of the channel from the Django settings: FILE_CHANNEL_SECRET, or, when
    that is empty, one derived from SECRET_KEY (which every ADIT host shares anyway), so that a
    single host needs no configuration."""
    from django.conf import settings

    if settings.FILE_CHANNEL_SECRET:
        return settings.FILE_CHANNEL_SECRET.encode()
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, b"adit.core.dicom.file_channel: secret", hashlib.sha256).digest()


def new_nonce() -> str:
    return secrets.token_hex(32)


def subscription_mac(secret: bytes, nonce: str, message: dict[str, Any]) -> str:
    """The MAC a subscribe message carries: HMAC-SHA256 under `secret` of the receiver's nonce
    and the message (without its "mac") as canonical JSON."""
    fields = {name: value for name, value in message.items() if name != "mac"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    payload = _MAC_CONTEXT + nonce.encode() + b"\n" + canonical.encode()
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def has_valid_mac(secret: bytes, nonce: str, message: dict[str, Any]) -> bool:
    mac = message.get("mac")
    if not isinstance(mac, str):
        return False
    # A comparison in constant time tells a guesser nothing about how much of the MAC was right.
    return hmac.compare_digest(mac.encode(), subscription_mac(secret, nonce, message).encode())


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Sends one length-prefixed frame."""
    if len(payload) > MAX_FRAME_SIZE:
        raise ValueError(f"A frame holds at most {MAX_FRAME_SIZE} bytes, not {len(payload)}.")
    sock.sendall(_LENGTH_PREFIX.pack(len(payload)))
    sock.sendall(payload)


def send_file_frame(sock: socket.socket, file: BinaryIO) -> None:
    """Sends a whole file as one frame, by the kernel (sendfile), never whole in memory."""
    size = os.fstat(file.fileno()).st_size
    if size > MAX_FRAME_SIZE:
        raise ValueError(f"A frame holds at most {MAX_FRAME_SIZE} bytes, not {size}.")
    sock.sendall(_LENGTH_PREFIX.pack(size))
    sock.sendfile(file, 0, size)


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """Sends a JSON header frame."""
    send_frame(sock, json.dumps(message).encode())


def recv_frame(sock: socket.socket, max_size: int = MAX_FRAME_SIZE) -> bytearray:
    """Receives one frame.

    Raises:
        ChannelClosedError: The connection ended, also in the middle of the frame.
        ProtocolError: The frame is longer than `max_size`.
    """
    (size,) = _LENGTH_PREFIX.unpack(_recv_exactly(sock, _LENGTH_PREFIX.size))
    if size > max_size:
        raise ProtocolError(f"A frame of {size} bytes exceeds the limit of {max_size} bytes.")
    # Not copied into bytes: an instance of hundreds of megabytes must not be held twice.
    return _recv_exactly(sock, size)


def recv_instance_frame(sock: socket.socket, file_above: int | None) -> bytearray | BinaryIO:
    """Receives one frame: in memory, or when longer than ``file_above`` bytes into an
    anonymous temporary file (open at its start, the caller's), as it arrives.

    Raises:
        ChannelClosedError: The connection ended, also in the middle of the frame.
    """
    (size,) = _LENGTH_PREFIX.unpack(_recv_exactly(sock, _LENGTH_PREFIX.size))
    if file_above is None or size <= file_above:
        return _recv_exactly(sock, size)
    file = tempfile.TemporaryFile(prefix="adit-received-")
    try:
        buffer = bytearray(min(size, _FILE_CHUNK))
        view = memoryview(buffer)
        left = size
        while left:
            count = _recv_into(sock, view[: min(left, len(buffer))])
            file.write(view[:count])
            left -= count
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """Receives a JSON header frame.

    Raises:
        ChannelClosedError: The connection ended.
        ProtocolError: The frame is not a JSON object with a "type".
    """
    payload = recv_frame(sock, MAX_HEADER_SIZE)
    try:
        message = json.loads(payload)
    except ValueError as err:
        raise ProtocolError(f"A header frame is not valid JSON: {err}") from err
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("A header frame is not a JSON object with a 'type'.")
    return message


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        received += _recv_into(sock, view[received:])
    return buffer


def _recv_into(sock: socket.socket, view: memoryview) -> int:
    """Receives some bytes into ``view`` (at least one); how many."""
    try:
        count = sock.recv_into(view)
    except TimeoutError as err:
        raise ChannelClosedError(f"The peer stalled for more than {STALL_TIMEOUT} s.") from err
    if count == 0:
        raise ChannelClosedError("The peer closed the connection.")
    return count


def wait_readable(sock: socket.socket, timeout: float | None) -> bool:
    """Waits until data (or the end of the connection) can be read; False after `timeout` s."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _clean_value(value: object, name: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"The {name} is missing or not a string.")
    # DICOM pads values with spaces, and leading and trailing spaces of an AE title are not
    # significant (PS3.5 6.2), so both sides must compare them stripped.
    value = value.strip()
    if not value or len(value) > max_length:
        raise ProtocolError(f"The {name} must have 1 to {max_length} characters, not {value!r}.")
    return value


@dataclass(frozen=True)
class SubscriptionScope:
    """Which instances a subscription receives.

    Attributes:
        source_ae: The calling AE title of the associations that deliver the instances, which
            for a C-MOVE is the AE title of the PACS that was asked.
        study_uid: The StudyInstanceUID.
        series_uids: The SeriesInstanceUIDs to receive; empty means the whole study.
        move_message_id: The Message ID of the C-MOVE the worker sends for these instances,
            if it chose one: the instances a PACS stores for that C-MOVE go here first.
    """

    source_ae: str
    study_uid: str
    series_uids: frozenset[str] = frozenset()
    move_message_id: int | None = None

    @classmethod
    def create(
        cls,
        source_ae: str,
        study_uid: str,
        series_uids: Collection[str] = (),
        move_message_id: int | None = None,
    ) -> SubscriptionScope:
        """Validates and normalizes the caller's values.

        Raises:
            ValueError: A value is empty or too long for DICOM.
        """
        if isinstance(series_uids, str):
            raise ValueError("series_uids must be a collection of UIDs, not one string.")
        try:
            return cls.from_message(
                {
                    "source_ae": source_ae,
                    "study_uid": study_uid,
                    "series_uids": list(series_uids),
                    "move_message_id": move_message_id,
                }
            )
        except ProtocolError as err:
            raise ValueError(str(err)) from err

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> SubscriptionScope:
        """Reads the scope from a subscribe message.

        Raises:
            ProtocolError: A field is missing or invalid.
        """
        series_uids = message.get("series_uids", [])
        if not isinstance(series_uids, list):
            raise ProtocolError("The field 'series_uids' must be a list.")
        message_id = message.get("move_message_id")
        # A DIMSE Message ID is an unsigned 16-bit number (PS3.7 E.1); bool is no number here.
        if message_id is not None and (
            not isinstance(message_id, int)
            or isinstance(message_id, bool)
            or not 0 <= message_id <= MAX_MESSAGE_ID
        ):
            raise ProtocolError(
                f"The field 'move_message_id' must be a number from 0 to {MAX_MESSAGE_ID}."
            )
        return cls(
            source_ae=_clean_value(message.get("source_ae"), "source AE title", _MAX_AE_TITLE),
            study_uid=_clean_value(message.get("study_uid"), "StudyInstanceUID", _MAX_UID),
            series_uids=frozenset(
                _clean_value(uid, "SeriesInstanceUID", _MAX_UID) for uid in series_uids
            ),
            move_message_id=message_id,
        )

    def to_message(self) -> dict[str, Any]:
        message = {
            "type": "subscribe",
            "protocol": PROTOCOL_VERSION,
            "source_ae": self.source_ae,
            "study_uid": self.study_uid,
            "series_uids": sorted(self.series_uids),
        }
        if self.move_message_id is not None:
            message["move_message_id"] = self.move_message_id
        return message

    def covers(self, calling_ae: str, study_uid: str, series_uid: str) -> bool:
        """Whether an instance stored by `calling_ae` belongs to this subscription."""
        return (
            calling_ae.strip() == self.source_ae
            and study_uid == self.study_uid
            and (not self.series_uids or series_uid in self.series_uids)
        )

    def describe(self) -> str:
        series = f" ({len(self.series_uids)} series)" if self.series_uids else ""
        return f"study {self.study_uid}{series} from {self.source_ae}"


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance as the PACS stored it at the receiver.

    Attributes:
        sop_instance_uid: The instance's SOPInstanceUID.
        series_uid: Its SeriesInstanceUID.
        calling_ae: The AE title of the node that stored it.
        data: The complete DICOM Part 10 file (preamble, file meta and data set), as received:
            its bytes, or for a large instance an anonymous temporary file open at its start,
            which the taker closes (see ``Subscription.receive``).
    """

    sop_instance_uid: str
    series_uid: str
    calling_ae: str
    data: bytes | bytearray | BinaryIO


class Subscription:
    """An active subscription at the receiver; made by `FileChannelClient.subscribe`.

    Not thread-safe: one thread takes the instances.
    """

    def __init__(self, sock: socket.socket, scope: SubscriptionScope, receiver_address: str):
        self._sock = sock
        self.scope = scope
        self._receiver_address = receiver_address
        # Calling AE title -> instances of the study the receiver refused from it: the PACS
        # calls with another AE title than ADIT knows it by.
        self.refused_callers: dict[str, int] = {}

    def receive(self, timeout: float, file_above: int | None = None) -> ReceivedInstance | None:
        """Takes the next instance, waiting at most `timeout` seconds for it; one larger than
        ``file_above`` bytes arrives into a temporary file instead of memory.

        The PACS's C-STORE of an instance waits until the instance is taken here. After the
        receiver's delivery timeout (5 s by default) it refuses the instance and ends the
        subscription. So call this in a loop while the C-MOVE runs in another thread, and do
        little work between calls.

        Returns:
            The instance, or None when none arrived within `timeout` seconds.

        Raises:
            RetriableDicomError: The connection to the receiver was lost.
            DicomError: The receiver sent something this client does not understand.
        """
        if not wait_readable(self._sock, timeout):
            return None
        try:
            header = recv_message(self._sock)
            if header["type"] == "refused_caller":
                caller = str(header["calling_ae"])
                self.refused_callers[caller] = self.refused_callers.get(caller, 0) + 1
                return None
            if header["type"] == "stopping":
                raise ReceiverStoppingError(
                    f"The DICOM receiver at {self._receiver_address} stopped while receiving "
                    f"{self.scope.describe()}."
                )
            if header["type"] != "instance":
                raise ProtocolError(f"Expected an instance, got a '{header['type']}' message.")
            instance = ReceivedInstance(
                sop_instance_uid=str(header["sop_instance_uid"]),
                series_uid=str(header["series_uid"]),
                calling_ae=str(header["calling_ae"]),
                data=recv_instance_frame(self._sock, file_above),
            )
            send_message(self._sock, {"type": "ack", "sop_instance_uid": instance.sop_instance_uid})
        except (KeyError, ProtocolError) as err:
            raise DicomError(
                f"The DICOM receiver at {self._receiver_address} sent an invalid message while "
                f"delivering {self.scope.describe()}: {err}"
            ) from err
        except OSError as err:  # ChannelClosedError included
            raise RetriableDicomError(
                f"The connection to the DICOM receiver at {self._receiver_address} was lost "
                f"while receiving {self.scope.describe()}: {err}"
            ) from err
        return instance


class FileChannelClient:
    """The worker's side of the file channel.

    Args:
        host: Where the receiver's file channel listens (settings.FILE_CHANNEL_HOST).
        port: Its port (settings.FILE_CHANNEL_PORT).
        connect_timeout: Seconds to wait for the connection and for each answer of the receiver
            while subscribing.
        secret: The channel's shared secret; None takes it from the settings
            (`configured_secret`).
    """

    def __init__(
        self, host: str, port: int, connect_timeout: float = 5, secret: bytes | None = None
    ):
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.secret = configured_secret() if secret is None else secret

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @contextmanager
    def subscribe(
        self,
        source_ae: str,
        study_uid: str,
        series_uids: Collection[str] = (),
        move_message_id: int | None = None,
    ) -> Iterator[Subscription]:
        """Subscribes to the instances `source_ae` will store of a study or some of its series.

        The subscription is active when the block is entered, so a C-MOVE sent inside it cannot
        race ahead of it. It ends when the block is left.

        Args:
            source_ae: The AE title the PACS calls from when it stores (usually its own).
            study_uid: The StudyInstanceUID.
            series_uids: Only these series; empty means the whole study.
            move_message_id: The Message ID the worker's C-MOVE will carry; it helps the
                receiver tell this fetch's copies from those of an overlapping one.

        Raises:
            ValueError: A value is empty or too long for DICOM.
            ChannelAuthenticationError: The receiver has another secret than this worker.
            RetriableDicomError: The receiver cannot be reached or did not answer in time.
            DicomError: The receiver refused the subscription as invalid, or speaks another
                version of the protocol.
        """
        scope = SubscriptionScope.create(source_ae, study_uid, series_uids, move_message_id)
        sock = self._connect()
        try:
            self._register(sock, scope)
            sock.settimeout(STALL_TIMEOUT)
            yield Subscription(sock, scope, self.address)
        finally:
            sock.close()

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except ConnectionRefusedError as err:
            raise RetriableDicomError(
                f"The DICOM receiver is not reachable at {self.address} (connection refused). "
                "Is the receiver running ('uv run cli up' starts it)?"
            ) from err
        except TimeoutError as err:
            raise RetriableDicomError(
                f"The DICOM receiver is not reachable at {self.address} (no answer within "
                f"{self.connect_timeout} s)."
            ) from err
        except OSError as err:
            raise RetriableDicomError(
                f"The DICOM receiver is not reachable at {self.address} ({err})."
            ) from err
        # Acks are tiny; without this, Nagle's algorithm and the peer's delayed ACK would hold
        # each one back for ~40 ms, and with it the PACS's next C-STORE.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _register(self, sock: socket.socket, scope: SubscriptionScope) -> None:
        try:
            challenge = self._answer(sock, f"its challenge for {scope.describe()}")
            if (
                challenge["type"] != "challenge"
                or challenge.get("protocol") != PROTOCOL_VERSION
                or not isinstance(challenge.get("nonce"), str)
            ):
                raise DicomError(
                    f"The DICOM receiver at {self.address} speaks another version of the file "
                    f"channel protocol (it sent {shown(str(challenge))}; this worker speaks "
                    f"version {PROTOCOL_VERSION}). Run the same ADIT version on the receiver and "
                    "workers."
                )
            request = scope.to_message()
            request["mac"] = subscription_mac(self.secret, challenge["nonce"], request)
            send_message(sock, request)
            reply = self._answer(sock, f"the subscription to {scope.describe()}")
        except (OSError, ProtocolError) as err:
            raise RetriableDicomError(
                f"The connection to the DICOM receiver at {self.address} was lost while "
                f"subscribing to {scope.describe()}: {err}"
            ) from err
        if reply["type"] == "subscribed":
            return
        message = str(reply.get("message", reply))
        if reply["type"] == "refused" and reply.get("reason") == "unauthenticated":
            raise ChannelAuthenticationError(
                f"The DICOM receiver at {self.address} refused this worker: the file channel "
                "secrets differ. Set the same FILE_CHANNEL_SECRET (or, where it is empty, the "
                "same DJANGO_SECRET_KEY) on the receiver's host and on every worker's host."
            )
        raise DicomError(
            f"The DICOM receiver at {self.address} refused the subscription: {message}"
        )

    def _answer(self, sock: socket.socket, awaited: str) -> dict[str, Any]:
        if not wait_readable(sock, self.connect_timeout):
            raise RetriableDicomError(
                f"The DICOM receiver at {self.address} did not send {awaited} within "
                f"{self.connect_timeout} s."
            )
        return recv_message(sock)
