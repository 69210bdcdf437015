"""The C-STORE receiver hands each instance to the worker subscribed to it, and refuses the rest.

The storing side is played by pynetdicom and by dcmtk's storescu, the worker side by
FileChannelClient. No database is needed.
"""

import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from django.conf import settings
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from adit.core.dicom.errors import RetriableDicomError
from adit.core.dicom.file_channel import (
    PROTOCOL_VERSION,
    ChannelAuthenticationError,
    FileChannelClient,
    ReceivedInstance,
    ReceiverStoppingError,
    Subscription,
    SubscriptionScope,
    recv_message,
    send_message,
    subscription_mac,
)
from adit.core.dicom.receiver import CANNOT_UNDERSTAND, REFUSED_NOT_AUTHORIZED, Receiver

# An AE title with a space and an underscore: upstream ADIT split file names on "_".
PACS_AE = "ORTHANC_1 A"
RECEIVER_AE = "ADIT_TEST"
SUCCESS = 0x0000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_instance(study_uid: str, series_uid: str) -> Dataset:
    """A small CT image with file meta, ready to write as a Part 10 file."""
    sop_uid = generate_uid()
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CTImageStorage
    file_meta.MediaStorageSOPInstanceUID = sop_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "PAT001"
    ds.PatientName = "Lefèvre^Giulia"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(128))  # 8 x 8 pixels of 16 bits
    return ds


def _part10_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dataset_bytes(part10: bytes) -> bytes:
    """The encoded data set of a Part 10 file, without preamble and file meta."""
    # The file meta starts after the 128-byte preamble and "DICM" with (0002,0000) UL, whose
    # 4-byte value is the length of the rest of the file meta.
    assert part10[128:132] == b"DICM"
    assert part10[132:138] == b"\x02\x00\x00\x00UL"
    meta_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_length :]


