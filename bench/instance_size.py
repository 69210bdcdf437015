"""The instance size benchmark: ``uv run cli bench instance-size``.

Two questions of issue 17, each answered by real transfer jobs run by a real worker
(``manage.py worker --queue dicom``) between the two Orthancs of ``bench transfer``
(``OrthancPair``), on the same throwaway database:

1. **Memory in the instance size.** Orthanc A holds a study of six multi-frame instances of
   about 200 MiB each (512x512, 16 bit, 400 frames; every frame of every instance its own
   pixels). The study is written file by file to disk and posted to A from there, so this
   process never holds an instance. The worker copies it plain to B by C-GET, by C-MOVE (A
   sends to ADIT's receiver, ``manage.py receiver``, which hands every instance to the worker
   through the file channel; A's row does not have "C-MOVE to destinations", so the instances
   pass through the worker) and by WADO-RS (A's DICOMweb plugin), once with the pipeline's
   default byte budget (settings.TRANSFER_PIPELINE_BYTES) and once with a smaller one, both
   given to the worker through its environment. The worker's RSS is sampled with psutil and
   its kernel high-water mark (VmHWM) reset before the job; so are the receiver's. Before the
   fix the worker peaked at 1.2 GB (C-GET) and 2.4 GB (WADO-RS) for this study.
2. **A compressed study.** A holds the same CT series of N slices twice: as JPEG 2000 lossless
   and uncompressed. The worker copies each by C-GET and C-STORE; afterwards every instance on
   B must be in the transfer syntax it has on A with byte-identical pixel data (the PixelData
   of Orthanc's stored files compared by digest). Orthanc's own C-MOVE of each study (B pulls
   from A) is the baseline. The worker's CPU per instance and, with ``profile``, one more J2K
   job by a worker under cProfile show whether anything decoded or encoded pixel data.

Every job gets a fresh worker (and, for C-MOVE, a fresh receiver), warmed up by a plain
5-instance job over the same path, so that its "ready" RSS includes what that path imports
and the next job's memory is not inherited from the one before.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import http.client
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import common
from bench.common import RESULTS_FILE, BenchmarkError, Echo
from bench.transfer import (
    BASE_DIR,
    COLUMNS,
    DESTINATION_AE,
    LOOPBACK,
    ROWS,
    SETTINGS_MODULE,
    SOURCE_AE,
    DatabaseServer,
    OrthancPair,
    Study,
    TransferFailed,
    Worker,
    bench_database,
    engine_versions,
    failure_summary,
    once_more_on_failure,
)

if TYPE_CHECKING:
    pass

MIB = 2**20
LARGE_INSTANCES = 6
DEFAULT_INSTANCE_MIB = 200
SMALL_BUDGET_MIB = 64
# What the bound allows beyond what the pipeline holds by design: allocator slack, pydicom's
# objects, the C-FINDs' answers.
SLACK_MIB = 25
FRAME_BYTES = ROWS * COLUMNS * 2  # 16 bit
PATIENT_ID = "BENCH-LARGE"
COMPRESSED_SEED = 10
UNCOMPRESSED_SEED = 11
WARM_UP_SEED = 12
WARM_UP_INSTANCES = 5
RECEIVER_AE = "BENCHADIT"
RECEIVER_NAME = "ADIT"  # how A names ADIT's receiver among its modalities

# How often the task's status is read and both processes' RSS sampled while a job runs.
SAMPLE_SECONDS = 0.1
READY_TIMEOUT = 60.0
# A 1.2 GB study takes a minute or two on two cores; a job that hangs fails after this.
LARGE_JOB_TIMEOUT = 900.0
UPLOAD_TIMEOUT = 300.0

# The functions that decode or encode pixel data: pydicom's decoders and encoders (and the
# Dataset methods that call them) and the codec packages' entry points, by where they live.
# Matched by name, not by file alone: importing these modules runs other functions of theirs.
CODEC_FUNCTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "/pydicom/pixels/",
        frozenset(
            {
                "decode",
                "_decode_frame",
                "iter_decode",
                "as_array",
                "as_buffer",
                "iter_array",
                "iter_buffer",
                "encode",
                "iter_encode",
                "pixel_array",
                "iter_pixels",
                "decompress",
                "compress",
            }
        ),
    ),
    (
        "/pydicom/dataset.py",
        frozenset({"pixel_array", "decompress", "compress", "convert_pixel_data"}),
    ),
    ("/pydicom/pixel_data_handlers/", frozenset({"get_pixeldata"})),
    (
        "/openjpeg/",
        frozenset(
            {"decode", "decode_pixel_data", "encode_array", "encode_buffer", "encode_pixel_data"}
        ),
    ),
    ("/pylibjpeg/", frozenset({"decode", "decode_pixel_data", "encode_pixel_data"})),
    ("/libjpeg/", frozenset({"decode", "decode_pixel_data"})),
)


class Fetch:
    """How the worker fetches from A."""

    C_GET = "C-GET"
    C_MOVE = "C-MOVE"
    WADO_RS = "WADO-RS"

    ALL = (C_GET, C_MOVE, WADO_RS)


@dataclass
class Run:
    """One job of the worker, or one C-MOVE of Orthanc's.

    Attributes:
        seconds: Queueing the job (or calling Orthanc) until the task read Success (or
            Orthanc answered).
        cpu_worker: User + system CPU seconds of the worker during the job.
        cpu_orthanc: CPU seconds of both Orthancs during the run.
        rss_ready_mb: The worker's RSS just before queueing (after its warm-up job).
        peak_rss_mb: The highest psutil sample of the worker's RSS during the job.
        hwm_mb: The worker's VmHWM, reset before queueing.
        receiver_ready_mb, receiver_peak_mb, receiver_hwm_mb: The same of the receiver.
    """

    seconds: float
    cpu_worker: float | None = None
    cpu_orthanc: float = 0.0
    rss_ready_mb: float | None = None
    peak_rss_mb: float | None = None
    hwm_mb: float | None = None
    receiver_ready_mb: float | None = None
    receiver_peak_mb: float | None = None
    receiver_hwm_mb: float | None = None

    @property
    def worker_growth_mb(self) -> float | None:
        """The worker's highest RSS (sampled or VmHWM) over its ready RSS."""
        return _growth(self.rss_ready_mb, self.peak_rss_mb, self.hwm_mb)

    @property
    def receiver_growth_mb(self) -> float | None:
        return _growth(self.receiver_ready_mb, self.receiver_peak_mb, self.receiver_hwm_mb)


