"""How many associations ADIT opens to one DICOM server at once, counted over all of ADIT's
worker processes on every host: a counting semaphore of PostgreSQL advisory locks.

A server with ``max_associations`` N has N slots, each one session-level advisory lock
``(NAMESPACE, server_pk * SLOTS_PER_SERVER + slot)``. An association holds one slot while it is
open. Locks belong to a database session, not to a transaction, so they need no transaction
open while a study streams; and a process that dies ends its session, which frees its slots:
a killed worker never leaks one.

Every process has one database connection of its own for its slots (opened with the first
association, with Django's connection parameters, so tests use the test database), shared by
all its threads under a lock; Django's per-thread connections are left alone. Advisory locks are
re-entrant within a session, so the process remembers which slots it holds and never asks for
one of those again: two threads of one process take two different slots.

After the database restarted (or the connection broke), the process's locks are gone while its
associations are still open: it forgets them and takes new ones from then on, so for as long as
those associations last the limit can be exceeded.

Two rules keep a holder from waiting for what it holds itself:

- An operation that needs several associations at once (a transfer: the fetch from the source
  while the destination stores) takes their slots together with ``reserved``, all or none, and
  its associations use those. A holder that waits for a second slot while others wait for its
  one would deadlock (a transfer from A to B beside one from B to A, or N transfers within one
  server each holding one of its N slots).
- A thread that holds a slot of a server and opens a second association to it (a C-FIND
  started while iterating the answers of another) does not wait: it takes a free slot if there
  is one, else goes over the limit with a warning. Waiting would wait for itself.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from django.conf import settings
from django.db import connections

from adit.core.dicom.errors import AssociationLimitError, DicomError, RetriableDicomError

if TYPE_CHECKING:
    from adit.core.models import DicomServer

logger = logging.getLogger(__name__)

# The first key of every slot's advisory lock: "ADAS" in ASCII. ADIT takes no other advisory
# lock in this namespace (channels_postgres locks single bigint keys, a key space of its own).
NAMESPACE = 0x41444153
# The second key is server_pk * SLOTS_PER_SERVER + slot; max_associations stays far below.
SLOTS_PER_SERVER = 1024
MAX_SERVER_PK = (2**31 - 1) // SLOTS_PER_SERVER - 1
# Between two tries for a free slot, with jitter so that waiting processes do not try in step.
POLL_SECONDS = (0.02, 0.05)

# Tries the given lock keys in order and stops at the first it gets: the recursion runs one key
# further only while none was taken, so at most one lock is taken. (A plain "WHERE
# pg_try_advisory_lock(...) LIMIT 1" may lock more rows than it returns.)
_TAKE_ONE_SQL = """
WITH RECURSIVE attempt(position, taken) AS (
    SELECT 0, false
  UNION ALL
    SELECT position + 1, pg_try_advisory_lock(%(namespace)s::int4, (%(keys)s::int4[])[position + 1])
    FROM attempt
    WHERE NOT taken AND position < cardinality(%(keys)s::int4[])
)
SELECT (%(keys)s::int4[])[position] FROM attempt WHERE taken
"""
_RELEASE_SQL = "SELECT pg_advisory_unlock(%(namespace)s::int4, %(key)s::int4)"


@dataclass(eq=False)
class Slot:
    """One held slot; compared by identity, so that a slot forgotten after a lost connection
    and taken again is not released by its former holder."""

    server_pk: int
    number: int

    @property
    def key(self) -> int:
        return self.server_pk * SLOTS_PER_SERVER + self.number


class _SlotTable:
    """The process's connection for slots and the slots it holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: psycopg.Connection | None = None
        self._held: dict[tuple[int, int], Slot] = {}

    def try_take(self, server_pk: int, limit: int) -> Slot | None:
        """A free slot of the server, taken; None if all ``limit`` are held."""
        with self._lock:
            return self._take(server_pk, limit)

    def try_take_all(self, wanted: dict[int, tuple[int, int]]) -> list[Slot] | int:
        """For each server pk -> (how many, limit), that many free slots, all or none: the
        slots, or the pk of a server without enough free ones."""
        with self._lock:
            taken: list[Slot] = []
            for server_pk, (count, limit) in wanted.items():
                for _ in range(count):
                    slot = self._take(server_pk, limit)
                    if slot is None:
                        for held in taken:
                            self._release(held)
                        return server_pk
                    taken.append(slot)
            return taken

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._release(slot)

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's connection and slots are the parent's. The
        connection is dropped without closing it, which would end the parent's session."""
        self._lock = threading.Lock()
        self._connection = None
        self._held = {}

    def _take(self, server_pk: int, limit: int) -> Slot | None:
        if not 0 < server_pk <= MAX_SERVER_PK:
            raise ValueError(f"No association slots for a server with pk {server_pk}.")
        free = [number for number in range(limit) if (server_pk, number) not in self._held]
        if not free:
            return None
        keys = [Slot(server_pk, number).key for number in free]
        rows = self._execute(_TAKE_ONE_SQL, {"namespace": NAMESPACE, "keys": keys})
        if not rows:
            return None
        slot = Slot(server_pk, rows[0][0] - server_pk * SLOTS_PER_SERVER)
        self._held[(server_pk, slot.number)] = slot
        return slot

    def _release(self, slot: Slot) -> None:
        if self._held.get((slot.server_pk, slot.number)) is not slot:
            return  # forgotten with a lost connection, whose end released it
        del self._held[(slot.server_pk, slot.number)]
        try:
            self._execute(_RELEASE_SQL, {"namespace": NAMESPACE, "key": slot.key}, reconnect=False)
        except RetriableDicomError:
            pass  # the connection is gone, and with it the lock

    def _execute(self, query: LiteralString, params: dict, reconnect: bool = True) -> list[tuple]:
        """Runs ``query`` on the slot connection; once more on a new connection if the old
        one broke (the database restarted), after forgetting the slots it held."""
        for attempt in range(2):
            try:
                return self._connect().execute(query, params).fetchall()
            except psycopg.OperationalError as err:
                self._lost_connection(err)
                if attempt or not reconnect:
                    raise RetriableDicomError(
                        f"ADIT could not count its associations in its database: {err}"
                    ) from err
        raise AssertionError("the loop returns or raises")

    def _connect(self) -> psycopg.Connection:
        connection = self._connection
        if connection is None or connection.closed:
            params: dict[str, Any] = dict(connections["default"].get_connection_params() or {})
            # Django's own cursor and adapters are for its ORM; plain psycopg suffices here.
            params.pop("cursor_factory", None)
            params.pop("context", None)
            params.setdefault("application_name", "adit association slots")
            connection = self._connection = psycopg.connect(**params, autocommit=True)
        return connection

    def _lost_connection(self, err: Exception) -> None:
        if self._held:
            logger.warning(
                "The database connection that counts ADIT's associations broke (%s); the %d "
                "slot(s) it held are free now though their associations may still be open.",
                err,
                len(self._held),
            )
        self._held.clear()
        if self._connection is not None:
            try:
                self._connection.close()
            except psycopg.Error:
                pass
        self._connection = None


