"""DIMSE services (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) against one remote application entity.

Everything pynetdicom-specific lives here: association set-up with error messages that say why
an association failed, status interpretation per PS3.4, and presentation-context choices.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, NoReturn

from pydicom import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    MPEG2MPML,
    MPEG4HP41,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, _config, build_context, build_role, evt, sop_class
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)
from pynetdicom.transport import AssociationSocket

from adit.core.dicom import spool
from adit.core.dicom.errors import DicomError, DicomTimeoutError, RetriableDicomError
from adit.core.dicom.files import read_instance, unchanged_data_set, unchanged_file
from adit.core.dicom.send_buffer import (
    SendStalled,
    bound_sending,
    can_write_directly,
    send_c_store_request,
)
from adit.core.dicom.syntaxes import (
    UNCOMPRESSED_LITTLE_ENDIAN,
    ConversionError,
    convert_to_explicit_little_endian,
    syntax_name,
    syntax_of,
)

logger = logging.getLogger(__name__)

# pynetdicom writes every query identifier and answer into its log, line by line: patient data
# in a log file, and about a millisecond per C-FIND spent formatting it even where its INFO
# lines are discarded.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# By default pynetdicom collects an arriving instance in memory and hands it over complete: a
# 2 GB instance cost 2 GB before ADIT saw its first byte. Written into a temporary file as it
# arrives, a large one stays there (see ``_arrived_dataset``); a small one is read back whole,
# which costs about 0.2 ms of CPU per 0.5 MB instance more than collecting it in memory.
_config.STORE_RECV_CHUNKED_DATASET = True


def _ready_to_read(self: AssociationSocket) -> bool:
    """pynetdicom's ``AssociationSocket.ready`` with poll() instead of select().

    select() fails on a descriptor above 1023, and pynetdicom takes that failure for a closed
    connection: in a process holding that many (a web server with many clients, a receiver
    with many peers, with the descriptor limit raised as containers do) every new association
    ended at once, as if the peer had hung up.
    """
    sock = self.socket
    if sock is None or self._is_connected is False:
        return False
    try:
        watch = select.poll()
        watch.register(sock, select.POLLIN)
        events = watch.poll(0)
    except (OSError, ValueError):  # a closed socket, as pynetdicom's select() would fail on
        events = [(-1, select.POLLNVAL)]
    if any(flags & select.POLLNVAL for _, flags in events):
        self.event_queue.put("Evt17")  # transport connection closed
        return False
    if events:  # data, or a hang-up or error that the next read reports
        return True
    # A TLS socket may hold decrypted data that poll() cannot see.
    return isinstance(sock, ssl.SSLSocket) and bool(sock.pending())


AssociationSocket.ready = property(_ready_to_read)  # pyright: ignore[reportAttributeAccessIssue]


def _sop_class(name: str) -> str:
    # pynetdicom creates its SOP class names at import time, so type checkers cannot see them.
    return getattr(sop_class, name)


VERIFICATION = _sop_class("Verification")
FIND_MODELS = {
    "patient": _sop_class("PatientRootQueryRetrieveInformationModelFind"),
    "study": _sop_class("StudyRootQueryRetrieveInformationModelFind"),
}
GET_MODELS = {
    "patient": _sop_class("PatientRootQueryRetrieveInformationModelGet"),
    "study": _sop_class("StudyRootQueryRetrieveInformationModelGet"),
}
MOVE_MODELS = {
    "patient": _sop_class("PatientRootQueryRetrieveInformationModelMove"),
    "study": _sop_class("StudyRootQueryRetrieveInformationModelMove"),
}

UNCOMPRESSED_SYNTAXES: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# The transfer syntaxes a C-GET accepts instances in. Each gets a presentation context of its
# own: a context carries one accepted syntax, and a PACS sends an instance it holds in a syntax
# without a context only after transcoding it, which it may not be able to do (JPEG 2000,
# JPEG-LS) and which changes the file. Every SOP class gets the encodings of uncompressed data;
# compressed syntaxes, most common first, as many as fit.
ENCODING_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
COMPRESSED_SYNTAXES: list[str] = [
    JPEGBaseline8Bit,
    JPEG2000Lossless,
    JPEG2000,
    JPEGLosslessSV1,
    JPEGExtended12Bit,
    JPEGLSLossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEGLossless,
    MPEG4HP41,
    MPEG2MPML,
    HTJ2KLossless,
    HTJ2K,
]
# An association carries at most 128 presentation contexts (PS3.8 9.3.2.2, odd IDs 1-255).
MAX_CONTEXTS = 128
# How many SOP classes one C-GET can receive in every syntax above, beside its query model.
GET_CLASSES_WITH_EVERY_SYNTAX = (MAX_CONTEXTS - 1) // (
    len(ENCODING_SYNTAXES) + len(COMPRESSED_SYNTAXES)
)
# Without knowing the study's SOP classes, a C-GET offers the storage classes a PACS typically
# holds (images, SR, presentation states, key objects, encapsulated documents, RT), uncompressed.
_GET_STORAGE_KEYWORDS = (
    "Image",
    "SR",
    "PresentationState",
    "KeyObject",
    "Encapsulated",
    "RT",
    "Segmentation",
    "RawData",
    "SpatialRegistration",
)

# "Refused: Out of Resources" (0xA7xx) is worth another try (PS3.4 C.4.1.1.4 / C.4.2.1.5 /
# C.4.3.1.4); other failures will fail again.
_OUT_OF_RESOURCES = range(0xA700, 0xA800)

# The Message ID of a C-GET, which a C-CANCEL names.
GET_MESSAGE_ID = 1


@dataclass
class RetrieveResult:
    """What a C-GET or C-MOVE reported at its end."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_instances: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DimsePeer:
    """Where and how to reach a remote application entity."""

    name: str
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class DimseTimeouts:
    connection: float = 10
    acse: float = 30
    dimse: float = 60
    network: float = 120


