"""A fetch running on its own thread, handing instances over through a bounded queue.

DicomOperator's fetches call back synchronously for every instance. On a thread of their own
they answer the PACS while the consumer still works on the previous instance (storing it,
zipping it for a client), yet run ahead by at most ``depth`` instances, so memory stays
bounded whatever the study size. Transfers and the study download both read studies this way.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pydicom import Dataset

from adit.core.dicom.operator import DicomOperator, SeriesCounts

# How long the consumer waits for an instance before it looks again whether to go on.
WAIT_SECONDS = 0.5
# How long the fetch thread waits for room in the queue before it looks whether to stop.
PUT_SECONDS = 0.2


class StreamStopped(Exception):
    """The stream was stopped: the fetch ends at its next instance, the consumer gets no more."""


@dataclass(frozen=True)
class _Failure:
    error: Exception


_END = object()


class InstanceStream:
    """The instances of a study (or of some of its series), fetched on a thread of their own.

    Example::

        stream = InstanceStream(operator, patient_id, study_uid, depth=16)
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
        patient_id: str,
        study_uid: str,
        series_uids: Sequence[str] | None = None,
        *,
        depth: int,
        on_wait: Callable[[], None] | None = None,
        expected: SeriesCounts | None = None,
    ):
        """Prepares the fetch; nothing is sent before ``start``.

        Args:
            series_uids: Fetch only these series, one after the other; None: the whole study.
            depth: How many instances may wait in the queue.
            expected: How many instances each series has, as the server said (asked by the
                operator if None); a fetch that delivers fewer fails.
            on_wait: Called while the consumer waits for the next instance (a slow PACS),
                every WAIT_SECONDS; an exception it raises reaches the consumer.
        """
        self.operator = operator
        self.patient_id = patient_id
        self.study_uid = study_uid
        self.series_uids = series_uids
        self.on_wait = on_wait
        self.expected = expected
        self.delivered = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fetch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, wait: float = 0) -> None:
        """Ends the fetch at its next instance; safe from any thread and more than once.

        Args:
            wait: Seconds to wait for the fetch thread to end (0: do not wait).
        """
        self._stopping.set()
        if wait and self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=wait)

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
            try:
                item = self._queue.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                # A stopped fetch hands nothing more over; waiting on would block forever.
                if self.stopped:
                    raise StreamStopped from None
                if self.on_wait is not None:
                    self.on_wait()
                continue
            if item is _END:
                return None
            if isinstance(item, _Failure):
                raise item.error
            assert isinstance(item, Dataset)
            return item

    def __iter__(self) -> Iterator[Dataset]:
        while (dataset := self.next_instance()) is not None:
            yield dataset

    def _run(self) -> None:
        try:
            operator = self.operator
            expected = self.expected
            if self.series_uids is None:
                operator.fetch_study(self.patient_id, self.study_uid, self._deliver, expected)
            else:
                for uid in self.series_uids:
                    operator.fetch_series(
                        self.patient_id,
                        self.study_uid,
                        uid,
                        self._deliver,
                        {uid: expected[uid]} if expected and uid in expected else None,
                    )
            outcome: object = _END
        except StreamStopped:
            return
        except Exception as err:  # handed to the consumer, which reports it
            outcome = _Failure(err)
        try:
            self._put(outcome)
        except StreamStopped:
            pass

    def _deliver(self, dataset: Dataset) -> None:
        self._put(dataset)
        self.delivered += 1

    def _put(self, item: object) -> None:
        while True:
            if self.stopped:
                raise StreamStopped
            try:
                self._queue.put(item, timeout=PUT_SECONDS)
                return
            except queue.Full:
                continue