def _growth(ready: float | None, peak: float | None, hwm: float | None) -> float | None:
    highest = [value for value in (peak, hwm) if value is not None]
    if ready is None or not highest:
        return None
    return max(highest) - ready


@dataclass
class MemoryResult:
    """The large study copied once over one path with one budget."""

    path: str
    budget_mib: float
    instance_mib: float
    run: Run

    @property
    def bound_mib(self) -> float:
        """The issue's bound: the byte budget over the worker's baseline (its ready RSS),
        and some allocator slack."""
        return self.budget_mib + SLACK_MIB

    @property
    def within_bound(self) -> bool:
        growth = self.run.worker_growth_mb
        return growth is not None and growth <= self.bound_mib


class Kind:
    ORTHANC = "orthanc"
    ADIT = "adit"


@dataclass(frozen=True)
class Method:
    """One way of copying the compressed or the uncompressed study from A to B."""

    key: str
    label: str
    kind: str
    compressed: bool

    @property
    def by_worker(self) -> bool:
        return self.kind == Kind.ADIT


COMPRESSED_METHODS = [
    Method("orthanc-j2k", "Orthanc C-MOVE (B pulls from A), JPEG 2000", Kind.ORTHANC, True),
    Method("adit-j2k", "ADIT transfer, C-GET + C-STORE, JPEG 2000", Kind.ADIT, True),
    Method("orthanc-plain", "Orthanc C-MOVE (B pulls from A), uncompressed", Kind.ORTHANC, False),
    Method("adit-plain", "ADIT transfer, C-GET + C-STORE, uncompressed", Kind.ADIT, False),
]


class MethodResult(common.MethodResultBase[Method, Run]):
    @property
    def cpu_worker(self) -> float | None:
        return self.median_of("cpu_worker")

    @property
    def peak_rss_mb(self) -> float | None:
        return self.maximum_of("peak_rss_mb")


@dataclass(frozen=True)
class CodecCheck:
    """What the profiled J2K job says about pixel codecs."""

    seconds: float
    stores: int  # calls of the worker's C-STORE per instance: the job was profiled
    codec_calls: list[tuple[str, int]]  # (function, calls) of pixel decoders and encoders


@dataclass
class Report(common.ResultsByKey[MethodResult]):
    """Everything one session measured."""

    large_instances: int
    instance_mib: float
    large_study_mib: float
    compressed_instances: int
    compressed_mib: float
    uncompressed_mib: float
    default_budget_mib: float
    small_budget_mib: float
    upload_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    memory: list[MemoryResult]
    results: list[MethodResult]
    repeat: int
    load_before: float
    load_after: float = 0.0
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    codec_check: CodecCheck | None = None
    j2k_encode_ms: float = 0.0  # median, pydicom/openjpeg, one slice
    j2k_decode_ms: float = 0.0
    store_probes: list[StoreProbe] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0


# -- processes -----------------------------------------------------------------------------------


