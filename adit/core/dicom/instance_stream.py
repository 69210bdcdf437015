"""A fetch running on its own thread, handing instances over through a buffer bounded in bytes.

DicomOperator's fetches call back synchronously for every instance. On a thread of their own
they answer the PACS while the consumer still works on the previous instance (storing it,
zipping it for a client), yet run ahead by at most a byte budget (settings.
TRANSFER_PIPELINE_BYTES) and a number of instances, so memory stays bounded whatever the
study and its instances weigh.

The budget covers what waits and what is worked on: instances wait in memory up to half of
it, and one larger than an eighth of it waits on disk instead (see ``spool``), as it arrives,
and is stored from there in pieces; at most ``SPOOLED_DEPTH`` of those wait, so a study of
huge instances does not fill the disk either. So the consumer holds at most an eighth of the
budget (twice that while it stores the instance: the C-STORE copies it) beside what waits.
Transfers and the study download both read studies this way.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from pydicom import Dataset

from adit.core.dicom import spool
from adit.core.dicom.operator import DicomOperator, SeriesCounts
from adit.core.dicom.selection import StudySelection

# How long the consumer waits for an instance before it looks again whether to go on.
WAIT_SECONDS = 0.5
# How long the fetch thread waits for room in the buffer before it looks whether to stop.
PUT_SECONDS = 0.2
# How many instances may wait at most, however small: a study of tiny instances needs no more
# to keep the PACS busy.
DEFAULT_DEPTH = 16
# How many instances may wait on disk: one to store while the next arrives is enough to keep
# both the PACS and the destination busy.
SPOOLED_DEPTH = 2


class StreamStopped(Exception):
    """The stream was stopped: the fetch ends at its next instance, the consumer gets no more."""


@dataclass(frozen=True)
class _Failure:
    error: Exception


_END = object()
_NOTHING = object()


class InstanceStream:
    """The instances of a study (or of some of its series, or one instance), fetched on a
    thread of their own.

    Example::

        stream = InstanceStream(operator, StudySelection(patient_id, study_uid))
        stream.start()
        try:
            for dataset in stream:
                store(dataset)
        finally:
            stream.stop()
    """

    def __init__(
        self,
        operator: DicomOperator,
        selection: StudySelection,
        *,
        depth: int = DEFAULT_DEPTH,
        budget_bytes: int | None = None,
        on_wait: Callable[[], None] | None = None,
        expected: SeriesCounts | None = None,
    ):
        """Prepares the fetch; nothing is sent before ``start``.

        Args:
            selection: What to fetch: the whole study, its series one after the other, or one
                instance.
            depth: How many instances may wait at most.
            budget_bytes: How many bytes the stream may hold in memory
                (settings.TRANSFER_PIPELINE_BYTES if None; see the module's docstring); a
                large instance waits on disk, and the consumer gets it with its large values
                read from there.
            expected: How many instances each series has, as the server said (asked by the
                operator if None); a fetch that delivers fewer fails.
            on_wait: Called while the consumer waits for the next instance (a slow PACS),
                every WAIT_SECONDS; an exception it raises reaches the consumer.
        """
        self.operator = operator
        self.selection = selection
        self.on_wait = on_wait
        self.expected = expected
        self.delivered = 0
        assert depth >= 1
        self.depth = depth
        self.budget_bytes = (
            settings.TRANSFER_PIPELINE_BYTES if budget_bytes is None else budget_bytes
        )
        self.waiting_limit = self.budget_bytes // 2
        self.spool_above = self.budget_bytes // 8
        self.spooled_waiting = 0
        # What waits for the consumer, each with its size; guarded by _changed.
        self._waiting: deque[tuple[object, int]] = deque()
        self.waiting_bytes = 0
        self._changed = threading.Condition()
        # Consumers awaiting in an event loop (see ``ready``), woken from the fetch thread.
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stopping = threading.Event()
        self._ended = False
        # The fetch runs in a copy of the context of the code that made the stream, which may
        # hold what its associations need (slots of the servers reserved for a transfer).
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name="fetch", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, wait: float = 0) -> None:
        """Ends the fetch at its next instance; safe from any thread and more than once.

        Args:
            wait: Seconds to wait for the fetch thread to end (0: do not wait).
        """
        self._stopping.set()
        with self._changed:
            dropped = [item for item, _ in self._waiting]
            self._waiting.clear()
            self.waiting_bytes = 0
            self.spooled_waiting = 0
            self._changed.notify_all()
            self._wake_async_waiters()
        for item in dropped:
            if isinstance(item, Dataset):
                spool.release(item)  # its disk space now, not when the stream is collected
        if wait and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=wait)

    @property
    def study_uid(self) -> str:
        return self.selection.study_uid

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def next_instance(self) -> Dataset | None:
        """The next instance, or None after the last one.

        Raises:
            Exception: What made the fetch fail, or what ``on_wait`` raised.
            StreamStopped: If the stream was stopped meanwhile.
        """
        while True:
            if self._ended:
                return None
            if self.stopped:
                raise StreamStopped  # what waited was dropped by stop()
            item = self._take(WAIT_SECONDS)
            if item is _NOTHING:
                # A stopped fetch hands nothing more over; waiting on would block forever.
                if self.stopped:
                    raise StreamStopped
                if self.on_wait is not None:
                    self.on_wait()
                continue
            if item is _END:
                self._ended = True
                return None
            if isinstance(item, _Failure):
                # The fetch thread has ended; a consumer that asks again gets the end.
                self._ended = True
                raise item.error
            assert isinstance(item, Dataset)
            return item

    def __iter__(self) -> Iterator[Dataset]:
        while (dataset := self.next_instance()) is not None:
            yield dataset

    async def ready(self) -> None:
        """Waits in the event loop until ``next_instance`` answers at once (an instance, the
        end or a failure waits, or the stream was stopped), holding no thread meanwhile: the
        fetch thread wakes the loop. A slow PACS costs an ASGI server nothing but the task.

        Raises:
            Exception: What ``on_wait`` raised (it is called every WAIT_SECONDS meanwhile).
        """
        loop = asyncio.get_running_loop()
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            waiter = (loop, woken)
            with self._changed:
                if self._waiting or self._ended or self.stopped:
                    return
                self._async_waiters.append(waiter)
            try:
                done, _ = await asyncio.wait({woken}, timeout=WAIT_SECONDS)
            finally:
                with self._changed:
                    if waiter in self._async_waiters:
                        self._async_waiters.remove(waiter)
            if not done and self.on_wait is not None:
                self.on_wait()

    async def __aiter__(self) -> AsyncIterator[Dataset]:
        """The instances for a consumer in an event loop; see ``ready``."""
        while True:
            await self.ready()
            dataset = self.next_instance()  # at once: something waits
            if dataset is None:
                return
            yield dataset

    def _wake_async_waiters(self) -> None:
        """Wakes the consumers awaiting ``ready``; called with ``_changed`` held."""
        for loop, woken in self._async_waiters:
            try:
                loop.call_soon_threadsafe(_resolve, woken)
            except RuntimeError:  # the loop is closed: nobody waits there any more
                pass

    def _run(self) -> None:
        try:
            self._fetch()
            outcome: object = _END
        except StreamStopped:
            return
        except Exception as err:  # handed to the consumer, which reports it
            outcome = _Failure(err)
        try:
            self._put(outcome)
        except StreamStopped:
            pass

    def _fetch(self) -> None:
        operator, selection, expected = self.operator, self.selection, self.expected
        patient_id, study_uid = selection.patient_id, selection.study_uid
        # An instance that will wait on disk anyway goes there as it arrives, not decoded in
        # memory first.
        spool_above = self.spool_above
        if selection.whole_study:
            operator.fetch_study(
                patient_id, study_uid, self._deliver, expected, spool_above=spool_above
            )
        elif selection.sop_uid:
            (series_uid,) = selection.series_uids
            operator.fetch_image(
                patient_id,
                study_uid,
                series_uid,
                selection.sop_uid,
                self._deliver,
                spool_above=spool_above,
            )
        else:
            for uid in selection.series_uids:
                operator.fetch_series(
                    patient_id,
                    study_uid,
                    uid,
                    self._deliver,
                    {uid: expected[uid]} if expected and uid in expected else None,
                    spool_above=spool_above,
                )

    def _deliver(self, dataset: Dataset) -> None:
        size = spool.estimated_size(dataset)
        if size > self.spool_above and not spool.is_spooled(dataset):
            # Too large to wait in memory: it waits on disk, and the fetch can go on.
            dataset = spool.spool_dataset(dataset)
            size = spool.estimated_size(dataset)
        self._put(dataset, size)
        self.delivered += 1

    def _put(self, item: object, size: int = 0) -> None:
        spooled = isinstance(item, Dataset) and spool.is_spooled(item)
        with self._changed:
            while True:
                if self.stopped:
                    raise StreamStopped
                # Something always fits into an empty buffer, so a stream never stalls.
                if not self._waiting or (
                    len(self._waiting) < self.depth
                    and self.waiting_bytes + size <= self.waiting_limit
                    and (not spooled or self.spooled_waiting < SPOOLED_DEPTH)
                ):
                    self._waiting.append((item, size))
                    self.waiting_bytes += size
                    self.spooled_waiting += spooled
                    self._changed.notify_all()
                    self._wake_async_waiters()
                    return
                self._changed.wait(PUT_SECONDS)

    def _take(self, timeout: float) -> object:
        """The next waiting item, or _NOTHING if none came within ``timeout`` seconds."""
        with self._changed:
            if not self._waiting:
                self._changed.wait(timeout)
            if not self._waiting:
                return _NOTHING
            item, size = self._waiting.popleft()
            self.waiting_bytes -= size
            self.spooled_waiting -= isinstance(item, Dataset) and spool.is_spooled(item)
            self._changed.notify_all()
            return item


async def async_chunks(chunks: Iterator[bytes], stream: InstanceStream) -> AsyncIterator[bytes]:
    """The chunks of a response streamed from ``stream`` (each made from its instances), for
    an ASGI server: each is made on a worker thread once its instance is there.

    Django's ASGI handler collects a synchronous iterator into a list before sending it, which
    would hold the whole study in memory. Waiting for the PACS happens in the event loop, so a
    slow PACS holds none of the threads that every other request of the process needs; only
    making a chunk (pseudonymizing, encoding) takes one. When the client disconnects Django
    cancels this generator, which then ends the fetch, as closing the synchronous one would.
    """
    try:
        while True:
            await stream.ready()
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                return
            yield chunk
    finally:
        stream.stop()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