def describe_status(code: int, table: dict) -> str:
    entry = table.get(code)
    # Codes outside the table fall in a range of a category (e.g. 0xCxxx "Failure").
    meaning = f"{entry[0]}: {entry[1]}" if entry else code_to_category(code)
    return f"0x{code:04X} ({meaning})"


def storage_contexts_for_get(sop_classes: Sequence[str]) -> list[PresentationContext]:
    """Contexts to receive the given SOP classes in every syntax a PACS may hold them in, as
    many syntaxes per class as fit beside the query model; without classes, a generic set."""
    room = MAX_CONTEXTS - 1
    if not sop_classes:
        storage_classes = [
            UID(str(context.abstract_syntax)) for context in StoragePresentationContexts
        ]
        generic = [
            uid
            for uid in storage_classes
            if any(word in uid.name.replace(" ", "") for word in _GET_STORAGE_KEYWORDS)
        ]
        return [build_context(uid, list(UNCOMPRESSED_SYNTAXES)) for uid in generic[:room]]
    if len(sop_classes) * len(ENCODING_SYNTAXES) > room:
        raise DicomError(
            f"The study holds {len(sop_classes)} SOP classes, more than one C-GET can receive "
            f"in every syntax; fetch it by series or by C-MOVE."
        )
    compressed = (room - len(sop_classes) * len(ENCODING_SYNTAXES)) // len(sop_classes)
    syntaxes = ENCODING_SYNTAXES + COMPRESSED_SYNTAXES[:compressed]
    return [build_context(sop_class, [syntax]) for sop_class in sop_classes for syntax in syntaxes]


