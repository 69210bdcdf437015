"""The places where ADIT reaches into pynetdicom's private parts, checked on real
associations, so that an upgrade that renames them fails here instead of silently costing
time or memory: the reactor hold (5 s per association, lost responses), TCP_NODELAY (40 ms per
C-STORE), the bounded send queue (a whole instance in memory per C-STORE), writing C-STOREs to
the socket (pynetdicom's per-PDU cost again) and receiving into files (a whole instance in
memory per arrival). pyproject.toml bounds pynetdicom to the minor version these were written
against.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import AssociationSocket

from adit.core.dicom.dimse import (
    VERIFICATION,
    DimseConnector,
    DimsePeer,
    _HeldReactorCheckpoint,
    _ready_to_read,
)
from adit.core.dicom.send_buffer import _BoundedSendQueue, can_write_directly

pytestmark = pytest.mark.integration


def _connector(orthanc) -> DimseConnector:
    return DimseConnector(
        DimsePeer(orthanc.ae_title, orthanc.ae_title, "127.0.0.1", orthanc.dicom_port), "ADIT"
    )


def test_pynetdicom_still_has_the_reactor_checkpoint_adit_replaces():
    association = Association(AE(), "requestor")
    checkpoint = getattr(association, "_reactor_checkpoint", None)
    assert isinstance(checkpoint, threading.Event), (
        "pynetdicom's Association has no _reactor_checkpoint Event any more: dimse._hold_reactor "
        "must follow its new way of pausing the reactor."
    )


def test_the_reactor_of_an_adit_association_stays_paused_while_messages_go_both_ways(orthanc1):
    with _connector(orthanc1).associate([build_context(VERIFICATION)]) as association:
        hold = getattr(association, "_reactor_checkpoint", None)
        assert isinstance(hold, _HeldReactorCheckpoint)
        # The reactor reached the hold and waits in it: pynetdicom reads the attribute.
        assert hold.reactor_waits.is_set()
        for _ in range(3):
            assert association.send_c_echo().Status == 0x0000
            # pynetdicom "lets the reactor run" after every request; the hold ignores that.
            assert not hold.is_set()
        assert association.is_established
    assert hold.is_set()  # let go once the association ended


def test_adit_associations_send_without_nagle_delay(orthanc1):
    with _connector(orthanc1).associate([build_context(VERIFICATION)]) as association:
        raw = association.dul.socket.socket  # pyright: ignore[reportOptionalMemberAccess]
        assert raw is not None
        assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_adit_associations_send_through_the_bounded_queue_pynetdicom_reads(orthanc1):
    with _connector(orthanc1).associate([build_context(VERIFICATION)]) as association:
        sending = association.dul.to_provider_queue
        assert isinstance(sending, _BoundedSendQueue)
        assert association.send_c_echo().Status == 0x0000
        assert sending.taken >= 1  # pynetdicom's DUL took the echo from it
        assert sending.queued_bytes == 0


def test_pynetdicom_writes_through_the_turns_adit_takes_on_the_socket(orthanc1):
    with _connector(orthanc1).associate([build_context(VERIFICATION)]) as association:
        sending = association.dul.to_provider_queue
        assert isinstance(sending, _BoundedSendQueue)
        assert can_write_directly(association), (
            "ADIT cannot write C-STOREs to this association's socket: pynetdicom's DUL has no "
            "_send or socket any more (send_buffer.bound_sending)."
        )
        assert association.send_c_echo().Status == 0x0000
        # The DUL thread wrote the echo through ADIT's wrapper of its _send, which counts it.
        assert sending.being_written == 0
        assert sending.taken >= 1


def test_pynetdicom_encodes_the_command_set_alone_for_an_empty_data_set():
    request = C_STORE()
    request.MessageID = 1
    request.Priority = 2
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.3.4"
    request.DataSet = BytesIO()
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = [
        data
        for pdata in message.encode_msg(1, 16384)
        for _, data in pdata.presentation_data_value_list
    ]
    # send_buffer.send_c_store_request sends the data set itself, after this command set,
    # which must say that a data set follows (0x0001, PS3.7 E.1).
    assert [fragment[0] for fragment in fragments] == [0x03]
    assert message.command_set.CommandDataSetType == 0x0001


def test_pynetdicom_still_receives_a_c_store_into_the_file_adit_reads():
    from pynetdicom import _config
    from pynetdicom.dimse_messages import C_STORE_RQ

    assert _config.STORE_RECV_CHUNKED_DATASET is True
    assert hasattr(C_STORE_RQ(), "_data_set_path"), (
        "pynetdicom's C-STORE message no longer records the file it received into: "
        "dimse.received_file must follow."
    )


def test_pynetdicom_still_reads_whether_its_socket_is_ready_where_adit_replaces_it():
    ready = getattr(AssociationSocket, "ready", None)
    assert isinstance(ready, property) and ready.fget is _ready_to_read, (
        "pynetdicom's AssociationSocket.ready is no longer the property ADIT replaced: "
        "check whether it still uses select() (dimse._ready_to_read)."
    )


def test_associations_work_on_a_socket_numbered_above_what_select_can_watch(orthanc1):
    # select() fails on a descriptor above 1023, which a busy process with a raised limit holds;
    # pynetdicom took that for a closed connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with _connector(orthanc1).associate([build_context(VERIFICATION)]) as association:
            raw = association.dul.socket.socket  # pyright: ignore[reportOptionalMemberAccess]
            assert raw is not None and raw.fileno() > 1023
            for _ in range(3):
                assert association.send_c_echo().Status == 0x0000
            assert association.is_established
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