class ReceiverProcess(Worker):
    """``manage.py receiver`` on the bench database, its output in a log file; started and
    listening when ``start`` returns."""

    def start(self) -> None:
        import psutil

        from adit.core.demo.orthanc import parent_death_signal

        env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "receiver"],
                cwd=BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=parent_death_signal(),
            )
        self._ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + READY_TIMEOUT
        while "listening for C-STORE" not in self.log():
            if self.process.poll() is not None:
                raise BenchmarkError(f"The receiver exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"The receiver did not start:\n{self.log_tail()}")
            time.sleep(0.05)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Sets environment variables (which the worker and the receiver inherit), then restores
    them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- the studies ---------------------------------------------------------------------------------


def write_large_instance(
    path: Path, study_uid: str, series_uid: str, number: int, frames: int
) -> str:
    """Writes one multi-frame CT instance of ``frames`` 512x512 16-bit frames to ``path``,
    frame by frame (never the whole pixel data in memory); returns its SOPInstanceUID.

    Every frame of every instance differs (a gradient offset by instance and frame), so no two
    instances share their bytes and nothing could be deduplicated on the way.
    """
    import numpy as np
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    sop_uid = generate_uid()
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.PatientID = PATIENT_ID
    dataset.PatientName = "Bench^Large"
    dataset.StudyDate = "20240101"
    dataset.Modality = "CT"
    dataset.SeriesNumber = 1
    dataset.InstanceNumber = number
    dataset.Rows, dataset.Columns = ROWS, COLUMNS
    dataset.NumberOfFrames = frames
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    head = BytesIO()
    dataset.save_as(head, enforce_file_format=True)
    gradient = np.add.outer(np.arange(ROWS, dtype=np.uint16), np.arange(COLUMNS, dtype=np.uint16))
    with path.open("wb") as file:
        file.write(head.getvalue())
        # PixelData (7FE0,0010), OW, explicit VR little endian: the last element of the file.
        length = frames * FRAME_BYTES
        file.write((0x7FE0).to_bytes(2, "little") + (0x0010).to_bytes(2, "little"))
        file.write(b"OW\x00\x00" + length.to_bytes(4, "little"))
        for frame in range(frames):
            offset = (number * 4099 + frame * 7) % 65536
            file.write(np.add(gradient, offset, dtype=np.uint16).tobytes())
    return sop_uid


def post_file(url: str, path: Path) -> None:
    """POSTs a DICOM file to Orthanc's ``/instances``, streamed from disk."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=UPLOAD_TIMEOUT, blocksize=MIB
    )
    try:
        with path.open("rb") as body:
            connection.request(
                "POST",
                "/instances",
                body=body,
                headers={
                    "Content-Type": "application/dicom",
                    "Content-Length": str(path.stat().st_size),
                },
            )
            response = connection.getresponse()
            answer = response.read()
    finally:
        connection.close()
    if response.status >= 400:
        raise BenchmarkError(f"Orthanc refused {path.name}: {response.status} {answer[:300]!r}")


def compressed_series(instances: int, seed: int, encode_seconds: list[float]) -> Iterator[Any]:
    """The CT series of ``generate_ct_series`` with every slice JPEG 2000 lossless compressed,
    one slice at a time (pydicom's encoder, openjpeg); each encoding's seconds are appended to
    ``encode_seconds``."""
    from pydicom.uid import JPEG2000Lossless

    from adit.core.demo.synthetic import generate_ct_series

    for dataset in generate_ct_series(instances, rows=ROWS, columns=COLUMNS, seed=seed):
        started = time.perf_counter()
        dataset.compress(JPEG2000Lossless, generate_instance_uid=False)
        encode_seconds.append(time.perf_counter() - started)
        yield dataset


def decode_seconds(url: str, rest: Any, study_uid: str, count: int = 5) -> list[float]:
    """Seconds pydicom takes to decode the pixel data of each of ``count`` instances of a study
    on an Orthanc: what passing an instance on would cost if it were decoded."""
    from pydicom import dcmread

    query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
    seconds = []
    for orthanc_id in rest("POST", "/tools/find", query)[:count]:
        with urllib.request.urlopen(f"{url}/instances/{orthanc_id}/file", timeout=60) as file:
            dataset = dcmread(BytesIO(file.read()))
        started = time.perf_counter()
        _ = dataset.pixel_array
        seconds.append(time.perf_counter() - started)
    return seconds


PixelDigests = dict[str, tuple[str, str]]  # SOPInstanceUID -> (transfer syntax, sha256)


def pixel_digests(url: str, rest: Any, study_uid: str) -> PixelDigests:
    """The transfer syntax and a digest of the PixelData value, as stored, of every instance
    of a study on an Orthanc (its REST base ``url``, its ``rest`` call)."""
    from pydicom import dcmread

    query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
    digests: PixelDigests = {}
    for instance in rest("POST", "/tools/find", query):
        with urllib.request.urlopen(f"{url}/instances/{instance['ID']}/file", timeout=60) as file:
            dataset = dcmread(BytesIO(file.read()))
        uid = str(dataset.SOPInstanceUID)
        if uid in digests:
            raise BenchmarkError(f"{uid} is stored twice.")
        pixels = dataset["PixelData"].value  # the value as stored; nothing decodes it here
        digests[uid] = (
            str(dataset.file_meta.TransferSyntaxUID),
            hashlib.sha256(pixels).hexdigest(),
        )
    return digests


# -- one C-STORE of one large instance ---------------------------------------------------------


# How the probe holds the instance before it C-STOREs it, and what that stands for.
STORE_MODES = {
    "received": "held as received (its bytes kept; an instance up to an eighth of the budget)",
    "spooled": "left on disk (a larger instance, as it arrived into a file)",
    "file": "read from a file (an upload)",
}


@dataclass(frozen=True)
class StoreProbe:
    """What one C-STORE of one large instance cost the sending process, in MiB.

    Attributes:
        mode: A key of STORE_MODES.
        held_mb: RSS the instance added before the C-STORE (read, spooled or opened).
        peak_mb: VmHWM during the C-STORE over the RSS just before it.
        kept_mb: RSS after the C-STORE over the RSS just before it, the dataset still alive.
    """

    mode: str
    held_mb: float
    peak_mb: float
    kept_mb: float


def _store_probe(argv: list[str]) -> int:
    """``python -m bench.instance_size --store-probe MODE FILE PORT AE``: holds the DICOM file
    FILE as MODE says, C-STOREs it to AE at 127.0.0.1:PORT with ADIT's DicomOperator and
    prints a StoreProbe as JSON. Django's settings come from the environment; no database."""
    import json

    import django

    mode, path, port, ae_title = argv[0], Path(argv[1]), int(argv[2]), argv[3]
    django.setup()
    from adit.core.dicom import spool
    from adit.core.dicom.files import read_instance, read_instance_file
    from adit.core.dicom.operator import DicomOperator
    from adit.core.models import DicomServer

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        raise BenchmarkError(f"No {key} in /proc/self/status.")

    # An unsaved row: no association slot, no database.
    server = DicomServer(
        name="probe", ae_title=ae_title, host=LOOPBACK, port=port, store_scp_support=True
    )
    operator = DicomOperator(server)
    start = status("VmRSS:")
    if mode == "received":
        dataset = read_instance(path.read_bytes())
    elif mode == "spooled":
        # As the pipeline spools: into an anonymous temporary file the dataset keeps open.
        file = tempfile.TemporaryFile(prefix="adit-spool-")
        with path.open("rb") as source:
            shutil.copyfileobj(source, file, MIB)
        dataset = spool.spooled_file(file)
    elif mode == "file":
        dataset = read_instance_file(path)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    common.reset_high_water_mark()
    before = status("VmRSS:")
    stored = operator.store([dataset]).stored
    if stored != 1:
        raise BenchmarkError(f"The probe's C-STORE stored {stored} instances.")
    probe = StoreProbe(
        mode=mode,
        held_mb=before - start,
        peak_mb=status("VmHWM:") - before,
        kept_mb=status("VmRSS:") - before,
    )
    print(json.dumps(probe.__dict__))
    return 0


def probe_store(mode: str, path: Path, port: int, ae_title: str) -> StoreProbe:
    """Runs ``_store_probe`` in a fresh process, so that its memory is the C-STORE's alone."""
    import json

    result = subprocess.run(
        [sys.executable, "-m", "bench.instance_size", "--store-probe", mode, str(path)]
        + [str(port), ae_title],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE},
        capture_output=True,
        text=True,
        timeout=UPLOAD_TIMEOUT,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"The C-STORE probe ({mode}) failed:\n{result.stderr[-3000:]}")
    return StoreProbe(**json.loads(result.stdout.strip().splitlines()[-1]))


# -- the benchmark -------------------------------------------------------------------------------


class InstanceSizeBenchmark(OrthancPair):
    """The two Orthancs, the studies on A, the rows, and the jobs of one session."""

    def __init__(
        self,
        *,
        large_instances: int,
        instance_mib: float,
        compressed_instances: int,
        echo: Echo,
    ):
        super().__init__("adit-bench-instance-size-", echo)
        self.large_instances = large_instances
        self.frames = max(1, round(instance_mib * MIB / FRAME_BYTES))
        self.instance_mib = self.frames * FRAME_BYTES / MIB
        self.compressed_instances = compressed_instances
        self.receiver_port = 0
        self.channel_port = 0
        self.large: Study | None = None
        self.compressed: Study | None = None
        self.uncompressed: Study | None = None
        self.warm_up: Study | None = None
        self.digests: dict[str, PixelDigests] = {}
        self.encode_seconds: list[float] = []
        self.decode_seconds: list[float] = []
        self.upload_seconds = 0.0
        self._jobs = 0

    # -- set-up ---------------------------------------------------------------------------

    def start_servers(self) -> None:
        """A (with DICOMweb, knowing B and ADIT's receiver) and B, on free ports."""
        from adit.core.demo.orthanc import free_ports

        self.receiver_port, self.channel_port = free_ports(2)
        self._stack.enter_context(
            environment(
                RECEIVER_AE_TITLE=RECEIVER_AE,
                RECEIVER_HOST=LOOPBACK,
                RECEIVER_PORT=str(self.receiver_port),
                FILE_CHANNEL_HOST=LOOPBACK,
                FILE_CHANNEL_PORT=str(self.channel_port),
            )
        )
        super().start_servers(
            source_modalities={RECEIVER_NAME: (RECEIVER_AE, LOOPBACK, self.receiver_port)},
            source_dicomweb=True,
        )

    def start(self) -> None:
        from pydicom.uid import generate_uid

        self.start_servers()
        assert self.source is not None
        started = time.perf_counter()
        self.echo(
            f"Writing and uploading {self.large_instances} instances of {self.frames} frames "
            f"({self.instance_mib:.0f} MiB each) to Orthanc {SOURCE_AE} ..."
        )
        study_uid, series_uid = generate_uid(), generate_uid()
        sop_uids = []
        for number in range(1, self.large_instances + 1):
            file = self.workdir / f"large-{number}.dcm"
            sop_uids.append(write_large_instance(file, study_uid, series_uid, number, self.frames))
            post_file(self.source.url, file)
            if number > 1:
                file.unlink()  # the first stays for the C-STORE probes
        self.large = self._study_on_source(PATIENT_ID, study_uid, frozenset(sop_uids))
        self.echo(
            f"Uploaded {self.large.mib:.0f} MiB in {time.perf_counter() - started:.0f} s. "
            f"Compressing and uploading {self.compressed_instances} CT slices as JPEG 2000 "
            "lossless, and as many uncompressed ..."
        )
        self.compressed = self._upload_compressed(COMPRESSED_SEED)
        self.uncompressed = self.upload(self.compressed_instances, UNCOMPRESSED_SEED)
        self.warm_up = self.upload(WARM_UP_INSTANCES, WARM_UP_SEED)
        for study in (self.compressed, self.uncompressed):
            self.digests[study.study_uid] = pixel_digests(
                self.source.url, self.source.rest, study.study_uid
            )
        self.upload_seconds = time.perf_counter() - started
        self.echo(f"Uploaded everything in {self.upload_seconds:.0f} s.")
        self.create_rows()

    def _upload_compressed(self, seed: int) -> Study:
        from adit.core.demo.synthetic import describe_ct_series

        assert self.source is not None
        summary = describe_ct_series(self.compressed_instances, seed=seed)
        self.source.upload(compressed_series(self.compressed_instances, seed, self.encode_seconds))
        self.decode_seconds = decode_seconds(
            self.source.url, self.source.rest, summary.study_instance_uid
        )
        sop_uids = frozenset(uid for series in summary.series for uid in series.sop_instance_uids)
        return self._study_on_source(summary.patient_id, summary.study_instance_uid, sop_uids)

    def _study_on_source(self, patient_id: str, study_uid: str, sop_uids: frozenset[str]) -> Study:
        assert self.source is not None
        held = self.source.study_instance_uids(study_uid)
        if set(held) != sop_uids:
            raise BenchmarkError(f"{SOURCE_AE} holds {len(held)} of the {len(sop_uids)} instances.")
        query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        (orthanc_id,) = self.source.rest("POST", "/tools/find", query)
        size = int(self.source.rest("GET", f"/studies/{orthanc_id}/statistics")["DiskSize"])
        return Study(len(sop_uids), patient_id, study_uid, sop_uids, size / MIB)

    def set_path(self, path: str) -> None:
        """Makes A's row offer exactly one way to fetch: ``path``. Never "C-MOVE to
        destinations", so that every instance passes through the worker."""
        from adit.core.models import DicomServer

        assert self.source is not None and self.source_row is not None
        DicomServer.objects.filter(pk=self.source_row.pk).update(
            study_root_find_support=path != Fetch.WADO_RS,
            study_root_get_support=path == Fetch.C_GET,
            study_root_move_support=path == Fetch.C_MOVE,
            moves_to_destinations=False,
            dicomweb_root_url=self.source.dicomweb_root if path == Fetch.WADO_RS else "",
            dicomweb_qido_support=path == Fetch.WADO_RS,
            dicomweb_wado_support=path == Fetch.WADO_RS,
        )

    # -- runs -----------------------------------------------------------------------------

    def store_probes(self) -> list[StoreProbe]:
        """One C-STORE of the first large instance to B per way of holding it, each by a
        fresh process."""
        assert self.destination is not None
        file = self.workdir / "large-1.dcm"
        probes = []
        for mode in STORE_MODES:
            self.clear_destination()
            probes.append(probe_store(mode, file, self.destination.dicom_port, DESTINATION_AE))
            if self.destination.count_instances() != 1:
                raise BenchmarkError(f"The C-STORE probe ({mode}) left no instance on B.")
        self.clear_destination()
        file.unlink()
        return probes

    def memory_run(self, path: str, budget_mib: float) -> MemoryResult:
        """The large study copied once over ``path`` by a fresh worker with ``budget_mib``."""
        assert self.large is not None
        self.set_path(path)
        run = self._by_worker(
            self.large,
            f"{path.lower()}-{budget_mib:g}",
            budget_mib=budget_mib,
            receiver=path == Fetch.C_MOVE,
            timeout=LARGE_JOB_TIMEOUT,
        )
        self.verify_copies([self.large])
        return MemoryResult(path, budget_mib, self.instance_mib, run)

    def compressed_run(self, method: Method, profile_to: Path | None = None) -> Run:
        """One copy of the compressed or the uncompressed study; B checked afterwards."""
        study = self.compressed if method.compressed else self.uncompressed
        assert study is not None
        self.clear_destination()
        if method.by_worker:
            self.set_path(Fetch.C_GET)
            run = self._by_worker(
                study, method.key, profile_to=profile_to, timeout=120.0 + study.instances
            )
        else:
            moved = self.orthanc_move([study.study_uid])
            run = Run(seconds=moved.seconds, cpu_orthanc=moved.cpu_orthanc)
        self.verify_copies([study])
        self._verify_pixels(study)
        return run

    def _verify_pixels(self, study: Study) -> None:
        """B holds every instance in A's transfer syntax with A's pixel data, byte for byte."""
        assert self.destination is not None
        held = pixel_digests(self.destination.url, self.destination.rest, study.study_uid)
        expected = self.digests[study.study_uid]
        changed = [uid for uid, digest in expected.items() if held.get(uid) != digest]
        if changed or held.keys() != expected.keys():
            uid = changed[0] if changed else "?"
            message = (
                f"{len(changed)} of {study.instances} instances on {DESTINATION_AE} differ from "
                f"A's in transfer syntax or pixel data (first: {uid}, A {expected.get(uid)}, "
                f"B {held.get(uid)})"
            )
            raise TransferFailed(message, message)

    def _by_worker(
        self,
        study: Study,
        key: str,
        *,
        budget_mib: float | None = None,
        receiver: bool = False,
        profile_to: Path | None = None,
        timeout: float,
    ) -> Run:
        """Starts a worker (and a receiver), warms it up over the same path, clears B and
        copies ``study`` by one job, sampling both processes."""
        assert self.warm_up is not None
        self._jobs += 1
        settings_env = {}
        if budget_mib is not None:
            settings_env["TRANSFER_PIPELINE_BYTES"] = str(round(budget_mib * MIB))
        worker = Worker(self.workdir / f"worker-{self._jobs}-{key}.log", profile_to)
        receiving = ReceiverProcess(self.workdir / f"receiver-{self._jobs}-{key}.log")
        try:
            with environment(**settings_env):
                if receiver:
                    receiving.start()
                worker.start()
            worker.wait_until_ready()
            self._run_job(worker, receiving if receiver else None, self.warm_up, 120.0)
            self.clear_destination()
            return self._run_job(worker, receiving if receiver else None, study, timeout)
        finally:
            worker.stop()
            receiving.stop()

    def _run_job(
        self, worker: Worker, receiver: ReceiverProcess | None, study: Study, timeout: float
    ) -> Run:
        from adit.core.jobs.statuses import TaskStatus
        from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask

        job = SelectiveTransferJob.objects.create(owner=self.owner)
        task = SelectiveTransferTask.objects.create(
            job=job,
            source=self.source_row,
            destination=self.destination_row,
            patient_id=study.patient_id,
            study_uid=study.study_uid,
        )
        hwm_reset = worker.reset_high_water_mark()
        receiver_hwm_reset = receiver is not None and receiver.reset_high_water_mark()
        ready = worker.rss_mb()
        peak = ready
        receiver_ready = receiver.rss_mb() if receiver else None
        receiver_peak = receiver_ready
        cpu_worker = worker.cpu_seconds()
        cpu_orthanc = self.orthanc_cpu()
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        job.start_processing(verified=True)
        tasks = SelectiveTransferTask.objects.filter(pk=task.pk)
        while True:
            peak = max(peak, worker.rss_mb())
            if receiver is not None:
                receiver_peak = max(receiver_peak or 0.0, receiver.rss_mb())
            status, done = tasks.values_list("status", "progress_done").get()
            if status == TaskStatus.SUCCESS:
                break
            if status in (TaskStatus.FAILURE, TaskStatus.WARNING, TaskStatus.CANCELED):
                task.refresh_from_db()
                outcome = f"the task ended {TaskStatus(status).label}: {task.message}"
                raise TransferFailed(
                    f"{outcome}\nTask log:\n{task.log}\nWorker log:\n{worker.log_tail()}",
                    failure_summary(outcome, worker.log()),
                )
            worker.check_alive()
            if time.monotonic() > deadline:
                outcome = (
                    f"the task was still {TaskStatus(status).label} after "
                    f"{time.perf_counter() - started:.0f} s ({done} instances done)"
                )
                raise TransferFailed(
                    f"{outcome}:\n{worker.log_tail()}", failure_summary(outcome, worker.log())
                )
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - started
        return Run(
            seconds=seconds,
            cpu_worker=worker.cpu_seconds() - cpu_worker,
            cpu_orthanc=self.orthanc_cpu() - cpu_orthanc,
            rss_ready_mb=ready,
            peak_rss_mb=max(peak, worker.rss_mb()),
            hwm_mb=worker.high_water_mark_mb() if hwm_reset else None,
            receiver_ready_mb=receiver_ready,
            receiver_peak_mb=receiver_peak,
            receiver_hwm_mb=(
                receiver.high_water_mark_mb() if receiver and receiver_hwm_reset else None
            ),
        )

    def codec_check(self) -> CodecCheck:
        """One more J2K job by a worker under cProfile: which pixel codecs did it call?"""
        assert self.compressed is not None
        output = self.workdir / "profile-j2k.prof"
        run = self.compressed_run(COMPRESSED_METHODS[1], profile_to=output)
        if not output.exists():
            raise BenchmarkError(f"The profiled worker wrote no statistics to {output}.")
        stats = pstats.Stats(str(output))
        raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # pyright: ignore[reportAttributeAccessIssue]
        codec_calls: dict[str, int] = {}
        stores = 0
        for (filename, line, function), (_cc, calls, *_rest) in raw.items():
            if function == "send" and filename.endswith("adit/core/dicom/dimse.py"):
                stores += calls
            if any(part in filename and function in names for part, names in CODEC_FUNCTIONS):
                name = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({function})"
                codec_calls[name] = codec_calls.get(name, 0) + calls
        return CodecCheck(
            seconds=run.seconds,
            stores=stores,
            codec_calls=sorted(codec_calls.items(), key=lambda item: -item[1]),
        )


# -- reporting -----------------------------------------------------------------------------------


def memory_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            "path",
            "budget MiB",
            "s",
            "MiB/s",
            "worker RSS MiB: ready",
            "peak",
            "VmHWM",
            "growth",
            "bound",
            "verdict",
            "receiver MiB: ready",
            "peak",
            "VmHWM",
            "growth",
        ]
    ]
    for memory in report.memory:
        run = memory.run
        rows.append(
            [
                memory.path,
                f"{memory.budget_mib:.0f}",
                f"{run.seconds:.1f}",
                f"{report.large_study_mib / run.seconds:.0f}",
                common.number(run.rss_ready_mb),
                common.number(run.peak_rss_mb),
                common.number(run.hwm_mb),
                common.number(run.worker_growth_mb, sign=True),
                f"{memory.bound_mib:.0f}",
                _verdict(memory.within_bound),
                common.number(run.receiver_ready_mb),
                common.number(run.receiver_peak_mb),
                common.number(run.receiver_hwm_mb),
                common.number(run.receiver_growth_mb, sign=True),
            ]
        )
    return rows