_table = _SlotTable()


def close() -> None:
    """Closes the process's slot connection, which frees the slots it holds; for tests, before
    their database is dropped."""
    _table.close()


os.register_at_fork(after_in_child=_table.forget_after_fork)


@dataclass(eq=False)
class _Lease:
    """A slot of a reservation, used by one association of the reserving operation at a time."""

    slot: Slot
    in_use: bool = False


_lease_lock = threading.Lock()
# The leases of the reservations of the current operation. Threads that the operation starts
# for it (the fetch of an InstanceStream, a C-MOVE) run in a copy of its context and so use
# them too.
_reservation: ContextVar[tuple[_Lease, ...]] = ContextVar("association_reservation", default=())
# Slots (server pk -> how many) the current thread holds, to tell a nested association.
_thread_holds = threading.local()


def _held_by_this_thread() -> Counter[int]:
    if not hasattr(_thread_holds, "counts"):
        _thread_holds.counts = Counter()
    return _thread_holds.counts


def _wait_seconds(wait_seconds: float | None) -> float:
    return settings.DICOM_ASSOCIATION_WAIT_SECONDS if wait_seconds is None else wait_seconds


def _pause() -> None:
    time.sleep(random.uniform(*POLL_SECONDS))


def _limit_error(server: DicomServer, limit: int, waited: float) -> AssociationLimitError:
    return AssociationLimitError(
        f"All {limit} associations ADIT may open to {server.name} at once are in use (setting "
        f'"max. associations" of the server); tried for {waited:g} s.'
    )


