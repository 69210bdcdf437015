"""A fetch running on its own thread, handing instances over through a buffer bounded in bytes
(``read_ahead.ThreadedStream``).

DicomOperator's fetches call back synchronously for every instance. On a thread of their own
they answer the PACS while the consumer still works on the previous instance (storing it,
zipping it for a client), yet run ahead by at most a byte budget (settings.
TRANSFER_PIPELINE_BYTES) and a number of instances, so memory stays bounded whatever the
study and its instances weigh.

The budget covers what waits and what is worked on: instances wait in memory up to half of
it, and one larger than an eighth of it waits on disk instead (see ``spool``), as it arrives,
and is stored from there in pieces; at most ``read_ahead.SPOOLED_DEPTH`` of those wait, so a
study of huge instances does not fill the disk either. So the consumer holds at most an eighth
of the budget (twice that while it stores the instance: the C-STORE copies it) beside what
waits. Transfers and the study download both read studies this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

from django.conf import settings
from pydicom import Dataset

from adit.core.dicom import spool
from adit.core.dicom.operator import DicomOperator, SeriesCounts
from adit.core.dicom.read_ahead import ThreadedStream
from adit.core.dicom.selection import StudySelection

# How many instances may wait at most, however small: a study of tiny instances needs no more
# to keep the PACS busy.
DEFAULT_DEPTH = 16


class InstanceStream(ThreadedStream[Dataset]):
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
                every read_ahead.WAIT_SECONDS; an exception it raises reaches the consumer.
        """
        budget: int = settings.TRANSFER_PIPELINE_BYTES if budget_bytes is None else budget_bytes
        super().__init__(depth=depth, budget_bytes=budget // 2, on_wait=on_wait, name="fetch")
        self.spool_above = budget // 8
        self.operator = operator
        self.selection = selection
        self.expected = expected
        self.delivered = 0

    @property
    def study_uid(self) -> str:
        return self.selection.study_uid

    def next_instance(self) -> Dataset | None:
        """The next instance, or None after the last one; see ``next_item``."""
        return self.next_item()

    def _produce(self) -> None:
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