def probe_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            f"C-STORE of one {report.instance_mib:.0f} MiB instance to B, instance",
            "held MiB",
            "peak during the C-STORE",
            "kept after it",
        ]
    ]
    for probe in report.store_probes:
        rows.append(
            [
                STORE_MODES[probe.mode],
                f"{probe.held_mb:+.0f}",
                f"{probe.peak_mb:+.0f}",
                f"{probe.kept_mb:+.0f}",
            ]
        )
    return rows


def compressed_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            "method",
            "N",
            "MiB",
            "s (median)",
            "min-max s",
            "inst/s",
            "vs Orthanc",
            "worker CPU ms/inst",
            "Orthancs CPU s",
            "worker peak MiB",
        ]
    ]
    for result in report.results:
        seconds = [run.seconds for run in result.runs]
        mib = report.compressed_mib if result.method.compressed else report.uncompressed_mib
        rows.append(
            [
                result.method.label,
                str(result.instances),
                f"{mib:.0f}",
                f"{result.seconds:.2f}",
                f"{min(seconds):.2f}-{max(seconds):.2f}",
                f"{result.rate:.0f}",
                f"{orthanc_ratio(report, result):.2f}x",
                common.number(
                    None
                    if result.cpu_worker is None
                    else 1000 * result.cpu_worker / result.instances,
                    2,
                ),
                f"{result.cpu_orthanc:.2f}",
                common.number(result.peak_rss_mb),
            ]
        )
    return rows


