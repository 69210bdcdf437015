"""The limit of associations at once per server, on the real PostgreSQL of the tests: among
threads, against another process, after a killed holder, at the wait limit, and the rules that
keep a holder from waiting for itself."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.db import connection

from adit.core import association_slots
from adit.core.dicom.errors import AssociationLimitError, DicomError
from adit.core.models import DicomServer
from adit.core.tests.app_processes import database_url

pytestmark = pytest.mark.django_db


def _server(pk: int, limit: int) -> DicomServer:
    """A server with a pk, as the slots know servers; left unsaved, since the slot connection
    would not see a row of the test's transaction anyway."""
    return DicomServer(pk=pk, name=f"PACS {pk}", max_associations=limit)


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    # An end sorts before a start at the same moment: one slot handed on is not two.
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


class _Holders:
    """Threads that each hold a slot of ``server`` until told to let go."""

    def __init__(self, server: DicomServer, count: int):
        self.server = server
        self.let_go = threading.Event()
        self.holding = threading.Semaphore(0)
        self.threads = [threading.Thread(target=self._hold) for _ in range(count)]
        for thread in self.threads:
            thread.start()
        for _ in self.threads:
            assert self.holding.acquire(timeout=10)

    def _hold(self) -> None:
        with association_slots.association_slot(self.server):
            self.holding.release()
            self.let_go.wait(timeout=30)

    def stop(self) -> None:
        self.let_go.set()
        for thread in self.threads:
            thread.join(timeout=10)


@pytest.fixture
def holders() -> Iterator[list[_Holders]]:
    started: list[_Holders] = []
    yield started
    for each in started:
        each.stop()


