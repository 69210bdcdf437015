"""InstanceStream on its own: what it asks the operator for, and how it hands instances over.

Most tests give it a stand-in for DicomOperator that delivers made-up instances, so that order,
end, failures, stopping and the memory bound can be checked without a PACS; one test per
retrieve level runs against a real Orthanc.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from adit.core.dicom import spool
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.read_ahead import StreamStopped
from adit.core.dicom.selection import StudySelection
from adit.core.tests.test_dicom_operator import dicomweb_server, dimse_server

STUDY = "1.2.826.0.1.1"
SERIES = [f"1.2.826.0.2.{number}" for number in range(1, 4)]


def _instance(series_uid: str, number: int, pixel_bytes: int = 0) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = CTImageStorage
    dataset.StudyInstanceUID = STUDY
    dataset.SeriesInstanceUID = series_uid
    dataset.SOPInstanceUID = f"{series_uid}.{number}"
    dataset.InstanceNumber = number
    if pixel_bytes:
        dataset.BitsAllocated = 16
        dataset.PixelData = bytes(pixel_bytes)
    return dataset


class FakeOperator:
    """Delivers a few instances per series and records what it was asked to fetch."""

    def __init__(self, per_series: int = 2, pixel_bytes: int = 0):
        self.per_series = per_series
        self.pixel_bytes = pixel_bytes
        self.calls: list[tuple] = []
        self.failure: Exception | None = None
        self.fail_after = 0
        # Set before each delivery, so that a test can hold the fetch at an instance.
        self.before_delivery: Callable[[int], None] = lambda delivered: None
        self.delivered = 0

    def _deliver_series(self, series_uid: str, callback: Callable[[Dataset], None]) -> int:
        for number in range(1, self.per_series + 1):
            if self.failure is not None and self.delivered == self.fail_after:
                raise self.failure
            self.before_delivery(self.delivered)
            callback(_instance(series_uid, number, self.pixel_bytes))
            self.delivered += 1
        return self.per_series

    def fetch_study(self, patient_id, study_uid, callback, expected=None, **options) -> int:
        self.calls.append(("study", patient_id, study_uid))
        return sum(self._deliver_series(uid, callback) for uid in SERIES)

    def fetch_series(
        self, patient_id, study_uid, series_uid, callback, expected=None, **options
    ) -> int:
        self.calls.append(("series", patient_id, study_uid, series_uid, expected))
        return self._deliver_series(series_uid, callback)

    def fetch_image(self, patient_id, study_uid, series_uid, sop_uid, callback, **options) -> int:
        self.calls.append(("image", patient_id, study_uid, series_uid, sop_uid))
        dataset = _instance(series_uid, 1, self.pixel_bytes)
        dataset.SOPInstanceUID = sop_uid
        callback(dataset)
        return 1


def _stream(fake: FakeOperator, selection: StudySelection, **options) -> InstanceStream:
    options.setdefault("depth", 4)
    return InstanceStream(cast(DicomOperator, fake), selection, **options)


def _read_all(stream: InstanceStream) -> list[str]:
    stream.start()
    try:
        return [str(dataset.SOPInstanceUID) for dataset in stream]
    finally:
        stream.stop(wait=5)


# -- what is fetched ------------------------------------------------------------------------


def test_a_whole_study_is_one_study_fetch():
    fake = FakeOperator()
    uids = _read_all(_stream(fake, StudySelection("P1", STUDY)))
    assert fake.calls == [("study", "P1", STUDY)]
    assert uids == [f"{series}.{number}" for series in SERIES for number in (1, 2)]


def test_series_are_fetched_one_after_the_other_in_the_order_given():
    fake = FakeOperator()
    chosen = (SERIES[2], SERIES[0])
    expected = {SERIES[2]: 2, SERIES[0]: 2}
    uids = _read_all(_stream(fake, StudySelection("P1", STUDY, chosen), expected=expected))
    assert fake.calls == [
        ("series", "P1", STUDY, SERIES[2], {SERIES[2]: 2}),
        ("series", "P1", STUDY, SERIES[0], {SERIES[0]: 2}),
    ]
    assert uids == [f"{SERIES[2]}.1", f"{SERIES[2]}.2", f"{SERIES[0]}.1", f"{SERIES[0]}.2"]


def test_one_instance_is_an_image_fetch():
    fake = FakeOperator()
    sop_uid = generate_uid()
    uids = _read_all(_stream(fake, StudySelection("P1", STUDY, (SERIES[1],), sop_uid)))
    assert fake.calls == [("image", "P1", STUDY, SERIES[1], sop_uid)]
    assert uids == [sop_uid]


# -- how instances are handed over ----------------------------------------------------------


def test_instances_come_in_the_order_delivered_and_then_the_end():
    fake = FakeOperator(per_series=5)
    stream = _stream(fake, StudySelection("P1", STUDY), depth=2)
    stream.start()
    try:
        uids = []
        while (dataset := stream.next_instance()) is not None:
            uids.append(str(dataset.SOPInstanceUID))
        assert stream.next_instance() is None  # asked again, the end stays the end
    finally:
        stream.stop(wait=5)
    assert uids == [f"{series}.{number}" for series in SERIES for number in range(1, 6)]
    assert stream.delivered == 15


def test_the_fetch_runs_ahead_by_at_most_the_depth():
    fake = FakeOperator(per_series=10)
    stream = _stream(fake, StudySelection("P1", STUDY), depth=3)
    stream.start()
    try:
        first = stream.next_instance()
        assert first is not None
        # The consumer holds one; three wait; the fetch thread holds the next one, blocked.
        _wait_until(lambda: fake.delivered >= 4)
        threading.Event().wait(0.3)
        assert fake.delivered <= 5
    finally:
        stream.stop(wait=5)
    assert not stream.thread.is_alive()


def test_a_failure_of_the_fetch_reaches_the_consumer_after_what_arrived_before():
    fake = FakeOperator(per_series=3)
    fake.failure, fake.fail_after = OSError("PACS gone"), 4
    stream = _stream(fake, StudySelection("P1", STUDY))
    stream.start()
    got: list[str] = []
    with pytest.raises(OSError, match="PACS gone"):
        for dataset in stream:
            got.append(str(dataset.SOPInstanceUID))
    stream.stop(wait=5)
    assert len(got) == 4


def test_after_its_failure_the_stream_is_at_its_end_for_every_consumer():
    """A download writes the failure into its archive and asks once more: it must get the
    end, not wait for a fetch thread that is gone."""
    fake = FakeOperator(per_series=3)
    fake.failure, fake.fail_after = OSError("PACS gone"), 1
    stream = _stream(fake, StudySelection("P1", STUDY))
    stream.start()
    assert stream.next_instance() is not None
    with pytest.raises(OSError, match="PACS gone"):
        stream.next_instance()
    stream.thread.join(timeout=5)
    asyncio.run(asyncio.wait_for(stream.ready(), timeout=5))
    assert stream.next_instance() is None


def test_a_consumer_that_stops_ends_the_fetch_and_gets_no_more():
    fake = FakeOperator(per_series=50)
    stream = _stream(fake, StudySelection("P1", STUDY), depth=2)
    stream.start()
    assert stream.next_instance() is not None
    stream.stop(wait=5)
    assert not stream.thread.is_alive()
    delivered = fake.delivered
    assert delivered < 150
    with pytest.raises(StreamStopped):
        while stream.next_instance() is not None:  # what waited may still come, then not more
            pass
    assert fake.delivered == delivered


def test_on_wait_is_called_while_the_pacs_is_slow_and_its_exception_reaches_the_consumer():
    fake = FakeOperator()
    release = threading.Event()

    def hold_the_second(delivered: int) -> None:
        if delivered == 1:
            release.wait(10)

    fake.before_delivery = hold_the_second
    waits: list[int] = []

    def on_wait() -> None:
        waits.append(1)
        if len(waits) == 2:
            raise RuntimeError("task canceled")

    stream = _stream(fake, StudySelection("P1", STUDY), on_wait=on_wait)
    stream.start()
    try:
        assert stream.next_instance() is not None
        with pytest.raises(RuntimeError, match="task canceled"):
            stream.next_instance()
    finally:
        stream.stop()
        release.set()
        stream.thread.join(timeout=5)
    assert len(waits) == 2
    assert not stream.thread.is_alive()


def test_what_waits_in_memory_stays_within_half_the_byte_budget():
    mib = 1024 * 1024
    fake = FakeOperator(per_series=10, pixel_bytes=mib)
    stream = _stream(fake, StudySelection("P1", STUDY), depth=100, budget_bytes=9 * mib)
    stream.start()
    try:
        first = stream.next_instance()
        assert first is not None
        _wait_until(lambda: fake.delivered >= 5)
        threading.Event().wait(0.3)
        # Four of 1 MiB fit into 4.5 MiB; the fifth waits in the fetch thread for room.
        assert stream.waiting_bytes <= 9 * mib // 2
        assert fake.delivered <= 1 + 4 + 1
        assert not any(getattr(item, "_spooled", False) for item, _ in stream._waiting)
        got = 1 + sum(1 for _ in stream)
    finally:
        stream.stop(wait=5)
    assert got == 30


def test_an_instance_larger_than_an_eighth_of_the_budget_waits_on_disk_and_reads_back_whole():
    fake = FakeOperator(per_series=2, pixel_bytes=300_000)
    stream = _stream(fake, StudySelection("P1", STUDY, (SERIES[0],)), budget_bytes=2_000_000)
    stream.start()
    try:
        datasets = list(stream)
    finally:
        stream.stop(wait=5)
    assert [str(item.SOPInstanceUID) for item in datasets] == [f"{SERIES[0]}.1", f"{SERIES[0]}.2"]
    for dataset in datasets:
        assert spool.is_spooled(dataset)
        assert spool.estimated_size(dataset) < 10_000  # the pixel data stays on disk...
        assert dataset.PixelData == bytes(300_000)  # ...until it is read
        assert dataset.StudyInstanceUID == STUDY


def test_at_most_two_instances_wait_on_disk_and_stopping_frees_them():
    fake = FakeOperator(per_series=5, pixel_bytes=300_000)
    stream = _stream(fake, StudySelection("P1", STUDY), budget_bytes=100_000)
    stream.start()
    _wait_until(lambda: len(stream._waiting) == 2)
    threading.Event().wait(0.3)
    # Huge instances must not fill the disk either: the third waits in the fetch thread.
    assert len(stream._waiting) == 2
    assert fake.delivered <= 3
    waiting = [item for item, _ in stream._waiting]
    stream.stop(wait=5)
    assert all(isinstance(item, Dataset) and item.buffer.closed for item in waiting)
    with pytest.raises(StreamStopped):
        stream.next_instance()


def test_async_iteration_gives_the_same_instances_and_the_same_failure():
    fake = FakeOperator(per_series=3)
    fake.failure, fake.fail_after = OSError("PACS gone"), 7

    async def read() -> list[str]:
        got: list[str] = []
        stream = _stream(fake, StudySelection("P1", STUDY), depth=2)
        stream.start()
        try:
            with pytest.raises(OSError, match="PACS gone"):
                async for dataset in stream:
                    got.append(str(dataset.SOPInstanceUID))
        finally:
            stream.stop(wait=5)
        return got

    got = asyncio.run(read())
    assert got == [f"{series}.{number}" for series in SERIES for number in (1, 2, 3)][:7]


def test_a_stream_stopped_while_a_loop_awaits_it_wakes_the_loop():
    fake = FakeOperator()
    release = threading.Event()

    def hold(delivered: int) -> None:
        release.wait(10)

    fake.before_delivery = hold
    stream = _stream(fake, StudySelection("P1", STUDY))

    async def stop_soon() -> None:
        await asyncio.sleep(0.1)
        stream.stop()

    async def read() -> None:
        stream.start()
        stopper = asyncio.ensure_future(stop_soon())
        with pytest.raises(StreamStopped):
            async for _ in stream:
                pass
        await stopper

    asyncio.run(read())
    release.set()
    stream.thread.join(timeout=5)
    assert not stream.thread.is_alive()


def _wait_until(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


# -- against a real PACS --------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["C-GET", "WADO-RS"])
def test_each_level_of_selection_against_orthanc(protocol, orthanc1, orthanc1_studies):
    server = dimse_server(orthanc1) if protocol == "C-GET" else dicomweb_server(orthanc1)
    operator = DicomOperator(server)
    study = orthanc1_studies[0]
    series = study.series[0]
    sop_uid = series.sop_instance_uids[-1]
    selections = {
        "study": StudySelection(study.patient_id, study.study_instance_uid),
        "series": StudySelection(
            study.patient_id, study.study_instance_uid, (series.series_instance_uid,)
        ),
        "instance": StudySelection(
            study.patient_id, study.study_instance_uid, (series.series_instance_uid,), sop_uid
        ),
    }
    got = {
        level: sorted(_read_all(InstanceStream(operator, selection, depth=4)))
        for level, selection in selections.items()
    }
    assert got["study"] == sorted(uid for item in study.series for uid in item.sop_instance_uids)
    assert got["series"] == sorted(series.sop_instance_uids)
    assert got["instance"] == [sop_uid]