class DimseConnector:
    """Runs DIMSE operations against one peer, each on an association of its own.

    C-STORE batches are the exception: :meth:`store` keeps one association open for all the
    instances it is given, which is what makes sending a study fast.
    """

    def __init__(
        self,
        peer: DimsePeer,
        calling_ae: str,
        timeouts: DimseTimeouts | None = None,
        slot: Callable[[], AbstractContextManager[object]] = nullcontext,
    ):
        """
        Args:
            slot: Makes the context an association is opened and ended in: it is entered
                before the association is requested (and may wait there, or raise) and left
                once the association ended or failed to open. ADIT's data layer passes the
                server's limit of associations at once.
        """
        self.peer = peer
        self.calling_ae = calling_ae
        self.timeouts = timeouts or DimseTimeouts()
        self.slot = slot
        self._find_session: FindSession | None = None

    @contextmanager
    def find_session(self) -> Iterator[FindSession]:
        """Within the block, C-FINDs share one association (a batch of queries then costs one
        association, not one each); nested sessions share the outer one.

        The association opens with the first C-FIND and is opened again when the peer closed
        it meanwhile (an idle timeout, a restart); it is released when the block ends. It holds
        its ``slot`` for as long as it is open, idle or not: another association to the peer
        opened within the block (a fetch) needs a second one.
        """
        if self._find_session is not None:
            yield self._find_session
            return
        session = FindSession(self)
        self._find_session = session
        try:
            yield session
        finally:
            self._find_session = None
            session.close()

    # -- association handling -------------------------------------------------------------

    def _new_ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.connection_timeout = self.timeouts.connection
        ae.acse_timeout = self.timeouts.acse
        ae.dimse_timeout = self.timeouts.dimse
        ae.network_timeout = self.timeouts.network
        ae.maximum_pdu_size = 0  # as large as the peer allows
        return ae

    @contextmanager
    def associate(
        self,
        contexts: list[PresentationContext],
        ext_neg: list | None = None,
        handlers: list | None = None,
    ) -> Iterator[Association]:
        """The one place where ADIT opens an association: inside ``slot``, for as long as the
        association is open."""
        with self.slot():
            with self._associated(contexts, ext_neg, handlers) as assoc:
                yield assoc

    @contextmanager
    def _associated(
        self,
        contexts: list[PresentationContext],
        ext_neg: list | None,
        handlers: list | None,
    ) -> Iterator[Association]:
        ae = self._new_ae()
        ae.requested_contexts = contexts
        rejection: dict[str, str] = {}

        def remember_rejection(event):
            primitive = event.primitive
            if getattr(primitive, "result", None) not in (None, 0x00):
                rejection["result"] = getattr(primitive, "result_str", "")
                rejection["source"] = getattr(primitive, "source_str", "")
                rejection["reason"] = getattr(primitive, "reason_str", "")
                rejection["transient"] = str(getattr(primitive, "result", 1) == 0x02)

        assoc = ae.associate(
            self.peer.host,
            self.peer.port,
            ae_title=self.peer.ae_title,
            ext_neg=ext_neg,
            evt_handlers=[(evt.EVT_ACSE_RECV, remember_rejection), *(handlers or [])],
        )
        if not assoc.is_established:
            _wait_until_closed(assoc)
            raise self._association_error(assoc, rejection)
        _disable_nagle(assoc)
        bound_sending(assoc, stall_seconds=self.timeouts.network)
        reactor_hold = _hold_reactor(assoc)
        try:
            yield assoc
        except BaseException:
            assoc.abort()
            raise
        else:
            if assoc.is_established:
                assoc.release()
        finally:
            reactor_hold.let_go()
            _wait_until_closed(assoc)
            discard_unfinished_instance(assoc)

    def _association_error(self, assoc: Association, rejection: dict[str, str]) -> DicomError:
        where = f"{self.peer.name} ({self.peer.ae_title} at {self.peer.host}:{self.peer.port})"
        if assoc.is_rejected:
            message = (
                f"{where} rejected the association: {rejection.get('reason', 'no reason given')} "
                f"({rejection.get('result', 'rejected')} by {rejection.get('source', 'the peer')})."
                f" Check that the PACS knows ADIT's AE title {self.calling_ae} and that "
                f"{self.peer.ae_title} is the PACS's own AE title."
            )
            if rejection.get("transient") == "True":
                return RetriableDicomError(message)
            return DicomError(message)
        diagnosis, timed_out = self._diagnose_connection()
        error_type = DicomTimeoutError if timed_out else RetriableDicomError
        return error_type(f"Could not connect to {where}: {diagnosis}")

    def _diagnose_connection(self) -> tuple[str, bool]:
        """Why no association came about, and whether the PACS just did not answer in time."""
        try:
            with socket.create_connection(
                (self.peer.host, self.peer.port), timeout=self.timeouts.connection
            ):
                pass
        except ConnectionRefusedError:
            return "connection refused. Is the PACS running and the port right?", False
        except TimeoutError:
            return f"no answer within {self.timeouts.connection:g} s.", True
        except OSError as err:
            return f"{err.strerror or err}.", False
        return (
            "the connection opened but the association was aborted or not answered within "
            f"{self.timeouts.acse:g} s."
        ), True

    # -- services ---------------------------------------------------------------------------

    def echo(self) -> float:
        """Sends a C-ECHO; returns the round-trip time in seconds."""
        started = time.perf_counter()
        with self.associate([build_context(VERIFICATION)]) as assoc:
            status = assoc.send_c_echo()
            self._check_response_arrived(status, "C-ECHO")
            if status.Status != 0x0000:
                raise DicomError(f"{self.peer.name} answered C-ECHO with status {status.Status}.")
        return time.perf_counter() - started

    def find(self, query: Dataset, root: str, limit: int | None = None) -> Iterator[Dataset]:
        """C-FIND; yields matches as they arrive. Stops (aborting) once ``limit`` are found.

        Inside ``find_session`` it runs on the session's association (after the C-FIND of
        another thread on it ended), reading every answer before it hands out the first: the
        association is then free for a C-FIND started while the caller goes through these
        answers, which would otherwise need a second association (and a second of the server's
        slots, which at a limit of one never comes). Otherwise on an association of its own.
        """
        model = FIND_MODELS[root]
        session = self._find_session
        if session is not None:
            assoc = session.take()
            done = False
            try:
                answers = list(self._find_on(assoc, query, model, limit))
                done = True
            finally:
                # After an error answers may still be on their way: the association cannot
                # carry the next C-FIND.
                session.give_back(reusable=done)
            yield from answers
            return
        with self.associate([build_context(model)]) as assoc:
            yield from self._find_on(assoc, query, model, limit)

    def _find_on(
        self, assoc: Association, query: Dataset, model: str, limit: int | None
    ) -> Iterator[Dataset]:
        found = 0
        for status, identifier in assoc.send_c_find(query, model):
            self._check_response_arrived(status, "C-FIND")
            code = status.Status
            if code in (0xFF00, 0xFF01):
                if identifier is None:
                    continue
                yield identifier
                found += 1
                if limit is not None and found >= limit:
                    # Matches still on their way would arrive on a released association.
                    assoc.abort()
                    return
            elif code == 0x0000:
                return
            else:
                raise self._status_error("C-FIND", code, QR_FIND_SERVICE_CLASS_STATUS)

    def get(
        self,
        query: Dataset,
        root: str,
        on_instance: Callable[[Dataset], None],
        sop_classes: Sequence[str] = (),
        *,
        spool_above: int | None = None,
    ) -> RetrieveResult:
        """C-GET; hands each instance to ``on_instance`` as it arrives, on the receiving thread,
        in the transfer syntax the PACS holds it in.

        Args:
            sop_classes: The SOP classes the PACS will send (those of the study); a generic
                set of storage classes, uncompressed only, if empty.
            spool_above: An instance encoded in more bytes than this goes to disk without
                being decoded in memory, and reaches ``on_instance`` with its large values
                deferred (see ``spool``).

        An exception in ``on_instance`` stops the retrieve: the instance is answered with
        "out of resources", the association is aborted and the exception is raised here.
        """
        model = GET_MODELS[root]
        storage_contexts = storage_contexts_for_get(sop_classes)
        roles = [
            build_role(uid, scp_role=True)
            for uid in dict.fromkeys(str(context.abstract_syntax) for context in storage_contexts)
        ]
        callback_error: list[BaseException] = []

        def handle_store(event) -> int:
            if callback_error:
                return 0xA702
            try:
                on_instance(_arrived_dataset(event, spool_above))
            except BaseException as err:  # handed back to the caller below
                callback_error.append(err)
                # The peer would otherwise send the rest of the study, each instance answered
                # with a failure: minutes for a large one. One that ignores the cancel is
                # stopped at its next pending response.
                event.assoc.send_c_cancel(GET_MESSAGE_ID, query_model=model)
                return 0xA702
            return 0x0000

        def stop_once_failed(_: RetrieveResult) -> None:
            if callback_error:
                raise callback_error[0]

        contexts = [build_context(model), *storage_contexts]
        with self.associate(
            contexts, ext_neg=roles, handlers=[(evt.EVT_C_STORE, handle_store)]
        ) as assoc:
            try:
                result = self._run_retrieve(
                    assoc.send_c_get(query, model, msg_id=GET_MESSAGE_ID),
                    "C-GET",
                    QR_GET_SERVICE_CLASS_STATUS,
                    assoc,
                    stop_once_failed,
                )
            except DicomError:
                if not callback_error:  # else the peer's answer to the cancel
                    raise
            if callback_error:
                raise callback_error[0]  # the association is aborted on the way out
        return result

    def move(
        self,
        query: Dataset,
        root: str,
        destination_ae: str,
        on_pending: Callable[[RetrieveResult], None] | None = None,
        message_id: int = 1,
    ) -> RetrieveResult:
        """C-MOVE to ``destination_ae``; returns when the peer reports the move finished.

        ``on_pending`` sees the counts after every pending response; an exception it raises
        aborts the association (the peer then stops sending) and is raised here.
        ``message_id`` is the C-MOVE's Message ID, which the peer may name in the C-STOREs
        it sends for it (MoveOriginatorMessageID).
        """
        model = MOVE_MODELS[root]
        with self.associate([build_context(model)]) as assoc:
            return self._run_retrieve(
                assoc.send_c_move(query, destination_ae, model, msg_id=message_id),
                "C-MOVE",
                QR_MOVE_SERVICE_CLASS_STATUS,
                assoc,
                on_pending,
            )

    def _run_retrieve(
        self,
        responses,
        operation: str,
        table: dict,
        assoc,
        on_pending: Callable[[RetrieveResult], None] | None = None,
    ) -> RetrieveResult:
        result = RetrieveResult()
        for status, identifier in responses:
            self._check_response_arrived(status, operation)
            result.completed = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0)
            result.failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
            result.warning = int(getattr(status, "NumberOfWarningSuboperations", 0) or 0)
            code = status.Status
            if code in (0xFF00,):
                if on_pending is not None:
                    on_pending(result)
                continue
            if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
                failed = identifier.FailedSOPInstanceUIDList
                result.failed_instances = [failed] if isinstance(failed, str) else list(failed)
            if code in (0x0000, 0xB000):
                return result
            if code == 0xFE00:
                raise DicomError(f"{operation} from {self.peer.name} was cancelled.")
            raise self._status_error(operation, code, table, result)
        return result

    def store(self, datasets: Iterable[Dataset], result: StoreResult | None = None) -> StoreResult:
        """C-STOREs every dataset on one association (reopened only for a new SOP class or
        transfer syntax), each in its own transfer syntax where the peer accepts it.

        An instance the peer accepts only uncompressed is converted losslessly where possible;
        one it does not accept at all is left out and listed in the result, and the others
        go on. A failure status of the peer raises at once.

        Args:
            result: Filled in as the store goes (a new one without it): after an error it
                tells how far the store got. The datasets go in the order given, so the first
                ``result.stored + len(result.refused)`` of them were stored or refused.
        """
        result = result if result is not None else StoreResult()
        session = _StoreSession(self, result)
        try:
            for dataset in datasets:
                session.send(dataset)
        except BaseException:
            session.close(abort=True)
            raise
        session.close()
        return result

    # -- helpers ----------------------------------------------------------------------------

    def _check_response_arrived(self, status: Dataset, operation: str) -> None:
        if "Status" not in status:
            raise DicomTimeoutError(
                f"{operation} to {self.peer.name}: no response within {self.timeouts.dimse:g} s "
                "(or the connection was lost)."
            )

    def _status_error(
        self, operation: str, code: int, table: dict, result: RetrieveResult | None = None
    ) -> DicomError:
        message = (
            f"{operation} on {self.peer.name} failed with status {describe_status(code, table)}"
        )
        if result is not None:
            message += f"; {result.completed} instance(s) completed, {result.failed} failed"
            if result.failed_instances:
                shown = ", ".join(result.failed_instances[:5])
                more = len(result.failed_instances) - 5
                message += f" (failed: {shown}{f' and {more} more' if more > 0 else ''})"
        message += "."
        if code in _OUT_OF_RESOURCES:
            return RetriableDicomError(message)
        return DicomError(message)