def cpu_ms_per_instance(result: MethodResult) -> float | None:
    cpu = result.cpu_worker
    return None if cpu is None else 1000 * cpu / result.instances


def orthanc_ratio(report: Report, result: MethodResult) -> float:
    """Throughput relative to Orthanc's own C-MOVE of the same study."""
    baseline = report.need("orthanc-j2k" if result.method.compressed else "orthanc-plain")
    return result.rate / baseline.rate


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def memory_lines(report: Report) -> list[str]:
    lines = []
    for memory in report.memory:
        growth = memory.run.worker_growth_mb
        if growth is None:
            lines.append(f"MISS {memory.path}, budget {memory.budget_mib:.0f} MiB: not measured")
            continue
        lines.append(
            f"{_verdict(memory.within_bound)} {memory.path}, budget {memory.budget_mib:.0f} MiB: "
            f"worker peak {growth:+.0f} MiB over its ready RSS; bound {memory.bound_mib:.0f} = "
            f"budget {memory.budget_mib:.0f} + {SLACK_MIB} slack; the study is "
            f"{report.large_study_mib:.0f} MiB, an instance {memory.instance_mib:.0f} MiB"
        )
    moves = [m for m in report.memory if m.path == Fetch.C_MOVE]
    for memory in moves:
        growth = memory.run.receiver_growth_mb
        # The receiver reads the routing UIDs from the file pynetdicom received the instance
        # into and hands the file on by sendfile: it never holds the instance.
        bound = SLACK_MIB
        lines.append(
            f"{_verdict(growth is not None and growth <= bound)} receiver, C-MOVE, budget "
            f"{memory.budget_mib:.0f} MiB: peak {common.number(growth, sign=True)} MiB over its "
            f"ready RSS; bound {bound:.0f} MiB (it holds no instance in memory)"
        )
    return lines