def _store(
    address: tuple[str, int],
    datasets: list[Dataset],
    calling_ae: str = PACS_AE,
    move_message_id: int | None = None,
) -> list:
    """Stores the datasets over one association, as a PACS answering a C-MOVE would (naming
    the C-MOVE's Message ID, if given, as MoveOriginatorMessageID)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(*address, ae_title=RECEIVER_AE)
    assert assoc.is_established
    originator = None if move_message_id is None else "ADIT"
    try:
        return [
            assoc.send_c_store(ds, originator_aet=originator, originator_id=move_message_id).Status
            for ds in datasets
        ]
    finally:
        assoc.release()


def _store_in_background(
    address: tuple[str, int], datasets: list[Dataset], calling_ae: str = PACS_AE
) -> tuple[threading.Thread, list]:
    """Stores in a thread: each C-STORE waits until the subscriber took its instance."""
    statuses: list = []
    thread = threading.Thread(
        target=lambda: statuses.extend(_store(address, datasets, calling_ae)), daemon=True
    )
    thread.start()
    return thread, statuses


def _receive_until_quiet(subscription: Subscription, quiet: float = 2.0) -> list[ReceivedInstance]:
    instances = []
    while (instance := subscription.receive(timeout=quiet)) is not None:
        instances.append(instance)
    return instances


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(RECEIVER_AE, 0, 0, delivery_timeout=2)
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def client(receiver: Receiver) -> FileChannelClient:
    return FileChannelClient(*receiver.channel_address)


def test_subscribed_instance_arrives_byte_identical(receiver, client):
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _make_instance(study_uid, series_uid)

    with client.subscribe(PACS_AE, study_uid) as subscription:
        thread, statuses = _store_in_background(receiver.store_address, [ds])
        instance = subscription.receive(timeout=5)
        thread.join(timeout=5)

    assert statuses == [SUCCESS]
    assert instance is not None
    assert instance.sop_instance_uid == ds.SOPInstanceUID
    assert instance.series_uid == series_uid
    assert instance.calling_ae == PACS_AE
    assert _dataset_bytes(instance.data) == _dataset_bytes(_part10_bytes(ds))
    received = dcmread(BytesIO(instance.data))
    assert received == ds
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_instance_of_unsubscribed_study_is_refused(receiver, client):
    subscribed_study = generate_uid()
    other = _make_instance(generate_uid(), generate_uid())
    from_other_pacs = _make_instance(subscribed_study, generate_uid())

    with client.subscribe(PACS_AE, subscribed_study) as subscription:
        assert _store(receiver.store_address, [other]) == [REFUSED_NOT_AUTHORIZED]
        assert _store(receiver.store_address, [from_other_pacs], calling_ae="ORTHANC2") == [
            REFUSED_NOT_AUTHORIZED
        ]
        assert subscription.receive(timeout=0.2) is None
        # The worker of the study learns that its PACS calls with another AE title.
        assert subscription.refused_callers == {"ORTHANC2": 1}


def test_a_stopping_receiver_tells_its_subscribers():
    receiver = Receiver(RECEIVER_AE, 0, 0, delivery_timeout=2)
    receiver.start()
    stopped = False
    try:
        with FileChannelClient(*receiver.channel_address).subscribe(
            PACS_AE, generate_uid()
        ) as subscription:
            receiver.stop()
            stopped = True
            with pytest.raises(ReceiverStoppingError, match="receiver .* stopped while"):
                subscription.receive(timeout=2)
    finally:
        if not stopped:
            receiver.stop()


def test_instance_without_study_uid_cannot_be_understood(receiver):
    ds = _make_instance(generate_uid(), generate_uid())
    del ds.StudyInstanceUID

    assert _store(receiver.store_address, [ds]) == [CANNOT_UNDERSTAND]


@pytest.fixture
def storescu() -> str:
    """dcmtk's storescu. pynetdicom installs a tool of the same name into the virtualenv, which
    comes first on the PATH under 'uv run', so the search skips the virtualenv."""
    venv_bin = Path(sys.executable).parent
    search_path = os.pathsep.join(
        folder
        for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if folder and Path(folder).resolve() != venv_bin.resolve()
    )
    path = shutil.which("storescu", path=search_path)
    if path is None:
        pytest.fail("dcmtk's storescu is missing; install it with 'apt-get install -y dcmtk'.")
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    assert "dcmtk" in version, f"{path} is not dcmtk's storescu"
    return path


def _run_storescu(
    storescu: str, address: tuple[str, int], file: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [storescu, "-v", "-aet", PACS_AE, "-aec", RECEIVER_AE, *map(str, address), str(file)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_storescu_instance_arrives_byte_identical(receiver, client, storescu, tmp_path):
    study_uid = generate_uid()
    ds = _make_instance(study_uid, generate_uid())
    file = tmp_path / "ct.dcm"
    file.write_bytes(_part10_bytes(ds))
    results: list[subprocess.CompletedProcess[str]] = []

    with client.subscribe(PACS_AE, study_uid) as subscription:
        thread = threading.Thread(
            target=lambda: results.append(_run_storescu(storescu, receiver.store_address, file))
        )
        thread.start()
        instance = subscription.receive(timeout=10)
        thread.join(timeout=10)

    assert results[0].returncode == 0, results[0].stderr
    assert "Received Store Response (Success)" in results[0].stderr, results[0].stderr
    assert instance is not None
    assert instance.calling_ae == PACS_AE
    assert _dataset_bytes(instance.data) == _dataset_bytes(file.read_bytes())
    assert dcmread(BytesIO(instance.data)) == ds


def test_storescu_sees_the_refusal(receiver, storescu, tmp_path):
    file = tmp_path / "ct.dcm"
    file.write_bytes(_part10_bytes(_make_instance(generate_uid(), generate_uid())))

    result = _run_storescu(storescu, receiver.store_address, file)

    # dcmtk 3.6.7 has no name for 0124H in C-STORE responses, but counts it as a failure.
    assert "Received Store Response (Unknown Status: 0x124)" in result.stderr, result.stderr
    assert result.returncode != 0


def test_concurrent_subscriptions_get_only_their_own_instances(receiver, client):
    studies = [generate_uid(), generate_uid()]
    sent = {study: [_make_instance(study, generate_uid()) for _ in range(5)] for study in studies}
    received: dict[str, list[ReceivedInstance]] = {}
    subscribed = threading.Barrier(len(studies) + 1, timeout=10)

    def fetch(study_uid: str) -> None:
        with client.subscribe(PACS_AE, study_uid) as subscription:
            subscribed.wait()
            received[study_uid] = _receive_until_quiet(subscription)

    workers = [threading.Thread(target=fetch, args=[study]) for study in studies]
    for worker in workers:
        worker.start()
    subscribed.wait()
    interleaved = [ds for pair in zip(*sent.values(), strict=True) for ds in pair]
    statuses = _store(receiver.store_address, interleaved)
    for worker in workers:
        worker.join(timeout=10)

    assert statuses == [SUCCESS] * len(interleaved)
    for study in studies:
        assert [i.sop_instance_uid for i in received[study]] == [
            ds.SOPInstanceUID for ds in sent[study]
        ]


def test_series_subscription_gets_only_its_series(receiver, client):
    study_uid, wanted_series, other_series = generate_uid(), generate_uid(), generate_uid()
    wanted = _make_instance(study_uid, wanted_series)
    unwanted = _make_instance(study_uid, other_series)

    with client.subscribe(PACS_AE, study_uid, [wanted_series]) as subscription:
        thread, statuses = _store_in_background(receiver.store_address, [unwanted, wanted])
        instances = _receive_until_quiet(subscription)
        thread.join(timeout=5)

    assert statuses == [REFUSED_NOT_AUTHORIZED, SUCCESS]
    assert [i.sop_instance_uid for i in instances] == [wanted.SOPInstanceUID]


def test_disconnected_subscriber_is_removed_and_its_instances_refused(receiver, client):
    study_uid = generate_uid()
    with client.subscribe(PACS_AE, study_uid):
        assert len(receiver.registry) == 1
    _wait_until(lambda: len(receiver.registry) == 0)

    assert _store(receiver.store_address, [_make_instance(study_uid, generate_uid())]) == [
        REFUSED_NOT_AUTHORIZED
    ]


def test_subscriber_that_does_not_take_its_instance_loses_the_subscription(receiver, client):
    study_uid = generate_uid()
    with client.subscribe(PACS_AE, study_uid) as subscription:
        started = time.monotonic()
        statuses = _store(receiver.store_address, [_make_instance(study_uid, generate_uid())])
        assert statuses == [REFUSED_NOT_AUTHORIZED]
        assert time.monotonic() - started < 4  # the receiver's delivery timeout is 2 s
        with pytest.raises(RetriableDicomError, match="was lost"):
            for _ in range(3):  # the instance may still sit in the socket; then comes the end
                subscription.receive(timeout=5)
    assert len(receiver.registry) == 0


def _receive_in_background(
    subscription: Subscription,
) -> tuple[threading.Thread, list[ReceivedInstance]]:
    received: list[ReceivedInstance] = []
    thread = threading.Thread(
        target=lambda: received.extend(_receive_until_quiet(subscription)), daemon=True
    )
    thread.start()
    return thread, received


def test_overlapping_subscriptions_each_get_every_instance_once(receiver, client):
    """A study and one of its series fetched at once: the PACS stores the series twice (once
    per C-MOVE), and each copy goes to a subscription that lacks it."""
    study_uid, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    in_a = [_make_instance(study_uid, series_a) for _ in range(2)]
    in_b = [_make_instance(study_uid, series_b)]
    with (
        client.subscribe(PACS_AE, study_uid) as whole,
        client.subscribe(f" {PACS_AE} ", study_uid, [series_a]) as one_series,
    ):
        assert len(receiver.registry) == 2
        readers = [_receive_in_background(whole), _receive_in_background(one_series)]
        study_move = _store(receiver.store_address, [*in_a, *in_b])
        series_move = _store(receiver.store_address, in_a)
        third_copy = _store(receiver.store_address, in_a[:1])
        for thread, _ in readers:
            thread.join(timeout=10)

    assert study_move + series_move == [SUCCESS] * 5
    assert third_copy == [REFUSED_NOT_AUTHORIZED]  # both have it: nobody asked for it
    (_, got_whole), (_, got_series) = readers
    assert sorted(i.sop_instance_uid for i in got_whole) == sorted(
        ds.SOPInstanceUID for ds in [*in_a, *in_b]
    )
    assert sorted(i.sop_instance_uid for i in got_series) == sorted(
        ds.SOPInstanceUID for ds in in_a
    )


def test_a_copy_naming_its_c_move_goes_to_that_subscription(receiver, client):
    study_uid = generate_uid()
    instance = _make_instance(study_uid, generate_uid())
    with (
        client.subscribe(PACS_AE, study_uid, move_message_id=7) as first,
        client.subscribe(PACS_AE, study_uid, move_message_id=9) as second,
    ):
        readers = [_receive_in_background(first), _receive_in_background(second)]
        # Without the Message ID the older subscription would get this copy.
        assert _store(receiver.store_address, [instance], move_message_id=9) == [SUCCESS]
        assert _store(receiver.store_address, [instance], move_message_id=7) == [SUCCESS]
        for thread, _ in readers:
            thread.join(timeout=10)
    (_, got_first), (_, got_second) = readers
    assert [i.sop_instance_uid for i in got_first] == [instance.SOPInstanceUID]
    assert [i.sop_instance_uid for i in got_second] == [instance.SOPInstanceUID]


def test_subscriptions_of_another_pacs_do_not_take_the_instances(receiver, client):
    study_uid = generate_uid()
    instance = _make_instance(study_uid, generate_uid())
    with client.subscribe("ORTHANC2", study_uid) as other:
        reader, got = _receive_in_background(other)
        assert _store(receiver.store_address, [instance]) == [REFUSED_NOT_AUTHORIZED]
        reader.join(timeout=10)
    assert got == []


def test_client_reports_a_receiver_that_is_not_running():
    port = _free_port()
    client = FileChannelClient("127.0.0.1", port)
    started = time.monotonic()

    with pytest.raises(RetriableDicomError) as raised:
        with client.subscribe(PACS_AE, generate_uid()):
            pass

    assert time.monotonic() - started < 6
    assert str(raised.value) == (
        f"The DICOM receiver is not reachable at 127.0.0.1:{port} (connection refused). "
        "Is the receiver running ('uv run cli up' starts it)?"
    )


def test_client_reports_a_connection_lost_mid_stream(receiver, client):
    with client.subscribe(PACS_AE, generate_uid()) as subscription:
        # As when the receiver dies (kill -9): no goodbye, the connection just ends.
        assert receiver._channel_server is not None
        receiver._channel_server.close_connections()
        with pytest.raises(RetriableDicomError, match="was lost while receiving study"):
            subscription.receive(timeout=5)


def test_client_rejects_invalid_values(client):
    with pytest.raises(ValueError, match="AE title"):
        with client.subscribe("  ", generate_uid()):
            pass
    with pytest.raises(ValueError, match="AE title"):
        with client.subscribe("A" * 17, generate_uid()):
            pass
    with pytest.raises(ValueError, match="collection"):
        with client.subscribe(PACS_AE, generate_uid(), generate_uid()):
            pass
    with pytest.raises(ValueError, match="move_message_id"):
        with client.subscribe(PACS_AE, generate_uid(), move_message_id=0x10000):
            pass


# -- authentication -----------------------------------------------------------------------------

CHANNEL_SECRET = b"a shared secret of the receiver and its workers"


@pytest.fixture
def guarded_receiver() -> Iterator[Receiver]:
    receiver = Receiver(RECEIVER_AE, 0, 0, delivery_timeout=2, channel_secret=CHANNEL_SECRET)
    receiver.start()
    yield receiver
    receiver.stop()


def _raw_subscribe(address: tuple[str, int], message_for) -> tuple[dict, dict]:
    """Subscribes by hand: reads the challenge, sends `message_for(nonce)`, returns both
    answers of the receiver."""
    with socket.create_connection(address, timeout=5) as sock:
        challenge = recv_message(sock)
        send_message(sock, message_for(challenge["nonce"]))
        return challenge, recv_message(sock)


def test_worker_with_the_secret_subscribes_and_receives(guarded_receiver):
    client = FileChannelClient(*guarded_receiver.channel_address, secret=CHANNEL_SECRET)
    study_uid = generate_uid()
    ds = _make_instance(study_uid, generate_uid())

    with client.subscribe(PACS_AE, study_uid) as subscription:
        thread, statuses = _store_in_background(guarded_receiver.store_address, [ds])
        instance = subscription.receive(timeout=5)
        thread.join(timeout=5)

    assert statuses == [SUCCESS]
    assert instance is not None and instance.sop_instance_uid == ds.SOPInstanceUID


def test_worker_with_another_secret_is_refused_logged_and_gets_nothing(guarded_receiver, caplog):
    client = FileChannelClient(*guarded_receiver.channel_address, secret=b"a guess")
    study_uid = generate_uid()

    with caplog.at_level(logging.WARNING, logger="adit.core.dicom.receiver"):
        with pytest.raises(ChannelAuthenticationError) as raised:
            with client.subscribe(PACS_AE, study_uid):
                pytest.fail("subscribed without the secret")

    assert "Set the same FILE_CHANNEL_SECRET" in str(raised.value)
    assert not isinstance(raised.value, RetriableDicomError)  # configuration, not a hiccup
    assert "answered the challenge with a wrong MAC" in caplog.text
    assert len(guarded_receiver.registry) == 0
    stored = _store(guarded_receiver.store_address, [_make_instance(study_uid, generate_uid())])
    assert stored == [REFUSED_NOT_AUTHORIZED]


def test_subscription_without_a_mac_is_refused_and_gets_nothing(guarded_receiver, caplog):
    study_uid = generate_uid()
    scope = SubscriptionScope.create(PACS_AE, study_uid)

    with caplog.at_level(logging.WARNING, logger="adit.core.dicom.receiver"):
        challenge, answer = _raw_subscribe(
            guarded_receiver.channel_address, lambda nonce: scope.to_message()
        )

    assert challenge["protocol"] == PROTOCOL_VERSION == 2
    assert answer["type"] == "refused" and answer["reason"] == "unauthenticated"
    assert "sent no MAC" in caplog.text
    stored = _store(guarded_receiver.store_address, [_make_instance(study_uid, generate_uid())])
    assert stored == [REFUSED_NOT_AUTHORIZED]


def test_recorded_subscription_cannot_be_replayed(guarded_receiver):
    """Someone who saw a worker subscribe cannot use its MAC on a connection of their own."""
    scope = SubscriptionScope.create(PACS_AE, generate_uid())
    seen: dict = {}

    def honest(nonce: str) -> dict:
        message = scope.to_message()
        message["mac"] = subscription_mac(CHANNEL_SECRET, nonce, message)
        seen.update(message)
        return message

    _challenge, first = _raw_subscribe(guarded_receiver.channel_address, honest)
    _wait_until(lambda: len(guarded_receiver.registry) == 0)
    _challenge, replayed = _raw_subscribe(guarded_receiver.channel_address, lambda nonce: seen)

    assert first["type"] == "subscribed"
    assert replayed["type"] == "refused" and replayed["reason"] == "unauthenticated"


def test_mac_covers_what_is_subscribed(guarded_receiver):
    """A MAC made for one study does not let a changed message subscribe to another."""

    def tampered(nonce: str) -> dict:
        message = SubscriptionScope.create(PACS_AE, generate_uid()).to_message()
        message["mac"] = subscription_mac(CHANNEL_SECRET, nonce, message)
        message["study_uid"] = generate_uid()
        return message

    _challenge, answer = _raw_subscribe(guarded_receiver.channel_address, tampered)

    assert answer["type"] == "refused" and answer["reason"] == "unauthenticated"


def test_worker_of_the_first_protocol_is_told_it_is_outdated(guarded_receiver):
    with socket.create_connection(guarded_receiver.channel_address, timeout=5) as sock:
        old = {**SubscriptionScope.create(PACS_AE, generate_uid()).to_message(), "protocol": 1}
        send_message(sock, old)  # version 1 sent this at once, without waiting for a challenge
        assert recv_message(sock)["type"] == "challenge"
        answer = recv_message(sock)

    assert answer["type"] == "refused" and answer["reason"] == "invalid"
    assert "protocol 2" in answer["message"]


def _collect_lines(stream) -> queue.Queue[str]:
    """Reads the stream's lines in a thread, so the test can wait for one with a timeout."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], prefix: str, timeout: float) -> str:
    """Skips log lines until one starts with `prefix`."""
    deadline = time.monotonic() + timeout
    while not (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))).startswith(prefix):
        pass
    return line