def _slot_process(arguments: dict, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "adit.core.tests.slot_holder", json.dumps(arguments)],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "adit.settings.test",
            "DATABASE_URL": database_url(),
        },
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_threads_never_hold_more_slots_than_the_limit():
    server = _server(101, limit=3)
    intervals: list[tuple[float, float]] = []

    def work() -> None:
        for _ in range(3):
            with association_slots.association_slot(server):
                started = time.monotonic()
                time.sleep(0.03)
                intervals.append((started, time.monotonic()))

    threads = [threading.Thread(target=work) for _ in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(intervals) == 27
    assert _most_at_once(intervals) == 3


def test_another_process_competing_for_the_slots_keeps_the_total_within_the_limit():
    server = _server(102, limit=2)
    process = _slot_process(
        {"server_pk": 102, "limit": 2, "mode": "compete", "threads": 4, "rounds": 4,
         "hold_seconds": 0.03},
        stdin=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        intervals: list[tuple[float, float]] = []

        def work() -> None:
            for _ in range(4):
                with association_slots.association_slot(server):
                    started = time.monotonic()
                    time.sleep(0.03)
                    intervals.append((started, time.monotonic()))

        threads = [threading.Thread(target=work) for _ in range(4)]
        process.stdin.write("go\n")
        process.stdin.flush()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        theirs = [tuple(interval) for interval in json.loads(process.stdout.readline())]
    finally:
        process.kill()
        process.wait()
    assert len(intervals) == len(theirs) == 16
    # Both sides waited for the other at times: the processes really competed.
    mine_first, mine_last = min(start for start, _ in intervals), max(end for _, end in intervals)
    assert any(mine_first < start < mine_last for start, _ in theirs)
    assert _most_at_once(intervals + theirs) == 2  # type: ignore[arg-type]


def test_a_killed_holder_frees_its_slot():
    server = _server(103, limit=1)
    process = _slot_process({"server_pk": 103, "limit": 1, "mode": "hold"})
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "held"
        with pytest.raises(AssociationLimitError):
            with association_slots.association_slot(server, wait_seconds=0.2):
                pass
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    started = time.monotonic()
    with association_slots.association_slot(server, wait_seconds=10):
        pass
    assert time.monotonic() - started < 5


def test_no_free_slot_within_the_wait_limit_is_a_retriable_error_that_says_why(holders):
    server = _server(104, limit=2)
    holders.append(_Holders(server, 2))
    started = time.monotonic()
    with pytest.raises(AssociationLimitError) as raised:
        with association_slots.association_slot(server, wait_seconds=0.3):
            pass
    assert time.monotonic() - started >= 0.3
    assert str(raised.value) == (
        'All 2 associations ADIT may open to PACS 104 at once are in use (setting "max. '
        'associations" of the server); tried for 0.3 s.'
    )


def test_a_slot_let_go_by_another_thread_is_taken_by_a_waiting_one(holders):
    server = _server(105, limit=1)
    holding = _Holders(server, 1)
    holders.append(holding)
    threading.Timer(0.2, holding.let_go.set).start()
    started = time.monotonic()
    with association_slots.association_slot(server, wait_seconds=10):
        waited = time.monotonic() - started
    assert 0.15 < waited < 5


def test_a_nested_association_of_one_thread_goes_over_the_limit_instead_of_waiting(caplog):
    server = _server(106, limit=1)
    with association_slots.association_slot(server):
        with caplog.at_level(logging.WARNING, logger="adit.core.association_slots"):
            with association_slots.association_slot(server, wait_seconds=30):
                pass
    assert "goes over its limit of 1, rather than wait for itself" in caplog.text
    # Both were given back.
    with association_slots.association_slot(server, wait_seconds=1):
        pass


def test_a_reservation_serves_the_threads_started_in_its_context(holders):
    server = _server(107, limit=1)
    used: list[str] = []

    def associate(name: str) -> None:
        with association_slots.association_slot(server, wait_seconds=0.3):
            used.append(name)

    with association_slots.reserved([server]):
        helper = threading.Thread(
            target=contextvars.copy_context().run, args=(associate, "in the context")
        )
        helper.start()
        helper.join()
        # A thread outside the operation waits for a slot like any other.
        stranger = threading.Thread(target=lambda: _expect_limit(associate, "stranger"))
        stranger.start()
        stranger.join()
    assert used == ["in the context"]
    associate("after the reservation")


def _expect_limit(function, *args) -> None:
    with pytest.raises(AssociationLimitError):
        function(*args)


def test_a_reservation_takes_all_its_slots_or_none(holders):
    first, second = _server(108, limit=1), _server(109, limit=1)
    holding = _Holders(second, 1)
    holders.append(holding)
    with pytest.raises(AssociationLimitError, match="to PACS 109 at once"):
        with association_slots.reserved([first, second], wait_seconds=0.2):
            pass
    # The slot of the first server was given back when the second had none free.
    with association_slots.association_slot(first, wait_seconds=0.2):
        pass


def test_crossing_reservations_do_not_deadlock():
    """Transfers from A to B and from B to A at a limit of one each: with one slot taken
    before the other, each would hold what the other waits for."""
    a, b = _server(110, limit=1), _server(111, limit=1)
    done: list[str] = []

    def transfer(source: DicomServer, destination: DicomServer) -> None:
        for _ in range(5):
            with association_slots.reserved([source, destination], wait_seconds=20):
                time.sleep(0.02)
        done.append(f"{source.pk}->{destination.pk}")

    threads = [threading.Thread(target=transfer, args=pair) for pair in ((a, b), (b, a)) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(done) == ["110->111", "110->111", "111->110", "111->110"]


def test_a_reservation_of_more_slots_than_the_limit_fails_at_once():
    server = _server(112, limit=1)
    started = time.monotonic()
    with pytest.raises(DicomError, match="needs 2 associations to PACS 112 at the same time"):
        with association_slots.reserved([server, server]):
            pass
    assert time.monotonic() - started < 1
    with association_slots.reserved([_server(113, limit=2)] * 2):
        pass


def test_after_the_slot_connection_broke_the_next_association_reconnects(holders, caplog):
    server = _server(114, limit=2)
    first = _Holders(server, 1)
    holders.append(first)
    with connection.cursor() as cursor:  # as a restart of the database would
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
            "'adit association slots' AND datname = current_database()"
        )
    time.sleep(0.2)  # the backend ends a moment after it was told to
    with caplog.at_level(logging.WARNING, logger="adit.core.association_slots"):
        with association_slots.association_slot(server, wait_seconds=2):
            assert "broke" in caplog.text
            # The first holder's lock went with the connection and is forgotten: until its
            # association ends, ADIT may open one more than the limit, as the module says.
            second = _Holders(server, 1)
            holders.append(second)
            first.stop()  # gives back nothing: its slot is held by this block now
            with pytest.raises(AssociationLimitError):
                _other_thread(lambda: association_slots.association_slot(server, wait_seconds=0.2))


def _other_thread(make_slot) -> None:
    """Enters and leaves the slot ``make_slot()`` makes on another thread; re-raises there."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with make_slot():
                pass
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if errors:
        raise errors[0]


def test_an_unsaved_server_is_not_counted():
    server = DicomServer(name="not saved", max_associations=1)
    with server.association_slot():
        with server.association_slot():
            pass