def compressed_lines(report: Report) -> list[str]:
    j2k, plain = report.need("adit-j2k"), report.need("adit-plain")
    lines = [
        f"PASS every ADIT and Orthanc run left on B all {report.compressed_instances} instances "
        "of the study once, each in A's transfer syntax (JPEG 2000 lossless or explicit VR "
        "little endian) with pixel data byte-identical to A's stored file (checked after "
        "every run; a run that did not would be listed as failed)",
        f"ADIT's J2K transfer runs at {orthanc_ratio(report, j2k):.2f}x Orthanc's own C-MOVE "
        f"of the J2K study ({j2k.rate:.0f} vs {report.need('orthanc-j2k').rate:.0f} "
        f"instances/s); uncompressed {orthanc_ratio(report, plain):.2f}x",
    ]
    if j2k.cpu_worker is not None and plain.cpu_worker is not None:
        per_j2k = 1000 * j2k.cpu_worker / j2k.instances
        per_plain = 1000 * plain.cpu_worker / plain.instances
        lines.append(
            f"{_verdict(per_j2k <= per_plain)} the worker's CPU per J2K instance is not higher "
            f"than per uncompressed one: {per_j2k:.2f} vs {per_plain:.2f} ms (pydicom decodes "
            f"one of these slices in {report.j2k_decode_ms:.0f} ms, encodes one in "
            f"{report.j2k_encode_ms:.0f} ms here, median)"
        )
    check = report.codec_check
    if check is not None:
        found = ", ".join(f"{name} x{calls}" for name, calls in check.codec_calls[:5])
        lines.append(
            f"{_verdict(not check.codec_calls and check.stores >= j2k.instances)} no pixel "
            "decoder or encoder ran in the worker under cProfile during a J2K job and its "
            f"warm-up ({check.stores} C-STOREs profiled; calls of pydicom's decoders and "
            "encoders, Dataset.pixel_array/decompress/compress, openjpeg, pylibjpeg, libjpeg: "
            f"{found or 'none'})"
        )
    return lines