class FindSession:
    """One association for many C-FINDs; made by ``DimseConnector.find_session``.

    Attributes:
        associations_opened: How many associations the session opened so far (one, unless
            the peer closed one or a C-FIND failed or stopped at its limit).
    """

    def __init__(self, connector: DimseConnector):
        self.connector = connector
        self.associations_opened = 0
        self._free = threading.Condition()
        self._association_context = None
        self._assoc: Association | None = None
        self._busy = False

    def take(self) -> Association:
        """The session's association for one C-FIND, opened (again) if need be; waits while
        a C-FIND of another thread runs on it (one of this thread cannot be running: a C-FIND
        in a session reads all its answers before it hands out any).

        Raises:
            DicomError: If the association cannot be opened.
        """
        with self._free:
            while self._busy:
                self._free.wait()
            self._busy = True
        try:
            if self._assoc is not None and not _can_carry_requests(self._assoc):
                logger.info("%s closed the query association; opening another.", self._peer)
                self._drop()
            if self._assoc is None:
                contexts = [build_context(model) for model in FIND_MODELS.values()]
                self._association_context = self.connector.associate(contexts)
                self._assoc = self._association_context.__enter__()
                self.associations_opened += 1
        except BaseException:
            self._let_go()
            raise
        return self._assoc

    def give_back(self, reusable: bool) -> None:
        if not reusable:
            self._drop()
        self._let_go()

    def _let_go(self) -> None:
        with self._free:
            self._busy = False
            self._free.notify()

    def close(self) -> None:
        """Ends the association: released if it is still open, else aborted."""
        self._drop(release=self._assoc is not None and _can_carry_requests(self._assoc))

    @property
    def _peer(self) -> str:
        return self.connector.peer.name

    def _drop(self, release: bool = False) -> None:
        if self._association_context is None:
            return
        assert self._assoc is not None
        context, assoc = self._association_context, self._assoc
        self._association_context = self._assoc = None
        if not release:
            assoc.abort()
        context.__exit__(None, None, None)  # releases what is still established


