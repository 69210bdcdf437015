"""Items made on a thread of their own and handed to a consumer through a buffer bounded in
bytes and in number.

The producer (a fetch from a PACS, the parts of a request body being read and decoded) works
while the consumer still works on the previous item (storing it, sending it on), so that
neither waits for the other, yet it runs ahead by at most a byte budget and a number of items:
memory stays bounded whatever the items weigh. Something always fits into an empty buffer, so
an item larger than the budget still passes, alone. At most ``SPOOLED_DEPTH`` instances wait
on disk (spooled), so huge ones do not fill the disk either. Instances left waiting when the
stream is stopped are released at once (``spool.release``), freeing the disk space of spooled
ones.

``InstanceStream`` (instance_stream.py) fetches studies this way; ``ReadAhead`` takes the
items of any iterator.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydicom import Dataset

from adit.core.dicom import spool

T = TypeVar("T")

# How long the consumer waits for an item before it looks again whether to go on.
WAIT_SECONDS = 0.5
# How long the producer waits for room in the buffer before it looks whether to stop.
PUT_SECONDS = 0.2
# How many instances may wait on disk: one to store while the next arrives is enough to keep
# both the PACS and the destination busy.
SPOOLED_DEPTH = 2


class StreamStopped(Exception):
    """The stream was stopped: the producer ends at its next item, the consumer gets no more."""


@dataclass(frozen=True)
class _Failure:
    error: Exception


_END = object()
_NOTHING = object()


class ThreadedStream(Generic[T]):
    """Items made by ``_produce`` on a thread of its own, each handed over by ``_put``.

    Example::

        stream.start()
        try:
            for item in stream:
                use(item)
        finally:
            stream.stop()

    Whatever ``_produce`` raises reaches the consumer after the items put before it.
    """

    def __init__(
        self,
        *,
        depth: int,
        budget_bytes: int,
        on_wait: Callable[[], None] | None = None,
        name: str = "producer",
    ):
        """Prepares the producer; nothing runs before ``start``.

        Args:
            depth: How many items may wait at most.
            budget_bytes: How many bytes the waiting items may hold together.
            on_wait: Called while the consumer waits for the next item (a slow PACS), every
                WAIT_SECONDS; an exception it raises reaches the consumer.
            name: The producer thread's name.
        """
        assert depth >= 1
        self.depth = depth
        self.budget_bytes = budget_bytes
        self.on_wait = on_wait
        # What waits for the consumer, each with its size; guarded by _changed.
        self._waiting: deque[tuple[object, int]] = deque()
        self.waiting_bytes = 0
        self.spooled_waiting = 0
        self._changed = threading.Condition()
        # Consumers awaiting in an event loop (see ``ready``), woken from the producer thread.
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stopping = threading.Event()
        self._ended = False
        # The producer runs in a copy of the context of the code that made the stream, which
        # may hold what its associations need (slots of the servers reserved for a transfer).
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=name, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, wait: float = 0) -> None:
        """Ends the producer at its next item; safe from any thread and more than once.

        Args:
            wait: Seconds to wait for the producer thread to end (0: do not wait).
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
            _drop(item)
        if wait and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=wait)

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def next_item(self) -> T | None:
        """The next item, or None after the last one.

        Raises:
            Exception: What made the producer fail, or what ``on_wait`` raised.
            StreamStopped: If the stream was stopped meanwhile.
        """
        while True:
            if self._ended:
                return None
            if self.stopped:
                raise StreamStopped  # what waited was dropped by stop()
            item = self._take(WAIT_SECONDS)
            if item is _NOTHING:
                # A stopped producer hands nothing more over; waiting on would block forever.
                if self.stopped:
                    raise StreamStopped
                if self.on_wait is not None:
                    self.on_wait()
                continue
            if item is _END:
                self._ended = True
                return None
            if isinstance(item, _Failure):
                # The producer thread has ended; a consumer that asks again gets the end.
                self._ended = True
                raise item.error
            return item  # pyright: ignore[reportReturnType]

    def __iter__(self) -> Iterator[T]:
        while (item := self.next_item()) is not None:
            yield item

    async def ready(self) -> None:
        """Waits in the event loop until ``next_item`` answers at once (an item, the end or a
        failure waits, or the stream was stopped), holding no thread meanwhile: the producer
        thread wakes the loop. A slow PACS costs an ASGI server nothing but the task.

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

    async def __aiter__(self) -> AsyncIterator[T]:
        """The items for a consumer in an event loop; see ``ready``."""
        while True:
            await self.ready()
            item = self.next_item()  # at once: something waits
            if item is None:
                return
            yield item

    def _produce(self) -> None:
        """Makes the items, handing each over with ``_put``; runs on the producer thread."""
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self._produce()
            outcome: object = _END
        except StreamStopped:
            return
        except Exception as err:  # handed to the consumer, which reports it
            outcome = _Failure(err)
        try:
            self._put(outcome)
        except StreamStopped:
            pass

    def _put(self, item: object, size: int = 0) -> None:
        """Hands the item over once there is room for it.

        Raises:
            StreamStopped: If the stream was stopped (the item is dropped).
        """
        spooled = _is_spooled(item)
        with self._changed:
            while True:
                if self.stopped:
                    break
                # Something always fits into an empty buffer, so a stream never stalls.
                if not self._waiting or (
                    len(self._waiting) < self.depth
                    and self.waiting_bytes + size <= self.budget_bytes
                    and (not spooled or self.spooled_waiting < SPOOLED_DEPTH)
                ):
                    self._waiting.append((item, size))
                    self.waiting_bytes += size
                    self.spooled_waiting += spooled
                    self._changed.notify_all()
                    self._wake_async_waiters()
                    return
                self._changed.wait(PUT_SECONDS)
        _drop(item)
        raise StreamStopped

    def _take(self, timeout: float) -> object:
        """The next waiting item, or _NOTHING if none came within ``timeout`` seconds."""
        with self._changed:
            if not self._waiting:
                self._changed.wait(timeout)
            if not self._waiting:
                return _NOTHING
            item, size = self._waiting.popleft()
            self.waiting_bytes -= size
            self.spooled_waiting -= _is_spooled(item)
            self._changed.notify_all()
            return item

    def _wake_async_waiters(self) -> None:
        """Wakes the consumers awaiting ``ready``; called with ``_changed`` held."""
        for loop, woken in self._async_waiters:
            try:
                loop.call_soon_threadsafe(_resolve, woken)
            except RuntimeError:  # the loop is closed: nobody waits there any more
                pass


class ReadAhead(ThreadedStream[T]):
    """The items of an iterator, taken from it on a thread of their own ahead of the consumer.

    The iterator runs on that thread only until it ends or the stream is stopped; after
    ``stop(wait=...)`` has seen the thread end, the consumer's thread may go on with it.
    """

    def __init__(
        self,
        items: Iterator[T],
        size_of: Callable[[T], int],
        *,
        depth: int,
        budget_bytes: int,
        name: str = "read-ahead",
    ):
        """Args:
        size_of: The bytes an item holds in memory (``spool.estimated_size`` for an instance).
        """
        super().__init__(depth=depth, budget_bytes=budget_bytes, name=name)
        self.items = items
        self.size_of = size_of

    def _produce(self) -> None:
        for item in self.items:
            if self.stopped:
                _drop(item)
                return
            self._put(item, self.size_of(item))


def _is_spooled(item: object) -> bool:
    return isinstance(item, Dataset) and spool.is_spooled(item)


def _drop(item: object) -> None:
    if isinstance(item, Dataset):
        spool.release(item)  # its disk space now, not when the item is collected


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