def reading(report: Report) -> str:
    parts = []
    instance = report.instance_mib
    by_budget: dict[float, list[float]] = {}
    for memory in report.memory:
        if memory.run.worker_growth_mb is not None:
            by_budget.setdefault(memory.budget_mib, []).append(memory.run.worker_growth_mb)
    if by_budget:
        described = "; ".join(
            f"budget {budget:.0f} MiB: {min(growths):+.0f} to {max(growths):+.0f} MiB"
            for budget, growths in by_budget.items()
        )
        parts.append(
            f"Copying the {report.large_study_mib:.0f} MiB study of {report.large_instances} "
            f"instances of {instance:.0f} MiB, the worker's peak rose over its ready RSS by "
            f"{described} across C-GET, C-MOVE and WADO-RS; before the pipeline streamed (the "
            "issue's figures) it rose by about the study (1.2 GB, C-GET) and twice the study "
            "(2.4 GB, WADO-RS)."
        )
    probes = {probe.mode: probe for probe in report.store_probes}
    if probes:
        described = "; ".join(
            f"{STORE_MODES[mode].split(' (')[0]}: {probe.peak_mb:+.0f} MiB at its peak, "
            f"{probe.kept_mb:+.0f} MiB kept afterwards"
            for mode, probe in probes.items()
        )
        parts.append(
            f"What one C-STORE of one {instance:.0f} MiB instance costs the sending process "
            f"beyond holding it (a fresh process each, ADIT's DicomOperator.store to B): "
            f"{described}."
        )
    receivers = [m.run.receiver_growth_mb for m in report.memory if m.path == Fetch.C_MOVE]
    known = [growth for growth in receivers if growth is not None]
    if known:
        parts.append(f"The receiver's peak rose by {min(known):+.0f} to {max(known):+.0f} MiB.")
    j2k, plain = report.need("adit-j2k"), report.need("adit-plain")
    if j2k.cpu_worker is not None and plain.cpu_worker is not None:
        parts.append(
            f"The {report.compressed_instances}-instance JPEG 2000 study "
            f"({report.compressed_mib:.0f} MiB against {report.uncompressed_mib:.0f} MiB "
            f"uncompressed) went through the worker at {j2k.rate:.0f} instances/s "
            f"({1000 * j2k.cpu_worker / j2k.instances:.1f} ms worker CPU per instance) against "
            f"{plain.rate:.0f} uncompressed ({1000 * plain.cpu_worker / plain.instances:.1f} "
            "ms): the instances are passed on as received, so a compressed one costs the worker "
            "what its bytes cost, not a decode."
        )
    parts.append(
        f"The session took {report.duration_seconds / 60:.0f} minutes, of which "
        f"{report.upload_seconds:.0f} s writing and uploading the studies. "
        + common.load_sentence(report)
        + "."
    )
    return " ".join(parts)


def format_markdown_section(report: Report) -> str:
    lines = [
        *common.section_head(
            report,
            f"instance-size: {report.large_instances} x {report.instance_mib:.0f} MiB, "
            f"and {report.compressed_instances} JPEG 2000 instances, repeat={report.repeat}",
        ),
        f"- Large study: {report.large_instances} multi-frame CT instances of "
        f"{report.instance_mib:.0f} MiB ({ROWS}x{COLUMNS}, 16 bit, every frame its own "
        f"pixels), {report.large_study_mib:.0f} MiB in Orthanc A ({SOURCE_AE}). Copied plain "
        f"to Orthanc B ({DESTINATION_AE}) by one SelectiveTransferJob run by a fresh "
        "`manage.py worker --queue dicom` (warmed up by a plain 5-instance job over the same "
        "path) with TRANSFER_PIPELINE_BYTES set in its environment; A's row offers only the "
        "path measured (C-MOVE: to ADIT's receiver, a fresh `manage.py receiver`, never "
        '"C-MOVE to destinations"). Once per path and budget. Worker RSS: *ready* before '
        f"queueing, *peak* the highest psutil sample (every {SAMPLE_SECONDS} s), *VmHWM* "
        "the kernel's high-water mark reset before queueing, *growth* the higher of both over "
        "ready. B held every SOPInstanceUID of the study once after every run.",
        "- C-STORE probe: the first large instance C-STOREd to B by ADIT's "
        "`DicomOperator.store` in a fresh process (`python -m bench.instance_size "
        "--store-probe`) per way of holding it; *held* is the RSS holding it added, *peak* the "
        "VmHWM (reset just before) over the RSS before the C-STORE, *kept* the RSS after it, "
        "the dataset still referenced.",
        f"- Compressed study: {report.compressed_instances} CT slices ({ROWS}x{COLUMNS}, 16 "
        "bit) compressed JPEG 2000 lossless by pydicom/openjpeg "
        f"({report.compressed_mib:.0f} MiB), and an uncompressed study of the same slices "
        f"({report.uncompressed_mib:.0f} MiB). ADIT: C-GET from A, C-STORE to B, by a fresh "
        "worker per run; Orthanc: B's `POST /modalities/SOURCE/move`. Each method ran "
        f"{report.repeat} times, round by round; medians. After every run B's stored files "
        "were compared with A's: same SOPInstanceUIDs, transfer syntax and PixelData bytes.",
        "",
        common.markdown_table(memory_rows(report)),
        "",
        common.markdown_table(probe_rows(report)),
        "",
        common.markdown_table(compressed_rows(report)),
        "",
        "Checks:",
        "",
        *[f"- {line}" for line in memory_lines(report) + compressed_lines(report)],
        "",
        "Reading: " + reading(report),
        "",
    ]
    if report.failures:
        lines += [
            "Failed runs (not counted, each run again):",
            "",
            *[f"- {failure}" for failure in report.failures],
            "",
        ]
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------