def _can_carry_requests(assoc: Association) -> bool:
    """Whether the association is still open for requests. The reactor is held (see
    ``_hold_reactor``), so ``is_established`` does not learn of a peer that released or
    dropped it; the state machine, driven by pynetdicom's socket thread, does (Sta6: "ready
    for data transfer", PS3.8 9.2)."""
    return assoc.is_established and assoc.dul.state_machine.current_state == "Sta6"


SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


@dataclass
class StoreResult:
    """What a store did: how many instances the peer took, which had to be converted to a
    syntax it accepts, and which it accepted in no form (with the reason)."""

    stored: int = 0
    # "JPEG 2000 Image Compression" -> how many of them went as Explicit VR Little Endian.
    converted: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    # SOPInstanceUID of each refused instance -> the status that says why: 0x0122 (SOP class
    # not supported) or 0xC122 (transfer syntax not supported), as PS3.18 I.2.2 names them.
    refused_statuses: dict[str, int] = field(default_factory=dict)


class _StoreSession:
    """One C-STORE association for a stream of datasets of unknown SOP classes and syntaxes.

    Every SOP class gets an uncompressed context and one context per other syntax it comes in,
    so the peer can accept each syntax on its own: a context with several syntaxes would let
    the peer accept just one of them.
    """

    def __init__(self, connector: DimseConnector, result: StoreResult):
        self.connector = connector
        self.result = result
        self.proposed: dict[str, set[str]] = {}  # SOP class -> syntaxes of its own contexts
        self.accepted: dict[str, set[str]] = {}  # SOP class -> syntaxes the peer accepted
        # (SOP class, syntax) -> the accepted context that carries them.
        self.context_ids: dict[tuple[str, str], int] = {}
        self._association_context = None
        self.assoc: Association | None = None

    def send(self, dataset: Dataset) -> None:
        sop_class = str(dataset.SOPClassUID)
        syntax = str(syntax_of(dataset))
        if syntax not in self.proposed.get(sop_class, ()) or self.assoc is None:
            self._open_with(sop_class, syntax)
        assert self.assoc is not None
        accepted = self.accepted.get(sop_class, set())
        if syntax not in accepted:
            if not self._convert(dataset, sop_class, syntax, accepted):
                return
            syntax = str(syntax_of(dataset))
        status = self._send_directly(dataset, sop_class, syntax)
        if status is None:
            status = self.assoc.send_c_store(dataset)
        self.connector._check_response_arrived(status, "C-STORE")
        code = status.Status
        category = STORAGE_SERVICE_CLASS_STATUS.get(code, ("Failure",))[0]
        if code != 0x0000 and category != "Warning":
            raise self.connector._status_error(
                f"C-STORE of {dataset.SOPInstanceUID}", code, STORAGE_SERVICE_CLASS_STATUS
            )
        self.result.stored += 1

    def _send_directly(self, dataset: Dataset, sop_class: str, syntax: str) -> Dataset | None:
        """C-STOREs the dataset: an unchanged one as the bytes it arrived in if the peer
        accepts their syntax, any other encoded by pydicom in the syntax of the context it goes
        on; returns the response's status (empty if none came), or None when only pynetdicom's
        ``send_c_store`` can send it (a deflated syntax).

        This is ``send_c_store`` with the data set written to the socket by ADIT
        (``send_buffer.send_c_store_request``): the same request on the same context, answered
        through pynetdicom's DIMSE provider. The reactor, which must not take the response
        away, stays paused for the whole association (``_hold_reactor``).

        Raises:
            ValueError: If pydicom cannot encode the dataset, as ``send_c_store`` does.
        """
        assoc = self.assoc
        assert assoc is not None
        hold = getattr(assoc, "_reactor_checkpoint", None)
        if not (isinstance(hold, _HeldReactorCheckpoint) and hold.reactor_waits.is_set()):
            return None
        source = _unchanged_source(dataset)
        context_id = self.context_ids.get((sop_class, syntax))
        if source is None or context_id is None:
            context = self._encoding_context(sop_class, syntax)
            if context is None:
                return None
            context_id, encoding = context
            encoded = encode(dataset, encoding.is_implicit_VR, encoding.is_little_endian)
            if encoded is None:  # pynetdicom has logged why
                raise ValueError(f"pydicom could not encode instance {dataset.SOPInstanceUID}")
            source = memoryview(encoded)
        request = C_STORE()
        request.MessageID = 1
        request.Priority = 2  # low, as send_c_store's default
        request.AffectedSOPClassUID = UID(sop_class)
        request.AffectedSOPInstanceUID = UID(str(dataset.SOPInstanceUID))
        if can_write_directly(assoc):
            try:
                send_c_store_request(assoc, request, context_id, source)
            except OSError as err:
                assoc.abort()
                self._raise_send_failed(dataset, err)
        else:
            if isinstance(source, memoryview):
                request.DataSet = BytesIO(source)
            else:
                # pynetdicom reads a data set given by its file and offset in pieces as it sends.
                request._dataset_path = source  # pyright: ignore
            assoc.dimse.send_msg(request, context_id)
        _, response = assoc.dimse.get_msg(block=True)
        status = Dataset()
        if response is None or not response.is_valid_response:
            # No answer in time, a lost connection or nonsense: the association is done for.
            if assoc.is_established:
                assoc.abort()
            return status
        status.Status = response.Status
        for keyword in response.STATUS_OPTIONAL_KEYWORDS:
            if getattr(response, keyword, None) is not None:
                setattr(status, keyword, getattr(response, keyword))
        return status

    def _encoding_context(self, sop_class: str, syntax: str) -> tuple[int, UID] | None:
        """The accepted context to send a dataset of the class in ``syntax`` on, and the
        syntax to encode it in: its own, or for uncompressed little endian the other one
        (implicit and explicit VR hold the same values)."""
        candidates = [syntax]
        if syntax in UNCOMPRESSED_LITTLE_ENDIAN:
            candidates += sorted(UNCOMPRESSED_LITTLE_ENDIAN - {syntax})
        for candidate in candidates:
            context_id = self.context_ids.get((sop_class, candidate))
            if context_id is not None and candidate != DeflatedExplicitVRLittleEndian:
                return context_id, UID(candidate)
        return None

    def _raise_send_failed(self, dataset: Dataset, error: OSError) -> NoReturn:
        what = f"C-STORE of {dataset.SOPInstanceUID} to {self.connector.peer.name}"
        if isinstance(error, SendStalled):
            raise DicomTimeoutError(f"{what}: {error}") from error
        raise RetriableDicomError(
            f"{what}: the connection was lost while sending ({error.strerror or error})."
        ) from error

    def _convert(self, dataset: Dataset, sop_class: str, syntax: str, accepted: set[str]) -> bool:
        """Converts the dataset to an uncompressed syntax the peer accepts; False (and the
        instance listed as refused) if it accepts none or the conversion would lose data."""
        if syntax in UNCOMPRESSED_LITTLE_ENDIAN and accepted & UNCOMPRESSED_LITTLE_ENDIAN:
            return True  # pynetdicom encodes implicit as explicit VR and back as it sends
        peer = self.connector.peer.name
        uid = str(dataset.get("SOPInstanceUID", ""))
        class_name = syntax_name(sop_class)
        if not accepted & UNCOMPRESSED_LITTLE_ENDIAN:
            self.result.refused_statuses[uid] = (
                TRANSFER_SYNTAX_NOT_SUPPORTED if accepted else SOP_CLASS_NOT_SUPPORTED
            )
            self.result.refused.append(
                f"{uid} ({class_name} in {syntax_name(syntax)}): {peer} accepts "
                + (
                    "this SOP class in no transfer syntax ADIT can send"
                    if accepted
                    else "no instance of this SOP class"
                )
            )
            return False
        try:
            convert_to_explicit_little_endian(dataset)
        except ConversionError as err:
            self.result.refused_statuses[uid] = TRANSFER_SYNTAX_NOT_SUPPORTED
            self.result.refused.append(
                f"{uid} ({class_name}): {peer} does not accept {syntax_name(syntax)}, and {err}"
            )
            return False
        name = syntax_name(syntax)
        self.result.converted[name] = self.result.converted.get(name, 0) + 1
        return True

    def _open_with(self, sop_class: str, syntax: str) -> None:
        self.proposed.setdefault(sop_class, {ExplicitVRLittleEndian}).add(syntax)
        contexts = [
            build_context(uid, syntaxes)
            for uid, proposed in self.proposed.items()
            for syntaxes in (
                list(UNCOMPRESSED_SYNTAXES),  # the fallback, and explicit VR's own context
                *([other] for other in sorted(proposed - {ExplicitVRLittleEndian})),
            )
        ]
        if len(contexts) > MAX_CONTEXTS:
            raise DicomError(
                f"The instances come in more SOP class and transfer syntax combinations than one "
                f"association to {self.connector.peer.name} can carry ({MAX_CONTEXTS})."
            )
        self.close()
        self._association_context = self.connector.associate(contexts)
        self.assoc = self._association_context.__enter__()
        self.accepted = {}
        self.context_ids = {}
        for context in self.assoc.accepted_contexts:
            if context.as_scu and context.context_id is not None:
                key = (str(context.abstract_syntax), str(context.transfer_syntax[0]))
                self.context_ids[key] = context.context_id
            uid = str(context.abstract_syntax)
            self.accepted.setdefault(uid, set()).update(
                str(accepted) for accepted in context.transfer_syntax[:1]
            )

    def close(self, abort: bool = False) -> None:
        if self._association_context is not None:
            if abort and self.assoc is not None:
                self.assoc.abort()
            self._association_context.__exit__(None, None, None)
            self._association_context = None
            self.assoc = None