@contextmanager
def association_slot(server: DicomServer, wait_seconds: float | None = None) -> Iterator[None]:
    """Holds a slot of ``server`` for one association, waiting for one if all are in use.

    A slot reserved by the current operation (``reserved``) is used first.

    Raises:
        AssociationLimitError: No slot became free within ``wait_seconds`` (default: setting
            DICOM_ASSOCIATION_WAIT_SECONDS).
        RetriableDicomError: The database cannot be reached.
    """
    server_pk = int(server.pk)
    lease = _take_reserved(server_pk)
    slot = None if lease is not None else _take_or_wait(server, _wait_seconds(wait_seconds))
    held = _held_by_this_thread()
    held[server_pk] += 1
    try:
        yield
    finally:
        held[server_pk] -= 1
        if lease is not None:
            with _lease_lock:
                lease.in_use = False
        if slot is not None:
            _table.release(slot)


def _take_reserved(server_pk: int) -> _Lease | None:
    with _lease_lock:
        for lease in _reservation.get():
            if lease.slot.server_pk == server_pk and not lease.in_use:
                lease.in_use = True
                return lease
    return None


def _take_or_wait(server: DicomServer, wait_seconds: float) -> Slot | None:
    server_pk, limit = int(server.pk), server.max_associations
    nested = _held_by_this_thread()[server_pk] > 0
    started = time.monotonic()
    while True:
        slot = _table.try_take(server_pk, limit)
        if slot is not None:
            return slot
        if nested:
            logger.warning(
                "A second association to %s opened while this thread holds one goes over its "
                "limit of %d, rather than wait for itself.",
                server.name,
                limit,
            )
            return None
        if time.monotonic() - started >= wait_seconds:
            raise _limit_error(server, limit, wait_seconds)
        _pause()


@contextmanager
def reserved(servers: Iterable[DicomServer], wait_seconds: float | None = None) -> Iterator[None]:
    """Within the block, the associations of this operation to these servers (also those opened
    by threads it starts with its context) use slots taken here: one per server listed, two for
    a server listed twice, taken all at once or none, so the operation never holds one while it
    waits for another. Unsaved servers are left out.

    Raises:
        DicomError: A server is listed more often than its limit allows at all.
        AssociationLimitError: The slots did not become free together within ``wait_seconds``.
        RetriableDicomError: The database cannot be reached.
    """
    counted = [server for server in servers if server.pk is not None]
    wanted: dict[int, tuple[int, int]] = {}
    for server in counted:
        count, limit = wanted.get(int(server.pk), (0, server.max_associations))
        wanted[int(server.pk)] = (count + 1, limit)
    for server in counted:
        count, limit = wanted[int(server.pk)]
        if count > limit:
            raise DicomError(
                f"This needs {count} associations to {server.name} at the same time, but ADIT "
                f'may open only {limit} to it (setting "max. associations" of the server).'
            )
    wait = _wait_seconds(wait_seconds)
    started = time.monotonic()
    while isinstance(slots := _table.try_take_all(wanted), int):
        if time.monotonic() - started >= wait:
            busy = next(server for server in counted if server.pk == slots)
            raise _limit_error(busy, wanted[slots][1], wait)
        _pause()
    leases = tuple(_Lease(slot) for slot in slots)
    token = _reservation.set(_reservation.get() + leases)
    try:
        yield
    finally:
        _reservation.reset(token)
        for lease in leases:
            _table.release(lease.slot)