def run_instance_size_benchmark(
    database_server: DatabaseServer,
    *,
    instances: int = 200,
    instance_mib: float = DEFAULT_INSTANCE_MIB,
    large_instances: int = LARGE_INSTANCES,
    small_budget_mib: float = SMALL_BUDGET_MIB,
    repeat: int = 3,
    profile: bool = True,
    record: bool = True,
    results_file: Path = RESULTS_FILE,
    echo: Echo = print,
) -> Report:
    """Runs the instance size benchmark in a throwaway database; returns its report.

    Args:
        database_server: The PostgreSQL server to create the throwaway database on.
        instances: Slices of the compressed (and of the uncompressed) study.
        instance_mib: MiB of each multi-frame instance of the large study.
        large_instances: Instances of the large study.
        small_budget_mib: The second, smaller TRANSFER_PIPELINE_BYTES (MiB).
        repeat: Runs per method of the compressed study (the large study: once per path and
            budget).
        profile: Whether to run one J2K job by a worker under cProfile, to look for codecs.
        record: Whether to append the results to ``results_file``.
        results_file: The Markdown file the results are appended to.
        echo: Where progress and results are printed.
    """
    if min(instances, large_instances, repeat) < 1 or instance_mib <= 0 or small_budget_mib <= 0:
        raise ValueError("instances, sizes, budgets and repeat must be positive.")
    session_started = time.perf_counter()
    load_before = common.load_average()
    with common.terminate_as_interrupt():
        echo("Creating the throwaway database adit_bench ...")
        with (
            bench_database(database_server),
            common.quiet_logger("procrastinate"),
            InstanceSizeBenchmark(
                large_instances=large_instances,
                instance_mib=instance_mib,
                compressed_instances=instances,
                echo=echo,
            ) as bench,
        ):
            from django.conf import settings

            default_budget_mib = settings.TRANSFER_PIPELINE_BYTES / MIB
            bench.start()
            assert bench.source is not None and bench.large is not None
            assert bench.compressed is not None and bench.uncompressed is not None
            echo("C-STORE of one large instance, by a fresh process per way of holding it ...")
            store_probes = bench.store_probes()
            for probe in store_probes:
                echo(
                    f"{probe.mode:<9} held {probe.held_mb:+5.0f} MiB, C-STORE peak "
                    f"{probe.peak_mb:+5.0f} MiB, kept {probe.kept_mb:+5.0f} MiB"
                )
            failures: list[str] = []
            memory: list[MemoryResult] = []
            for budget in (default_budget_mib, small_budget_mib):
                for path in Fetch.ALL:
                    result = once_more_on_failure(
                        f"{path}, budget {budget:.0f} MiB",
                        functools.partial(bench.memory_run, path, budget),
                        failures,
                        echo,
                    )
                    memory.append(result)
                    run = result.run
                    echo(
                        f"{path:<8} budget {budget:4.0f} MiB: {run.seconds:6.1f} s, worker "
                        f"ready {run.rss_ready_mb:.0f} MiB, growth "
                        f"{common.number(run.worker_growth_mb, sign=True)} MiB (bound "
                        f"{result.bound_mib:.0f})"
                        + (
                            f", receiver growth {common.number(run.receiver_growth_mb, sign=True)}"
                            " MiB"
                            if path == Fetch.C_MOVE
                            else ""
                        )
                    )
            results = [
                MethodResult(method, bench.compressed.instances) for method in COMPRESSED_METHODS
            ]
            for round_number in range(1, repeat + 1):
                for result in results:
                    run = once_more_on_failure(
                        result.method.label,
                        functools.partial(bench.compressed_run, result.method),
                        failures,
                        echo,
                    )
                    result.runs.append(run)
                    echo(
                        f"[{round_number}/{repeat}] {result.method.label:<50} {run.seconds:6.2f} s"
                        f" {result.instances / run.seconds:5.0f} inst/s"
                    )
            report = Report(
                large_instances=large_instances,
                instance_mib=bench.instance_mib,
                large_study_mib=bench.large.mib,
                compressed_instances=instances,
                compressed_mib=bench.compressed.mib,
                uncompressed_mib=bench.uncompressed.mib,
                default_budget_mib=default_budget_mib,
                small_budget_mib=small_budget_mib,
                upload_seconds=bench.upload_seconds,
                machine=common.machine(),
                versions={**common.versions(bench.source), **engine_versions()},
                memory=memory,
                results=results,
                repeat=repeat,
                load_before=load_before,
                failures=failures,
                store_probes=store_probes,
                j2k_encode_ms=1000 * statistics.median(bench.encode_seconds),
                j2k_decode_ms=1000 * statistics.median(bench.decode_seconds),
            )
            if profile:
                echo("Profiling the worker during one more JPEG 2000 transfer ...")
                report.codec_check = once_more_on_failure(
                    "profiled JPEG 2000 transfer", bench.codec_check, failures, echo
                )
            report.load_after = common.load_average()
            report.duration_seconds = time.perf_counter() - session_started
    echo("Dropped the throwaway database adit_bench.")
    common.print_results(
        echo,
        "\n\n".join(
            common.console_table(rows)
            for rows in (memory_rows(report), probe_rows(report), compressed_rows(report))
        ),
        [
            *memory_lines(report),
            *compressed_lines(report),
            *[f"Failed run (not counted): {failure}" for failure in report.failures],
        ],
        reading(report),
        section=(lambda: format_markdown_section(report)) if record else None,
        results_file=results_file,
    )
    return report


if __name__ == "__main__":
    if sys.argv[1:2] != ["--store-probe"] or len(sys.argv) != 6:
        print("usage: python -m bench.instance_size --store-probe MODE FILE PORT AE")
        sys.exit(2)
    sys.exit(_store_probe(sys.argv[2:]))