def _unchanged_source(dataset: Dataset) -> memoryview | tuple[Path, int] | None:
    """The data set as it arrived: its bytes, or its file and where in it it begins; None if
    it changed (or never had any)."""
    data_set = unchanged_data_set(dataset)
    if data_set is not None:
        return data_set
    file = unchanged_file(dataset)
    return None if file is None else (file, split_dataset(file)[1])


def _arrived_dataset(event, spool_above: int | None) -> Dataset:
    """The dataset a C-STORE brought, read lazily and keeping its bytes (see
    ``files.read_instance``); left on disk (see ``get``) if large."""
    file = received_file(event)
    if spool_above is not None and os.fstat(file.fileno()).st_size > spool_above:
        return spool.spooled_file(file)  # the dataset owns the file now
    with file:
        return read_instance(file.read())


def received_file(event) -> BinaryIO:
    """The DICOM file (preamble, file meta, data set) an EVT_C_STORE's instance arrived in
    (see ``STORE_RECV_CHUNKED_DATASET`` above), open for reading at its start; the caller closes it.

    The file loses its name here (pynetdicom removes it after a C-STORE it serves, but not after
    one of a C-GET): it stays readable until it is closed, and its space is freed then,
    whatever happens to the process. Opened for update, never written: pydicom reads the
    deferred values of a file opened read-only by its name, which is gone, and of any other by
    the file object.
    """
    path = getattr(event.request, "_dataset_path", None)
    assert path is not None, "pynetdicom received the instance into memory"
    file = open(path, "r+b")
    os.unlink(path)
    return file