def test_management_command_serves_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "manage.py", "receiver"],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "adit.settings.test",
            # The receiver needs no database; this one is never connected to.
            "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
            "RECEIVER_AE_TITLE": RECEIVER_AE,
            "RECEIVER_PORT": "0",
            "FILE_CHANNEL_PORT": "0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _collect_lines(process.stdout)
        line = _wait_for_line(lines, "Receiver ", timeout=30)
        words = line.split()
        assert words[:7] == ["Receiver", RECEIVER_AE, "listening", "for", "C-STORE", "on", "port"]
        store_port, channel_port = int(words[7].rstrip(";")), int(words[-1])
        assert line.strip() == (
            f"Receiver {RECEIVER_AE} listening for C-STORE on port {store_port}; "
            f"file channel on port {channel_port}"
        )
        study_uid = generate_uid()
        with FileChannelClient("127.0.0.1", channel_port).subscribe(PACS_AE, study_uid) as sub:
            ds = _make_instance(study_uid, generate_uid())
            thread, statuses = _store_in_background(("127.0.0.1", store_port), [ds])
            instance = sub.receive(timeout=10)
            thread.join(timeout=10)
        assert statuses == [SUCCESS]
        assert instance is not None and instance.sop_instance_uid == ds.SOPInstanceUID

        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=10)
        assert time.monotonic() - started < 2.5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert _wait_for_line(lines, "Receiver stopped.", timeout=5)
