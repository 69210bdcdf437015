"""ADIT's C-STORE receiver: takes the instances a PACS sends after a C-MOVE and hands each one
to the worker that asked for it.

It is built in three thin layers:

1. `handle_store`, the pynetdicom event handler of the storage SCP, reads the three UIDs that
   route an instance and answers the C-STORE with a status;
2. `SubscriptionRegistry.deliver`, one plain function, finds the subscription the instance
   belongs to and hands it over;
3. `FileChannelServer` accepts the workers' subscriptions, each authenticated with the
   channel's shared secret, and keeps the registry current.

Each instance is delivered to exactly one subscription or refused: an instance nobody asked for
must make the PACS report a failed sub-operation, never vanish.

Subscriptions may overlap (two workers fetching the same study from the same PACS, or a study
and one of its series): each sends its own C-MOVE, so the PACS stores an instance they share
once for each, and every copy goes to a subscription that covers it and has not had it yet.
Which one gets which copy does not matter, as long as each gets the instance once; a PACS that
names the C-MOVE a C-STORE belongs to (MoveOriginatorMessageID) gets it routed to the
subscription of that C-MOVE first. A copy no subscription still lacks is refused like any
instance nobody asked for.
"""

from __future__ import annotations

import logging
import signal
import socket
import socketserver
import threading
import time
from typing import TYPE_CHECKING, BinaryIO, cast

from pydicom import dcmread
from pydicom.tag import Tag
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian
from pynetdicom import (
    AE,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
    build_context,
    evt,
)
from pynetdicom.dimse_primitives import C_STORE

from adit.core.dicom.dimse import discard_unfinished_instance, received_file
from adit.core.dicom.file_channel import (
    PROTOCOL_VERSION,
    ProtocolError,
    SubscriptionScope,
    configured_secret,
    has_valid_mac,
    new_nonce,
    recv_message,
    send_file_frame,
    send_message,
    wait_readable,
)
from adit.core.validators import shown

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext
    from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# An instance no worker asked for is refused with "Refused: Not Authorized" (PS3.7 9.1.1.1.9
# and Annex C). That is what happened: ADIT accepts only instances it requested. The Storage
# Service Class's own codes (PS3.4 Table B.2-1) all say something false here: "Out of Resources"
# (A7xx) invites the PACS to retry, and "Cannot understand" (Cxxx) and "Data Set does not match
# SOP Class" (A9xx) blame a data set that is fine.
REFUSED_NOT_AUTHORIZED = 0x0124
# An instance without a StudyInstanceUID or SeriesInstanceUID cannot be routed, and that is the
# data set's fault: "Error: Cannot understand" (PS3.4 Table B.2-1).
CANNOT_UNDERSTAND = 0xC000

# How long a C-STORE waits for the worker to take the instance. It must stay below the PACS's
# own timeout for C-STORE responses (Orthanc's DicomScuTimeout defaults to 10 s), so that the
# PACS gets a failure status rather than aborting the association.
DEFAULT_DELIVERY_TIMEOUT = 5.0
# A connection to the file channel must say what it subscribes to within this time.
_HANDSHAKE_TIMEOUT = 10.0
# One thread per association; several workers may C-MOVE from several PACS at the same time.
_MAX_ASSOCIATIONS = 32

_ROUTING_TAGS = [Tag("StudyInstanceUID"), Tag("SeriesInstanceUID")]