def discard_unfinished_instance(assoc: Association) -> None:
    """Removes the file of an instance whose C-STORE the association was still receiving when
    it ended (aborted, or the connection lost): pynetdicom leaves it in the temporary folder."""
    message = getattr(assoc.dimse, "message", None)
    path = getattr(message, "_data_set_path", None)
    if path is None:
        return
    file = getattr(message, "_data_set_file", None)
    if file is not None:
        file.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


def _wait_until_closed(assoc: Association, timeout: float = 5) -> None:
    """Returns once the connection of an ended association is closed (its state machine back
    in Sta1, "idle", PS3.8 9.2). pynetdicom confirms a release, or a rejection, just before it
    closes the socket; until it did, the association still counts at the peer, and its slot
    must not go to the next one yet."""
    deadline = time.monotonic() + timeout
    while assoc.dul.state_machine.current_state != "Sta1" and time.monotonic() < deadline:
        time.sleep(0.001)


def _disable_nagle(assoc: Association) -> None:
    """Sends each PDU at once. pynetdicom writes a message in several small sends; with Nagle's
    algorithm the last one waits for the peer's delayed ACK (40 ms on Linux), which made every
    C-STORE to Orthanc take ~40 ms (measured by ``cli bench transfer``)."""
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # already closed by the peer; the next send reports that
            pass


