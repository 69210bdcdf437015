"""What one instance costs in each stage of a transfer, and the ceiling those costs set.

The transfer benchmark times whole jobs; this module takes the pipeline apart with the same
code the worker runs (``DicomOperator``, ``files``, ``InstanceModifier``, ``Pseudonymizer``,
``ServerDestination``), stage by stage, in the benchmark's own process, against the same two
Orthancs:

* receive: the operator's C-GET of a study from A (its C-FIND listing of the series, the
  association, pynetdicom reading the PDUs and answering each C-STORE), less the decoding;
* decode: reading a received file lazily as the C-GET handler does, and the few values
  routing needs (UIDs, modality, SOP class);
* modify: ``InstanceModifier`` as the pipeline calls it: nothing to do plain, the
  pseudonymizer (the elements it touches are decoded there) when pseudonymizing;
* encode: plain, the check that the instance is unchanged (its received bytes are sent);
  pseudonymized, pynetdicom's encoding of the changed data set;
* send: the operator's C-STORE of unchanged instances to B, less the check above;
* verify: ``ServerDestination.verify`` of the whole study, per instance of the timed study.

CPU is ``time.process_time`` of this process (every thread: pynetdicom's reactor included),
divided by the instances. The sum is what the worker needs at least per instance; what the
worker burns beyond it in a timed run is its hand-over between threads and the job engine.

With these costs the machine allows at most ``cores / (ADIT + Orthancs)`` instances per
second, and one worker process at most ``1 / ADIT`` (pynetdicom and pydicom hold Python's GIL),
whichever is lower: the ceiling a transfer through the worker could reach on this machine.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING

from pydicom import Dataset

if TYPE_CHECKING:
    from adit.core.models import DicomServer

STAGES = ("receive", "decode", "modify", "encode", "send", "verify")
# Values the pipeline reads of every instance on its way (routing, series, check).
ROUTING_KEYWORDS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "Modality",
)
SECRET = "stage-costs-bench-secret"


@dataclass
class StageCosts:
    """CPU milliseconds per instance of each stage, for the plain and the pseudonymized path.

    Attributes:
        instances: How many instances each stage was measured over.
        plain: Stage -> ms per instance, plain transfer.
        pseudonymized: Stage -> ms per instance, pseudonymized transfer.
    """

    instances: int
    plain: dict[str, float]
    pseudonymized: dict[str, float]

    def of(self, pseudonymized: bool) -> dict[str, float]:
        return self.pseudonymized if pseudonymized else self.plain


@dataclass(frozen=True)
class Ceiling:
    """The most instances per second these stage costs allow on this machine.

    Attributes:
        adit_ms: CPU ms per instance of ADIT's stages (their sum).
        orthanc_ms: CPU ms per instance of both Orthancs, from the timed runs.
        cores: CPUs of the machine.
    """

    adit_ms: float
    orthanc_ms: float
    cores: int

    @property
    def one_process(self) -> float:
        """Instances/s one worker process allows: its stages on one core (the GIL)."""
        return 1000.0 / self.adit_ms

    @property
    def machine(self) -> float:
        """Instances/s all cores allow for ADIT's and the Orthancs' work together."""
        return 1000.0 * self.cores / (self.adit_ms + self.orthanc_ms)

    @property
    def rate(self) -> float:
        return min(self.one_process, self.machine)

    @property
    def bound_by(self) -> str:
        if self.one_process <= self.machine:
            return "one worker process (one core: the GIL)"
        return f"{self.cores} cores shared with the Orthancs"


def ceiling(costs: dict[str, float], orthanc_ms: float, cores: int | None = None) -> Ceiling:
    return Ceiling(
        adit_ms=sum(costs.values()), orthanc_ms=orthanc_ms, cores=cores or os.cpu_count() or 1
    )


def _cpu_ms_per(instances: int, work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return 1000.0 * (time.process_time() - started) / instances


def measure_stage_costs(
    source: DicomServer,
    destination: DicomServer,
    patient_id: str,
    study_uid: str,
    *,
    timed_instances: int,
    pseudonym: str,
    clear_destination: Callable[[], None],
) -> StageCosts:
    """Runs each stage over the study ``study_uid`` on ``source`` (a C-GET server row) and
    ``destination`` (a C-STORE and C-FIND row); returns the CPU ms per instance of each.

    Args:
        timed_instances: The size of the study the timed runs transfer: the verification
            costs one query per study, spread over that many instances.
        pseudonym: The pseudonym the pseudonymized runs use.
        clear_destination: Empties B; called before and after the C-STORE.
    """
    from pydicom.filewriter import write_file_meta_info

    from adit.core.dicom.files import read_instance, unchanged_data_set
    from adit.core.dicom.operator import DicomOperator
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.destinations import ServerDestination
    from adit.core.transfer.modify import InstanceModifier, series_key
    from adit.core.transfer.pseudonymizer import Pseudonymizer

    received: list[Dataset] = []
    fetch_ms = _cpu_ms_per(
        1, lambda: DicomOperator(source).fetch_study(patient_id, study_uid, received.append)
    )
    count = len(received)
    assert count, "the C-GET delivered nothing"
    fetch_ms /= count
    # Each as the file it arrived in (pynetdicom receives into files; see dimse.py).
    encoded: list[bytes] = []
    for dataset in received:
        data_set = unchanged_data_set(dataset)
        assert data_set is not None, "a received instance kept no bytes"
        file = BytesIO()
        file.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(file, dataset.file_meta)  # pyright: ignore[reportArgumentType]
        file.write(data_set)
        encoded.append(file.getvalue())
    received.clear()

    def read_all() -> list[Dataset]:
        datasets = [read_instance(data) for data in encoded]
        for dataset in datasets:
            for keyword in ROUTING_KEYWORDS:
                dataset.get(keyword)
        return datasets

    datasets: list[Dataset] = []
    decode_ms = _cpu_ms_per(count, lambda: datasets.extend(read_all()))

    plain_modifier = InstanceModifier()
    modify_plain_ms = _cpu_ms_per(count, lambda: [plain_modifier(ds) for ds in datasets])
    encode_plain_ms = _cpu_ms_per(count, lambda: [unchanged_data_set(ds) for ds in datasets])

    clear_destination()
    destination_step = ServerDestination(destination, TaskLog())
    store_ms = _cpu_ms_per(count, lambda: destination_step.consume(iter(datasets)))
    expected = dict(Counter(series_key(dataset) for dataset in datasets))
    verify_ms = _cpu_ms_per(
        timed_instances, lambda: destination_step.verify(TaskLog(), expected, "the source")
    )
    clear_destination()

    fresh = read_all()
    pseudonymizing = InstanceModifier(Pseudonymizer(pseudonym, SECRET))
    modify_pseudonymized_ms = _cpu_ms_per(count, lambda: [pseudonymizing(ds) for ds in fresh])
    encode_pseudonymized_ms = _cpu_ms_per(count, lambda: [_encode(ds) for ds in fresh])

    receive_ms = max(0.0, fetch_ms - decode_ms)
    send_ms = max(0.0, store_ms - encode_plain_ms)
    common = {"receive": receive_ms, "decode": decode_ms, "send": send_ms, "verify": verify_ms}
    return StageCosts(
        instances=count,
        plain={**common, "modify": modify_plain_ms, "encode": encode_plain_ms},
        pseudonymized={
            **common,
            "modify": modify_pseudonymized_ms,
            "encode": encode_pseudonymized_ms,
        },
    )


def _encode(dataset: Dataset) -> bytes | None:
    """The data set's bytes as pynetdicom's C-STORE encodes them (explicit VR little endian)."""
    from pynetdicom.dsutils import encode

    return encode(dataset, False, True)