class _Subscriber:
    """One subscription as the receiver sees it: its scope and the worker's connection.

    Instances go out one at a time, each waiting for the worker's ack, so an acknowledged
    C-STORE always means the worker holds the instance.
    """

    def __init__(self, scope: SubscriptionScope, sock: socket.socket, peer: str):
        self.scope = scope
        self.peer = peer
        self._sock = sock
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._acked_uid: str | None = None
        self._closed = False
        # The SOPInstanceUIDs handed to this subscription (or on their way to it); changed
        # under the registry's lock only.
        self.claimed: set[str] = set()

    def activate(self, registry: SubscriptionRegistry) -> None:
        """Registers the subscription and confirms it to the worker.

        Holding the send lock throughout keeps an instance that arrives meanwhile (say, a late
        one from an earlier fetch) from reaching the worker before the confirmation does.

        Raises:
            OSError: The worker is gone.
        """
        with self._send_lock:
            registry.add(self)
            send_message(self._sock, {"type": "subscribed"})

    def send(
        self, calling_ae: str, series_uid: str, sop_uid: str, file: BinaryIO, timeout: float
    ) -> bool:
        """Sends one instance and waits until the worker acknowledged it.

        A worker that cannot take an instance within `timeout` seconds is disconnected: its
        fetch must fail loudly instead of missing an instance the PACS was told was refused.
        """
        deadline = time.monotonic() + timeout
        with self._send_lock:
            with self._state:
                if self._closed:
                    return False
                self._acked_uid = None
            header = {
                "type": "instance",
                "sop_instance_uid": sop_uid,
                "series_uid": series_uid,
                "calling_ae": calling_ae,
            }
            try:
                send_message(self._sock, header)
                send_file_frame(self._sock, file)
            except (OSError, ValueError) as err:
                logger.warning("Could not send instance %s to %s: %s", sop_uid, self.peer, err)
                self.close()
                return False
            with self._state:
                self._state.wait_for(
                    lambda: self._closed or self._acked_uid == sop_uid,
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                if self._acked_uid == sop_uid:
                    return True
                timed_out = not self._closed
            if timed_out:
                logger.warning(
                    "The worker at %s did not take instance %s within %s s; dropping its "
                    "subscription to %s.",
                    self.peer,
                    sop_uid,
                    timeout,
                    self.scope.describe(),
                )
            self.close()
            return False

    def tell(self, message: dict) -> None:
        """Sends a notice the worker does not acknowledge; skipped if an instance is on its way
        for longer than a second (the notice is a courtesy, never worth a stalled C-STORE)."""
        if not self._send_lock.acquire(timeout=1):
            return
        try:
            send_message(self._sock, message)
        except OSError:
            pass  # the worker is gone; its connection's thread removes the subscription
        finally:
            self._send_lock.release()

    def serve_acks(self) -> None:
        """Reads the worker's acks until its connection ends. Runs in the connection's thread."""
        while True:
            wait_readable(self._sock, None)
            try:
                message = recv_message(self._sock)
                if message["type"] != "ack" or not isinstance(message.get("sop_instance_uid"), str):
                    raise ProtocolError(f"Expected an ack, got {message!r}.")
            except ProtocolError as err:
                logger.warning("The worker at %s broke the protocol: %s", self.peer, err)
                return
            except OSError:  # ChannelClosedError included: the worker is gone.
                return
            with self._state:
                self._acked_uid = message["sop_instance_uid"]
                self._state.notify_all()

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify_all()
        # Wakes up the connection's thread, which then removes the subscription.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected


class SubscriptionRegistry:
    """The active subscriptions; thread-safe."""

    def __init__(self, delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT):
        self.delivery_timeout = delivery_timeout
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []

    def add(self, subscriber: _Subscriber) -> None:
        """Registers a subscription (also one that overlaps others)."""
        with self._lock:
            self._subscribers.append(subscriber)

    def remove(self, subscriber: _Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def __len__(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def deliver(
        self,
        calling_ae: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        file: BinaryIO,
        move_message_id: int | None = None,
    ) -> bool:
        """Hands an instance to a subscription it belongs to that has not had it yet.

        Args:
            move_message_id: The MoveOriginatorMessageID of the C-STORE, if the PACS sent one:
                the subscription of that C-MOVE comes first.

        Returns:
            True when the subscribed worker took it; False when no subscription lacks it or
            the worker did not take it in time.
        """
        with self._lock:
            matches = [
                s
                for s in self._subscribers
                if s.scope.covers(calling_ae, study_uid, series_uid) and sop_uid not in s.claimed
            ]
            # The C-MOVE's own subscription first, then the oldest (the list keeps the order
            # of subscribing): that one's C-MOVE started first, so its copies come first.
            matches.sort(
                key=lambda s: move_message_id is None or s.scope.move_message_id != move_message_id
            )
            subscriber = matches[0] if matches else None
            if subscriber is not None:
                # Claimed before sending: a copy arriving meanwhile on another association
                # goes to another subscription.
                subscriber.claimed.add(sop_uid)
        if subscriber is None:
            logger.warning(
                "Refused instance %s of study %s (series %s) stored by %s: no worker subscribed "
                "to it, or every one that is has it already.",
                sop_uid,
                study_uid,
                series_uid,
                calling_ae,
            )
            self._tell_who_waits_for_it(calling_ae, study_uid, series_uid, sop_uid)
            return False
        if subscriber.send(calling_ae, series_uid, sop_uid, file, self.delivery_timeout):
            return True
        self.remove(subscriber)
        logger.warning(
            "Refused instance %s of study %s stored by %s: the worker at %s did not take it.",
            sop_uid,
            study_uid,
            calling_ae,
            subscriber.peer,
        )
        return False

    def _tell_who_waits_for_it(
        self, calling_ae: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> None:
        """Tells the workers that wait for the instance from another AE title that it was
        refused: the PACS calls with an AE title other than the one ADIT knows it by, and only
        the worker can say so where the user reads it."""
        with self._lock:
            waiting = [
                s
                for s in self._subscribers
                if s.scope.covers(s.scope.source_ae, study_uid, series_uid)
                and s.scope.source_ae != calling_ae
            ]
        for subscriber in waiting:
            subscriber.tell(
                {"type": "refused_caller", "calling_ae": calling_ae, "sop_instance_uid": sop_uid}
            )

    def tell_all_stopping(self) -> None:
        """Tells every subscribed worker that the receiver stops, so that its fetch resumes later
        instead of counting as a failed attempt."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.tell({"type": "stopping"})


def _read_routing_uids(file: BinaryIO) -> tuple[str, str]:
    """Reads StudyInstanceUID and SeriesInstanceUID, skipping the values of all other elements."""
    dataset = dcmread(file, stop_before_pixels=True, specific_tags=_ROUTING_TAGS)
    study_uid = dataset.get("StudyInstanceUID")
    series_uid = dataset.get("SeriesInstanceUID")
    if not isinstance(study_uid, str) or not isinstance(series_uid, str):
        raise ValueError("The data set lacks a single StudyInstanceUID or SeriesInstanceUID.")
    if not study_uid or not series_uid:
        raise ValueError("The data set has an empty StudyInstanceUID or SeriesInstanceUID.")
    return study_uid, series_uid


def handle_store(event: Event, registry: SubscriptionRegistry) -> int:
    """The EVT_C_STORE handler: routes the instance and answers with a C-STORE status."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    request = cast(C_STORE, event.request)
    sop_uid = str(request.AffectedSOPInstanceUID)
    move_message_id = request.MoveOriginatorMessageID
    with received_file(event) as file:
        try:
            study_uid, series_uid = _read_routing_uids(file)
        except Exception as err:  # whatever pydicom raises, the data set cannot be routed
            logger.warning("Refused instance %s stored by %s: %s", sop_uid, calling_ae, err)
            return CANNOT_UNDERSTAND
        if registry.deliver(calling_ae, study_uid, series_uid, sop_uid, file, move_message_id):
            return SUCCESS
        return REFUSED_NOT_AUTHORIZED


def _storage_contexts() -> list[PresentationContext]:
    # Uncompressed first: when a PACS offers several transfer syntaxes for one context, the
    # acceptor's order decides, and choosing a lossy one would make the PACS compress the image.
    transfer_syntaxes: list[str | UID] = [ExplicitVRLittleEndian]
    transfer_syntaxes += [
        syntax for syntax in AllTransferSyntaxes if syntax != ExplicitVRLittleEndian
    ]
    contexts = []
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        contexts.append(build_context(context.abstract_syntax, transfer_syntaxes))
    return contexts


class _ChannelRequestHandler(socketserver.BaseRequestHandler):
    """Serves one worker connection: the subscribe handshake, then its acks."""

    server: FileChannelServer  # pyright: ignore[reportIncompatibleVariableOverride]
    request: socket.socket

    def handle(self) -> None:
        if not self.server.track(self.request):
            return
        try:
            self._serve()
        finally:
            self.server.untrack(self.request)

    def _serve(self) -> None:
        sock = self.request
        peer = "{}:{}".format(*self.client_address[:2])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # sendall() applies the timeout to the whole call, so a worker that stops reading
        # cannot hold up a C-STORE for longer than that.
        sock.settimeout(self.server.registry.delivery_timeout)
        try:
            nonce = new_nonce()
            send_message(sock, {"type": "challenge", "protocol": PROTOCOL_VERSION, "nonce": nonce})
            if not wait_readable(sock, _HANDSHAKE_TIMEOUT):
                logger.warning("Closed connection from %s: it sent no subscription.", peer)
                return
            request = recv_message(sock)
            if request["type"] != "subscribe" or request.get("protocol") != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"Expected a subscribe message of protocol {PROTOCOL_VERSION}, got "
                    f"{shown(str(request.get('type')))} of protocol "
                    f"{shown(str(request.get('protocol')))}."
                )
            if not has_valid_mac(self.server.secret, nonce, request):
                self._refuse_unauthenticated(peer, "mac" in request)
                return
            scope = SubscriptionScope.from_message(request)
        except ProtocolError as err:
            logger.warning("Refused an invalid subscription from %s: %s", peer, err)
            self._refuse("invalid", str(err))
            return
        except OSError:  # ChannelClosedError included: the worker left before subscribing.
            return
        subscriber = _Subscriber(scope, sock, peer)
        try:
            subscriber.activate(self.server.registry)
            logger.info("The worker at %s subscribed to %s.", peer, scope.describe())
            subscriber.serve_acks()
        except OSError:
            pass  # the worker left; the subscription ends below
        finally:
            self.server.registry.remove(subscriber)
            subscriber.close()
        logger.info("The worker at %s unsubscribed from %s.", peer, scope.describe())

    def _refuse_unauthenticated(self, peer: str, sent_a_mac: bool) -> None:
        logger.warning(
            "Refused a subscription from %s: it %s. FILE_CHANNEL_SECRET (where it is empty, "
            "DJANGO_SECRET_KEY) must be the same on the receiver and every worker.",
            peer,
            "answered the challenge with a wrong MAC" if sent_a_mac else "sent no MAC",
        )
        self._refuse(
            "unauthenticated", "The subscription does not carry a valid MAC of the challenge."
        )

    def _refuse(self, reason: str, message: str) -> None:
        try:
            send_message(self.request, {"type": "refused", "reason": reason, "message": message})
        except OSError:
            pass  # the worker left and will not miss the answer


class FileChannelServer(socketserver.ThreadingTCPServer):
    """The receiver's end of the file channel: a thread per worker connection."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: SubscriptionRegistry, secret: bytes):
        assert secret, "the file channel needs a secret to authenticate workers"
        super().__init__(address, _ChannelRequestHandler)
        self.registry = registry
        self.secret = secret
        self._connections_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._closing = False

    def track(self, sock: socket.socket) -> bool:
        """Records an open connection; False once the server is closing."""
        with self._connections_lock:
            if self._closing:
                return False
            self._connections.add(sock)
            return True

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        """Disconnects every worker, which ends their subscriptions, and accepts no more."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected


class Receiver:
    """The storage SCP and the file channel, started and stopped together.

    Args:
        ae_title: The receiver's AE title (settings.RECEIVER_AE_TITLE), the C-MOVE destination.
        store_port: The C-STORE port (settings.RECEIVER_PORT); 0 picks a free one.
        channel_port: The file channel port (settings.FILE_CHANNEL_PORT); 0 picks a free one.
        store_host: The address the storage SCP binds to (settings.RECEIVER_HOST).
        channel_host: The address the file channel binds to (settings.FILE_CHANNEL_HOST).
        delivery_timeout: Seconds a C-STORE waits for the subscribed worker to take the
            instance, sending included.
        channel_secret: The secret a worker must prove to know; None takes it from the settings
            (`file_channel.configured_secret`).
    """

    def __init__(
        self,
        ae_title: str,
        store_port: int,
        channel_port: int,
        *,
        store_host: str = "127.0.0.1",
        channel_host: str = "127.0.0.1",
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        channel_secret: bytes | None = None,
    ):
        self.ae_title = ae_title
        self.channel_secret = configured_secret() if channel_secret is None else channel_secret
        self.store_port = store_port
        self.channel_port = channel_port
        self.store_host = store_host
        self.channel_host = channel_host
        self.registry = SubscriptionRegistry(delivery_timeout)
        self._ae: AE | None = None
        self._store_server: ThreadedAssociationServer | None = None
        self._channel_server: FileChannelServer | None = None
        self._channel_thread: threading.Thread | None = None

    @property
    def store_address(self) -> tuple[str, int]:
        """Where the storage SCP listens, with the port actually bound."""
        assert self._store_server is not None, "the receiver is not running"
        return self._store_server.server_address[:2]  # pyright: ignore[reportReturnType]

    @property
    def channel_address(self) -> tuple[str, int]:
        """Where the file channel listens, with the port actually bound."""
        assert self._channel_server is not None, "the receiver is not running"
        return self._channel_server.server_address[:2]  # pyright: ignore[reportReturnType]

    def start(self) -> None:
        """Starts both servers; they are listening when this returns.

        Raises:
            OSError: A port cannot be bound.
        """
        assert self._channel_server is None, "the receiver is already running"
        # The file channel comes first, so that no instance can arrive before the workers can
        # subscribe.
        self._channel_server = FileChannelServer(
            (self.channel_host, self.channel_port), self.registry, self.channel_secret
        )
        self._channel_thread = threading.Thread(
            target=self._channel_server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="file-channel",
            daemon=True,
        )
        self._channel_thread.start()
        try:
            self._ae = AE(ae_title=self.ae_title)
            self._ae.maximum_associations = _MAX_ASSOCIATIONS
            # Verification lets PACS admins test the node with a C-ECHO.
            self._ae.supported_contexts = _storage_contexts() + VerificationPresentationContexts
            self._store_server = self._ae.start_server(
                (self.store_host, self.store_port),
                block=False,
                evt_handlers=[
                    (evt.EVT_C_STORE, handle_store, [self.registry]),
                    # A PACS that hangs up in the middle of an instance leaves its file behind.
                    (evt.EVT_CONN_CLOSE, lambda event: discard_unfinished_instance(event.assoc)),
                ],
            )
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Receiver %s listening for C-STORE on %s:%d; file channel on %s:%d.",
            self.ae_title,
            *self.store_address,
            *self.channel_address,
        )

    def stop(self) -> None:
        """Stops both servers. Workers still subscribed are told so, then disconnected."""
        if self._channel_server is not None:
            self._channel_server.registry.tell_all_stopping()
            # Disconnecting the workers first makes pending deliveries fail at once, so the
            # associations waiting on them can be aborted without delay.
            self._channel_server.close_connections()
        if self._ae is not None:
            self._ae.shutdown()  # aborts the associations and stops the storage SCP
        if self._channel_server is not None:
            self._channel_server.shutdown()
            self._channel_server.server_close()  # joins the connection threads
        if self._channel_thread is not None:
            self._channel_thread.join()
        self._ae = self._store_server = self._channel_server = self._channel_thread = None

    def serve_forever(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops. Call it from the main thread."""
        if self._channel_server is None:
            self.start()
        stop_requested = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop_requested.set()

        previous_handlers = {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            stop_requested.wait()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.stop()