class _HeldReactorCheckpoint(threading.Event):
    """Keeps pynetdicom's reactor thread paused for the whole life of an association we request.

    pynetdicom pauses the association's reactor (its own reader of incoming messages) around
    every request it sends and lets it run again afterwards. The pause is racy: a reactor that
    has just passed its checkpoint can still take the next message off the queue; when that is
    the response the sender waits for, it is logged as "Received unexpected C-STORE service
    message" and the sender times out (pynetdicom issues #875, #435). With TCP_NODELAY the
    response arrives fast enough to lose that race about once per few hundred C-STOREs. A
    requestor needs no reactor between its own requests (responses and C-GET sub-operations
    are read by the sending call itself), so it stays paused until the association ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reactor_waits = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.reactor_waits.set()
        return super().wait(timeout)

    def set(self) -> None:
        """pynetdicom's "let the reactor run again": ignored while we hold it."""

    def let_go(self) -> None:
        super().set()


def _hold_reactor(assoc: Association) -> _HeldReactorCheckpoint:
    hold = _HeldReactorCheckpoint()
    assoc._reactor_checkpoint = hold  # pyright: ignore[reportAttributeAccessIssue]
    # Nothing was sent yet, so the reactor has nothing to take while it reaches the hold.
    if not hold.reactor_waits.wait(timeout=5):
        logger.warning("pynetdicom's reactor did not pause within 5 s on %s", assoc)
    return hold
