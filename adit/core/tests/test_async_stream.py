"""Many slow streams in one event loop: awaiting the PACS holds none of the loop's executor
threads, which every other request of an ASGI process (a search, say) needs.

The slow PACS is a pynetdicom C-GET SCP of the test that pauses between its C-STORE
sub-operations; a real Orthanc cannot be made to answer slowly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydicom.uid import generate_uid

from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.selection import StudySelection
from adit.core.models import DicomServer
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

STREAMS = 8
INSTANCES = 4
PAUSE = 0.4  # seconds between two instances of a stream
STUDY_UID = generate_uid()
SERIES_UID = generate_uid()


def _answer_slowly(event):
    yield INSTANCES
    for number in range(1, INSTANCES + 1):
        time.sleep(PAUSE)
        yield 0xFF00, fake_ct_instance(STUDY_UID, SERIES_UID, number, patient_id="SLOW1")


@pytest.fixture
def slow_pacs() -> Iterator[DicomServer]:
    with FakePacs("SLOWPACS", get=_answer_slowly, max_associations=STREAMS * 2) as pacs:
        yield pacs.server("Slow PACS", save=False, study_root_get_support=True)


def test_slow_streams_in_one_loop_leave_the_executor_to_other_work(slow_pacs):
    selection = StudySelection("SLOW1", STUDY_UID, (SERIES_UID,))

    async def consume(stream: InstanceStream) -> int:
        stream.start()
        try:
            return len([dataset async for dataset in stream])
        finally:
            stream.stop()

    async def scenario() -> tuple[list[int], int, int]:
        executor = _CountingExecutor(max_workers=4)
        asyncio.get_running_loop().set_default_executor(executor)
        streams = [
            InstanceStream(DicomOperator(slow_pacs), selection, expected={SERIES_UID: INSTANCES})
            for _ in range(STREAMS)
        ]
        reading = asyncio.gather(*(consume(stream) for stream in streams))
        # Other requests of the process (a search) meanwhile run on the executor.
        answered = 0
        while not reading.done():
            assert await asyncio.to_thread(lambda: 42) == 42
            answered += 1
            await asyncio.sleep(0.05)
        return await reading, answered, executor.submitted - answered

    counts, answered_meanwhile, used_by_streams = asyncio.run(scenario())

    assert counts == [INSTANCES] * STREAMS
    assert used_by_streams == 0  # waiting for the PACS took no executor thread at all
    # The streams took at least INSTANCES * PAUSE seconds; the other work went on all along.
    assert answered_meanwhile >= 10


class _CountingExecutor(ThreadPoolExecutor):
    def __init__(self, max_workers: int):
        super().__init__(max_workers=max_workers)
        self.submitted = 0

    def submit(self, *args, **kwargs):  # pyright: ignore[reportIncompatibleMethodOverride]
        self.submitted += 1
        return super().submit(*args, **kwargs)
