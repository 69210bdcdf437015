"""The fetch benchmark of the DICOM layer: ``uv run cli bench fetch``.

One Orthanc holds a synthetic CT study of N slices (512x512, 16 bit, about 0.5 MB each). The
study is fetched

* with dcmtk, the native baselines: ``getscu`` (C-GET) and ``movescu`` (C-MOVE into its own
  storage SCP), both writing every instance to disk;
* with ``DicomOperator.fetch_study`` by C-GET, by C-MOVE through ADIT's real receiver (started
  in this process) and by WADO-RS, each once with a callback that writes every instance to disk
  (what a transfer minimally does) and once with a callback that does nothing (network and
  decoding only);
* optionally (``what_if``), in variants that show what a change would gain: a bare pynetdicom
  C-GET without the operator, writing the received bytes as they are (in the handler or on a
  writer thread); the operator with a shorter polling interval in pynetdicom's reactor; the
  operator's C-MOVE without its C-FIND listing. They patch libraries in this process only,
  never ADIT's code.

Every method runs ``repeat`` times, interleaved round by round; the median counts. Each run also
records the CPU seconds of this process (all threads, the in-process receiver included), of the
dcmtk tool and of Orthanc, and, for the methods run in this process, the peak RSS during the run
(``getrusage`` after resetting the kernel's high-water mark) and the RSS every few instances, to
show whether memory grows with the study. One operator C-GET and one C-MOVE under cProfile, in
every thread, and a few per-instance micro-measurements say where the time goes.

Nothing here needs database tables: the DicomServer rows stay unsaved.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import queue
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import common
from bench.common import RESULTS_FILE, BenchmarkError, Echo, ProfileSummary

if TYPE_CHECKING:
    from pydicom import Dataset

    from adit.core.demo.orthanc import OrthancServer
    from adit.core.dicom.operator import DicomOperator
    from adit.core.models import DicomServer

MOVESCU = "/usr/bin/movescu"
# dcmtk keeps Nagle's algorithm on unless this is set; every C-STORE then stalls for ~40 ms.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
LOOPBACK = "127.0.0.1"

PACS_AE = "BENCHPACS"
RECEIVER_AE = "ADITBENCH"  # the C-MOVE destination served by ADIT's receiver
DCMTK_SCP_AE = "DCMTKSCP"  # the C-MOVE destination served by movescu itself
DCMTK_CALLING_AE = "DCMTKBENCH"

ROWS = COLUMNS = 512
SEED = 0
TARGET_RATIO = 0.5  # the target: the operator at >= 0.5x of dcmtk's throughput
RSS_SAMPLES = 20  # RSS readings per run in this process
MIN_SLOPE_SPAN = 200  # instances the RSS slope must span to be reported
UNIT_COST_INSTANCES = 20
PROFILE_TOP = 10
# pynetdicom's reactors sleep this long whenever nothing is waiting (DULServiceProvider).
PYNETDICOM_POLL_SECONDS = 0.001
FAST_POLL_SECONDS = 0.0001  # the what-if value


@dataclass(frozen=True)
class Method:
    """One way of fetching the study.

    Attributes:
        key: Short name, also the folder prefix of the run.
        label: Name in the table.
        baseline: Key of the dcmtk method this one is compared with; None for dcmtk itself.
        writes: Whether every instance is written to disk.
        what_if: A variant that patches a library in this process to show what a change gains.
    """

    key: str
    label: str
    baseline: str | None
    writes: bool
    what_if: bool = False

    @property
    def in_process(self) -> bool:
        """Whether the fetch runs in this process (so its memory is this process's)."""
        return self.baseline is not None


METHODS = [
    Method("getscu", "dcmtk getscu C-GET", None, True),
    Method("movescu", "dcmtk movescu C-MOVE", None, True),
    Method("get-write", "operator C-GET, write", "getscu", True),
    Method("get-noop", "operator C-GET, no-op", "getscu", False),
    Method("move-write", "operator C-MOVE, write", "movescu", True),
    Method("move-noop", "operator C-MOVE, no-op", "movescu", False),
    Method("wado-write", "operator WADO-RS, write", "getscu", True),
    Method("wado-noop", "operator WADO-RS, no-op", "getscu", False),
]
WHAT_IF_METHODS = [
    Method("bare-get-noop", "what-if: bare pynetdicom C-GET, no-op", "getscu", False, True),
    Method("bare-get-bytes", "what-if: bare pynetdicom C-GET, bytes", "getscu", True, True),
    Method("bare-get-queued", "what-if: bare C-GET, bytes, writer thread", "getscu", True, True),
    Method(
        "bare-get-queued-fastpoll",
        "what-if: bare C-GET, bytes, thread, 0.1 ms poll",
        "getscu",
        True,
        True,
    ),
    Method("get-noop-fastpoll", "what-if: op C-GET, no-op, 0.1 ms poll", "getscu", False, True),
    Method("get-write-fastpoll", "what-if: op C-GET, write, 0.1 ms poll", "getscu", True, True),
    Method("move-noop-listed", "what-if: op C-MOVE, no-op, no listing", "movescu", False, True),
]
METHODS_BY_KEY = {method.key: method for method in METHODS + WHAT_IF_METHODS}


@dataclass
class Run:
    """One timed fetch."""

    seconds: float
    cpu_self: float
    cpu_children: float
    cpu_orthanc: float
    rss_before_mb: float | None = None
    peak_rss_mb: float | None = None
    rss_samples: list[tuple[int, float]] = field(default_factory=list)


class MethodResult(common.MethodResultBase[Method, Run]):
    """All runs of one method and the figures derived from them."""

    @property
    def cpu_self(self) -> float:
        return statistics.median(run.cpu_self for run in self.runs)

    @property
    def cpu_children(self) -> float:
        return statistics.median(run.cpu_children for run in self.runs)

    @property
    def core_share(self) -> float:
        """CPU of this process during the run as a share of one core."""
        return self.cpu_self / self.seconds

    @property
    def peak_rss_mb(self) -> float | None:
        peaks = [run.peak_rss_mb for run in self.runs if run.peak_rss_mb is not None]
        return max(peaks) if peaks else None

    @property
    def rss_growth_mb(self) -> float | None:
        """Median over runs of how far the RSS rose above its level at the start of the run."""
        growths = [
            run.peak_rss_mb - run.rss_before_mb
            for run in self.runs
            if run.peak_rss_mb is not None and run.rss_before_mb is not None
        ]
        return statistics.median(growths) if growths else None

    @property
    def rss_slope_mb_per_1000(self) -> float | None:
        """RSS change per 1000 instances in the second half of the last run (MiB)."""
        samples = self.runs[-1].rss_samples if self.runs else []
        tail = samples[len(samples) // 2 :]
        # Over a few dozen instances the RSS noise of a MiB or two would dominate the slope.
        if len(tail) < 2 or tail[-1][0] - tail[0][0] < MIN_SLOPE_SPAN:
            return None
        (first_count, first_rss), (last_count, last_rss) = tail[0], tail[-1]
        return (last_rss - first_rss) / (last_count - first_count) * 1000


@dataclass(frozen=True)
class UnitCosts:
    """Per-instance costs measured in this process, milliseconds (median)."""

    instance_bytes: int
    decode_ms: float
    decode_routing_ms: float
    dcmwrite_ms: float
    raw_write_ms: float


@dataclass
class Report(common.ResultsByKey[MethodResult]):
    instances: int
    repeat: int
    study_mib: float
    upload_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    results: list[MethodResult]
    listing_seconds: float
    load_before: float
    load_after: float = 0.0
    unit_costs: UnitCosts | None = None
    profiles: list[ProfileSummary] = field(default_factory=list)
    peak_rss_reset: bool = True
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now().astimezone())

    def ratio(self, result: MethodResult) -> float | None:
        """Throughput relative to the matching dcmtk baseline (1.0 = as fast as dcmtk)."""
        if result.method.baseline is None:
            return None
        return self.need(result.method.baseline).seconds / result.seconds


# -- process measurements ----------------------------------------------------------------------


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def _pynetdicom_poll_interval(seconds: float) -> Iterator[None]:
    """Makes pynetdicom's DUL reactors created meanwhile sleep ``seconds`` when idle.

    pynetdicom has no setting for it: its reactor checks the socket, and when nothing is there
    it sleeps ``_run_loop_delay`` (1 ms) before looking again.
    """
    from pynetdicom.dul import DULServiceProvider

    original = DULServiceProvider.__init__

    def patched(provider: Any, *args: Any, **kwargs: Any) -> None:
        original(provider, *args, **kwargs)
        provider._run_loop_delay = seconds

    setattr(DULServiceProvider, "__init__", patched)  # noqa: B010 - a method, not an attribute
    try:
        yield
    finally:
        setattr(DULServiceProvider, "__init__", original)  # noqa: B010


# -- the benchmark -----------------------------------------------------------------------------


class _Sink:
    """The operator's callback: writes each instance (or not) and samples the RSS meanwhile."""

    def __init__(self, folder: Path | None, sample_every: int):
        self.folder = folder
        self.sample_every = max(1, sample_every)
        self.count = 0
        self.samples: list[tuple[int, float]] = []

    def __call__(self, dataset: Dataset) -> None:
        if self.folder is not None:
            from pydicom import dcmwrite

            path = self.folder / f"{dataset.SOPInstanceUID}.dcm"
            dcmwrite(path, dataset, enforce_file_format=True)
        self.count_one()

    def count_one(self) -> None:
        self.count += 1
        if self.count % self.sample_every == 0:
            self.samples.append((self.count, _rss_mb()))


class FetchBenchmark(common.Session):
    """The Orthanc, the receiver and the temporary folders of one benchmark session.

    Use as a context manager; leaving it stops every server and removes every folder, also on
    Ctrl-C.
    """

    def __init__(self, instances: int, echo: Echo):
        super().__init__("adit-bench-fetch-")
        self.instances = instances
        self.echo = echo
        self.orthanc: OrthancServer | None = None
        self.study_uid = ""
        self.patient_id = ""
        self.study_bytes = 0
        self.upload_seconds = 0.0
        self.listing_seconds = 0.0
        self.peak_rss_reset = True
        self._expected: dict[str, str] = {}
        self._movescu_port = 0

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the receiver and Orthanc, points the settings at them and uploads the study."""
        from django.conf import settings

        from adit.core.demo.orthanc import OrthancServer, free_ports
        from adit.core.demo.synthetic import describe_ct_series, generate_ct_series
        from adit.core.dicom.receiver import Receiver
        from adit.system_packages import ensure_commands

        ensure_commands({common.GETSCU: "dcmtk", MOVESCU: "dcmtk"})
        dicom_port, http_port, store_port, channel_port, movescu_port = free_ports(5)
        self._movescu_port = movescu_port

        receiver = Receiver(RECEIVER_AE, store_port, channel_port)
        receiver.start()
        self._stack.callback(receiver.stop)
        self._override_settings(
            settings,
            FILE_CHANNEL_HOST=receiver.channel_address[0],
            FILE_CHANNEL_PORT=receiver.channel_address[1],
            RECEIVER_AE_TITLE=RECEIVER_AE,
            # A retried fetch would be timed as one; a failure must show instead.
            DICOM_RETRY_ATTEMPTS=1,
        )

        orthanc = OrthancServer(
            PACS_AE,
            storage_dir=self.workdir / "orthanc",
            dicom_port=dicom_port,
            http_port=http_port,
            modalities={
                "ADIT": (RECEIVER_AE, LOOPBACK, store_port),
                "DCMTK": (DCMTK_SCP_AE, LOOPBACK, movescu_port),
            },
        )
        self._stack.callback(orthanc.stop)
        orthanc.start()
        self.orthanc = orthanc

        summary = describe_ct_series(self.instances, seed=SEED)
        self.study_uid = summary.study_instance_uid
        self.patient_id = summary.patient_id
        self.echo(
            f"Uploading a CT study of {self.instances} instances ({ROWS}x{COLUMNS}, 16 bit) "
            f"to Orthanc {PACS_AE} (DICOM port {dicom_port}) ..."
        )
        started = time.perf_counter()
        uploaded = orthanc.upload(
            generate_ct_series(self.instances, rows=ROWS, columns=COLUMNS, seed=SEED)
        )
        self.upload_seconds = time.perf_counter() - started
        stored = len(orthanc.study_instance_uids(self.study_uid))
        if uploaded.total != self.instances or stored != self.instances:
            raise BenchmarkError(
                f"Orthanc holds {stored} instances of the study after uploading "
                f"{uploaded.total}; expected {self.instances}."
            )
        self.study_bytes = self._stored_bytes()
        self.echo(
            f"Uploaded {self.study_bytes / 2**20:.0f} MiB in {self.upload_seconds:.1f} s "
            f"({self.instances / self.upload_seconds:.0f} instances/s)."
        )
        self._list_expected_instances()

    def _override_settings(self, settings: Any, **values: Any) -> None:
        missing = object()
        for name, value in values.items():
            previous = getattr(settings, name, missing)
            setattr(settings, name, value)
            if previous is missing:
                self._stack.callback(delattr, settings, name)
            else:
                self._stack.callback(setattr, settings, name, previous)

    def _stored_bytes(self) -> int:
        assert self.orthanc is not None
        query = {"Level": "Study", "Query": {"StudyInstanceUID": self.study_uid}}
        (orthanc_id,) = self.orthanc.rest("POST", "/tools/find", query)
        return int(self.orthanc.rest("GET", f"/studies/{orthanc_id}/statistics")["DiskSize"])

    def _list_expected_instances(self) -> None:
        """Times the C-FIND listing the operator's C-MOVE does first, and keeps its answer."""
        from adit.core.dicom.operator import DicomOperator

        operator = DicomOperator(self.server("move"))
        started = time.perf_counter()
        self._expected = operator.expected_instances(self.patient_id, self.study_uid, None, None)
        self.listing_seconds = time.perf_counter() - started
        if len(self._expected) != self.instances:
            raise BenchmarkError(
                f"C-FIND listed {len(self._expected)} of {self.instances} instances."
            )

    # -- the methods ------------------------------------------------------------------------

    def measure(self, method: Method) -> Run:
        """Fetches the study once with ``method``; returns the figures of the run."""
        output = Path(tempfile.mkdtemp(prefix=f"{method.key}-", dir=self.workdir))
        try:
            if method.in_process:
                self.peak_rss_reset = common.reset_high_water_mark() and self.peak_rss_reset
            rss_before = _rss_mb()
            cpu_self = _cpu_seconds(resource.RUSAGE_SELF)
            cpu_children = _cpu_seconds(resource.RUSAGE_CHILDREN)
            cpu_orthanc = self._orthanc_cpu()
            started = time.perf_counter()
            sink = _Sink(output if method.writes else None, self.instances // RSS_SAMPLES)
            self._fetch(method, output, sink)
            seconds = time.perf_counter() - started
            run = Run(
                seconds=seconds,
                cpu_self=_cpu_seconds(resource.RUSAGE_SELF) - cpu_self,
                cpu_children=_cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_children,
                cpu_orthanc=self._orthanc_cpu() - cpu_orthanc,
            )
            if method.in_process:
                run.rss_before_mb = rss_before
                run.peak_rss_mb = _peak_rss_mb()
                run.rss_samples = sink.samples
            written = sum(1 for _ in output.iterdir())
            expected_files = self.instances if method.writes else 0
            if sink.count != self.instances or written != expected_files:
                raise BenchmarkError(
                    f"{method.label} delivered {sink.count} and wrote {written} instances; "
                    f"expected {self.instances} and {expected_files}."
                )
            return run
        finally:
            shutil.rmtree(output, ignore_errors=True)
            os.sync()  # no write-back of this run's files during the next one

    def _orthanc_cpu(self) -> float:
        return common.process_cpu_seconds(self.orthanc.pid if self.orthanc else None)

    def _fetch(self, method: Method, output: Path, sink: _Sink) -> None:
        key = method.key
        if key == "getscu":
            self._getscu(output)
            sink.count = sum(1 for _ in output.iterdir())
        elif key == "movescu":
            self._movescu(output)
            sink.count = sum(1 for _ in output.iterdir())
        else:
            patch = (
                _pynetdicom_poll_interval(FAST_POLL_SECONDS)
                if key.endswith("-fastpoll")
                else contextlib.nullcontext()
            )
            with patch:
                if key.startswith("bare-get"):
                    self._bare_get(sink, queued="-queued" in key)
                else:
                    self._operator(method, sink, listed=key.endswith("-listed"))

    def _dcmtk(self, command: list[str]) -> None:
        timeout = 120 + self.instances * 0.5
        try:
            process = subprocess.run(
                command, env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            raise BenchmarkError(
                f"{Path(command[0]).name} took longer than {timeout:g} s."
            ) from err
        if process.returncode != 0:
            tail = "\n".join((process.stdout + process.stderr).splitlines()[-15:])
            raise BenchmarkError(
                f"{' '.join(command)} failed with exit code {process.returncode}:\n{tail}"
            )

    def _dcmtk_retrieve_arguments(self, output: Path) -> list[str]:
        assert self.orthanc is not None
        return [
            "-od",
            str(output),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={self.study_uid}",
            LOOPBACK,
            str(self.orthanc.dicom_port),
        ]

    def _getscu(self, output: Path) -> None:
        self._dcmtk(
            [common.GETSCU, "-S", "-aet", DCMTK_CALLING_AE, "-aec", PACS_AE]
            + self._dcmtk_retrieve_arguments(output)
        )

    def _movescu(self, output: Path) -> None:
        self._dcmtk(
            [MOVESCU, "-S", "-aet", DCMTK_CALLING_AE, "-aec", PACS_AE, "-aem", DCMTK_SCP_AE]
            + ["--port", str(self._movescu_port)]
            + self._dcmtk_retrieve_arguments(output)
        )

    def server(self, protocol: str) -> DicomServer:
        """An unsaved DicomServer for the Orthanc that allows only ``protocol`` for fetching."""
        from adit.core.models import DicomServer

        orthanc = self.orthanc
        assert orthanc is not None
        if protocol == "wado":
            return DicomServer(
                name=f"{PACS_AE} web",
                ae_title=PACS_AE,
                dicomweb_root_url=orthanc.dicomweb_root,
                dicomweb_qido_support=True,
                dicomweb_wado_support=True,
            )
        flags = {
            "get": {"study_root_get_support": True},
            "move": {"study_root_move_support": True},
        }[protocol]
        return DicomServer(
            name=PACS_AE,
            ae_title=PACS_AE,
            host=LOOPBACK,
            port=orthanc.dicom_port,
            study_root_find_support=True,
            **flags,
        )

    def _operator(self, method: Method, sink: _Sink, *, listed: bool) -> None:
        from adit.core.dicom.operator import DicomOperator

        operator: DicomOperator = DicomOperator(self.server(method.key.split("-")[0]))
        if listed:
            expected = dict(self._expected)
            setattr(operator, "expected_instances", lambda *args: expected)  # noqa: B010
        delivered = operator.fetch_study(self.patient_id, self.study_uid, sink)
        if delivered != sink.count:
            raise BenchmarkError(
                f"{method.label} reported {delivered} instances but handed over {sink.count}."
            )

    def _bare_get(self, sink: _Sink, *, queued: bool) -> None:
        """C-GET with pynetdicom as the operator does it, minus the operator: the same contexts
        and PDU size (and the instances received into files), but the handler writes each file
        as it arrived (or nothing).

        With ``queued``, the handler only puts the bytes into a bounded queue (16 instances, so
        memory stays flat) and answers at once; a writer thread writes them meanwhile.
        """
        from django.conf import settings
        from pydicom import Dataset
        from pydicom.uid import CTImageStorage
        from pynetdicom import AE, build_context, build_role, evt

        from adit.core.dicom.dimse import GET_MODELS, received_file, storage_contexts_for_get

        assert self.orthanc is not None
        folder = sink.folder
        # The study holds CT slices only, as the operator finds out by a query.
        storage_contexts = storage_contexts_for_get([CTImageStorage])
        roles = [build_role(CTImageStorage, scp_role=True)]
        pending: queue.Queue[tuple[Path, bytes] | None] = queue.Queue(maxsize=16)
        write_errors: list[BaseException] = []

        def write_pending() -> None:
            while (item := pending.get()) is not None:
                try:
                    item[0].write_bytes(item[1])
                except BaseException as err:  # reported after the C-GET
                    write_errors.append(err)

        writer = threading.Thread(target=write_pending, name="bench-writer", daemon=True)
        writer.start()

        def handle_store(event: Any) -> int:
            if folder is not None:
                path = folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
                with received_file(event) as file:
                    data = file.read()
                if queued:
                    pending.put((path, data))
                else:
                    path.write_bytes(data)
            sink.count_one()
            return 0x0000

        model = GET_MODELS["study"]
        ae = AE(ae_title=settings.CALLING_AE_TITLE)
        ae.maximum_pdu_size = 0
        ae.requested_contexts = [build_context(model), *storage_contexts]
        assoc = ae.associate(
            LOOPBACK,
            self.orthanc.dicom_port,
            ae_title=PACS_AE,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, handle_store)],
        )
        if not assoc.is_established:
            raise BenchmarkError("The bare pynetdicom C-GET could not associate.")
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = self.study_uid
        final_status = None
        try:
            for status, _identifier in assoc.send_c_get(identifier, model):
                if status is not None and status.Status != 0xFF00:
                    final_status = status.Status
        finally:
            assoc.release()
            pending.put(None)
            writer.join()
        if write_errors:
            raise write_errors[0]
        if final_status != 0x0000:
            raise BenchmarkError(f"The bare pynetdicom C-GET ended with status {final_status}.")

    # -- explanations -----------------------------------------------------------------------

    def profile(self, method: Method) -> ProfileSummary:
        """Runs ``method`` once under cProfile, in this thread and every thread it starts."""
        before = set(threading.enumerate())
        output = Path(tempfile.mkdtemp(prefix="profile-", dir=self.workdir))
        sink = _Sink(output if method.writes else None, self.instances)
        profiler = common.ThreadProfiler()
        try:
            with profiler:
                started = time.perf_counter()
                try:
                    self._fetch(method, output, sink)
                finally:
                    wall = time.perf_counter() - started
        finally:
            shutil.rmtree(output, ignore_errors=True)
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=10)
        return common.summarize_profile(
            method.label,
            self.instances,
            profiler.stats(),
            wall,
            profiler.threads,
            key_functions=_KEY_FUNCTIONS,
            top=PROFILE_TOP,
        )


# Functions whose cumulative time explains a fetch.
_KEY_FUNCTIONS: list[common.KeyFunction] = [
    ("pynetdicom DUL reads PDUs (poll socket, recv, decode)", "dul.py", "_is_transport_event"),
    ("pynetdicom state machine, per PDU", "pynetdicom/fsm.py", "do_action"),
    ("pynetdicom encodes and sends each C-STORE response", "pynetdicom/dimse.py", "send_msg"),
    ("pynetdicom P-DATA PDUs received", "pynetdicom/dul.py", "_read_pdu_data"),
    ("idle sleeps of pynetdicom's reactors", "~", "<built-in method time.sleep>"),
    ("operator C-STORE handler (Dataset + callback)", "adit/core/dicom/dimse.py", "handle_store"),
    ("Event.dataset: Dataset from the received bytes", "pynetdicom/events.py", "dataset"),
    ("operator C-FIND listing of expected instances", "operator.py", "expected_instances"),
    ("receiver C-STORE handler", "adit/core/dicom/receiver.py", "handle_store"),
    ("the file an instance was received into, opened", "adit/core/dicom/dimse.py", "received_file"),
    ("receiver reads the routing UIDs", "adit/core/dicom/receiver.py", "_read_routing_uids"),
    ("receiver hands over to the worker, ack included", "adit/core/dicom/receiver.py", "deliver"),
    ("pydicom dcmread, all callers", "pydicom/filereader.py", "dcmread"),
    ("bench callback (dcmwrite to a file)", "bench/fetch.py", "__call__"),
    ("pydicom dcmwrite", "pydicom/filewriter.py", "dcmwrite"),
]


def measure_unit_costs(instances: int = UNIT_COST_INSTANCES) -> UnitCosts:
    """Per-instance costs of decoding and writing one CT slice in this process."""
    from pydicom import dcmread, dcmwrite
    from pydicom.tag import Tag

    from adit.core.demo.synthetic import generate_ct_series

    encoded = []
    for dataset in generate_ct_series(instances, rows=ROWS, columns=COLUMNS, seed=SEED + 1):
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        encoded.append(buffer.getvalue())
    routing_tags = [Tag("StudyInstanceUID"), Tag("SeriesInstanceUID")]
    decode, routing, write, raw = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="adit-bench-units-", dir="/tmp") as folder:
        for number, data in enumerate(encoded):
            started = time.perf_counter()
            dataset = dcmread(io.BytesIO(data))
            decode.append(time.perf_counter() - started)
            started = time.perf_counter()
            dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=routing_tags)
            routing.append(time.perf_counter() - started)
            started = time.perf_counter()
            dcmwrite(Path(folder) / f"{number}.dcm", dataset, enforce_file_format=True)
            write.append(time.perf_counter() - started)
            started = time.perf_counter()
            (Path(folder) / f"{number}.raw").write_bytes(data)
            raw.append(time.perf_counter() - started)
    return UnitCosts(
        instance_bytes=len(encoded[0]),
        decode_ms=statistics.median(decode) * 1000,
        decode_routing_ms=statistics.median(routing) * 1000,
        dcmwrite_ms=statistics.median(write) * 1000,
        raw_write_ms=statistics.median(raw) * 1000,
    )


# -- reporting ---------------------------------------------------------------------------------


def result_rows(report: Report) -> list[list[str]]:
    header = [
        "method",
        "s (median)",
        "min-max s",
        "inst/s",
        "vs dcmtk",
        "CPU s: bench",
        "dcmtk",
        "Orthanc",
        "peak RSS MiB",
        "RSS growth MiB",
        "RSS slope MiB/1000",
    ]
    rows = [header]
    for result in report.results:
        ratio = report.ratio(result)
        seconds = [run.seconds for run in result.runs]
        in_process = result.method.in_process
        rows.append(
            [
                result.method.label,
                f"{result.seconds:.2f}",
                f"{min(seconds):.2f}-{max(seconds):.2f}",
                f"{result.rate:.0f}",
                "-" if ratio is None else f"{ratio:.2f}x {result.method.baseline}",
                f"{result.cpu_self:.2f}" if in_process else "-",
                "-" if in_process else f"{result.cpu_children:.2f}",
                f"{result.cpu_orthanc:.2f}",
                common.number(result.peak_rss_mb),
                common.number(result.rss_growth_mb),
                common.number(result.rss_slope_mb_per_1000, 1, sign=True),
            ]
        )
    return rows


def target_lines(report: Report) -> list[str]:
    lines = []
    for key in ("get-write", "move-write"):
        result = report.need(key)
        ratio = report.ratio(result)
        assert ratio is not None
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        lines.append(
            f"{result.method.label}: {ratio:.2f}x of {result.method.baseline} "
            f"({verdict} the target of {TARGET_RATIO}x)"
        )
    return lines


def _grows(report: Report, result: MethodResult) -> bool:
    """Whether a run held a good part of the study in memory (growth or in-run slope)."""
    growth = result.rss_growth_mb or 0.0
    slope = result.rss_slope_mb_per_1000
    over_run = 0.0 if slope is None else slope * report.instances / 1000
    return growth > 0.25 * report.study_mib or over_run > 0.1 * report.study_mib


def memory_summary(report: Report) -> str:
    """One sentence on whether memory grows with the study size."""
    measured = [r for r in report.results if r.method.in_process and r.rss_growth_mb is not None]
    if not measured:
        return "Memory was not measured."
    growing = [result.method.label for result in measured if _grows(report, result)]
    peaks = [result.peak_rss_mb or 0.0 for result in measured]
    growth = max(result.rss_growth_mb or 0.0 for result in measured)
    slopes = [abs(r.rss_slope_mb_per_1000) for r in measured if r.rss_slope_mb_per_1000 is not None]
    slope_text = (
        f" and at most {max(slopes):.1f} MiB per 1000 instances within a run" if slopes else ""
    )
    text = (
        f"Memory of this process: peaks {min(peaks):.0f}-{max(peaks):.0f} MiB, at most "
        f"{growth:+.0f} MiB over the start of a run{slope_text}, against a study of "
        f"{report.study_mib:.0f} MiB: "
    )
    if growing:
        text += "it GROWS with the study size for " + ", ".join(growing) + "."
    else:
        text += "it does not grow with the study size for any method."
    if not report.peak_rss_reset:
        text += " (The RSS high-water mark could not be reset; peaks are since the start.)"
    return text


def _profile_of(report: Report, key: str) -> ProfileSummary | None:
    label = METHODS_BY_KEY[key].label
    return next((profile for profile in report.profiles if profile.label == label), None)


def reading(report: Report) -> str:
    """A paragraph on what limits the numbers, built from the measurements of this run."""
    n = report.instances
    getscu, movescu = report.need("getscu"), report.need("movescu")
    get_write, get_noop = report.need("get-write"), report.need("get-noop")
    move_write, move_noop = report.need("move-write"), report.need("move-noop")
    wado_write, wado_noop = report.need("wado-write"), report.need("wado-noop")
    parts = [
        f"dcmtk needs {getscu.ms_per_instance:.1f} ms per instance by C-GET and "
        f"{movescu.ms_per_instance:.1f} ms by C-MOVE, writing included. The operator's C-GET "
        f"needs {get_write.ms_per_instance:.1f} ms writing and {get_noop.ms_per_instance:.1f} "
        f"ms without; this process then uses {100 * get_noop.core_share:.0f}% of one core "
        f"({100 * get_write.core_share:.0f}% writing) and Orthanc "
        f"{1000 * get_noop.cpu_orthanc / n:.1f} ms CPU per instance, so the Python side sets "
        "the pace"
        + (
            ", CPU-bound on one core (the GIL serialises pynetdicom's threads)."
            if get_noop.core_share > 0.85
            else f", partly CPU-bound and partly idle: {100 * (1 - get_noop.core_share):.0f}% "
            "of the time not even one core is busy."
        ),
    ]
    if wado_noop.seconds < 0.5 * get_noop.seconds:
        parts.append(
            f"The same process takes in the whole study by WADO-RS in {wado_noop.seconds:.2f} s "
            f"({wado_noop.ms_per_instance:.2f} ms per instance), parsing every instance with "
            "pydicom, so neither the network nor decoding is what holds C-GET back."
        )
    profile = _profile_of(report, "get-write")
    if profile is not None:
        wall = profile.wall_seconds
        reads, _ = profile.cumulative("pynetdicom DUL reads")
        fsm, _ = profile.cumulative("pynetdicom state machine")
        respond, _ = profile.cumulative("pynetdicom encodes")
        _, pdus = profile.cumulative("pynetdicom P-DATA")
        _, sleeps = profile.cumulative("idle sleeps")
        handler, _ = profile.cumulative("operator C-STORE handler")
        decode, _ = profile.cumulative("Event.dataset")
        writing, _ = profile.cumulative("bench callback")
        parts.append(
            f"In the profiled C-GET ({wall:.1f} s under cProfile, {profile.threads} threads) "
            f"Orthanc sent {pdus / n:.0f} P-DATA PDUs per instance; pynetdicom's reactor spent "
            f"{100 * reads / wall:.0f}% of the wall time polling and reading them and "
            f"{100 * fsm / wall:.0f}% running its state machine on them, slept "
            f"{sleeps / n:.1f} times per instance in its 1 ms idle poll, and encoding the "
            f"C-STORE responses took {100 * respond / wall:.0f}%. The operator's own handler "
            f"took {100 * handler / wall:.0f}%: decoding the Dataset {100 * decode / wall:.0f}% "
            f"and the writing callback (dcmwrite) {100 * writing / wall:.0f}%."
        )
    units = report.unit_costs
    write_cost = get_write.ms_per_instance - get_noop.ms_per_instance
    text = f"Writing adds {write_cost:.1f} ms per instance to the C-GET"
    if units is not None:
        text += (
            f"; alone, re-encoding and writing one {units.instance_bytes / 1e6:.2f} MB instance "
            f"with dcmwrite costs {units.dcmwrite_ms:.2f} ms, writing its received bytes "
            f"{units.raw_write_ms:.2f} ms, a full pydicom decode {units.decode_ms:.2f} ms"
        )
    parts.append(text + ".")
    parts.append(
        f"The C-MOVE needs {move_noop.ms_per_instance:.1f} ms per instance without writing and "
        f"{move_write.ms_per_instance:.1f} ms with, "
        f"{move_noop.ms_per_instance - get_noop.ms_per_instance:.1f} ms more than the C-GET "
        f"(no-op): {1000 * report.listing_seconds / n:.1f} ms of "
        "it is the C-FIND listing of the expected instances before the move starts, the rest "
        "the second association and the hop receiver -> file channel -> worker, where every "
        "instance is encoded with file meta, parsed for its routing UIDs, sent, acknowledged "
        "and decoded again before Orthanc may send the next."
    )
    move_profile = _profile_of(report, "move-write")
    if move_profile is not None:
        wall = move_profile.wall_seconds
        listing, _ = move_profile.cumulative("operator C-FIND listing")
        receiver, _ = move_profile.cumulative("receiver C-STORE handler")
        parts.append(
            f"In the profiled C-MOVE the listing took {100 * listing / wall:.0f}% of the wall "
            f"time and the receiver's C-STORE handler {100 * receiver / wall:.0f}%."
        )
    parts.append(
        f"WADO-RS delivers in {wado_noop.seconds:.2f} s without writing and "
        f"{wado_write.seconds:.2f} s with, so there the writing callback is "
        f"{100 * (1 - wado_noop.seconds / wado_write.seconds):.0f}% of the time."
    )
    what_ifs = [
        ("bare-get-noop", "get-noop", "a bare pynetdicom C-GET without the operator, no-op"),
        ("bare-get-bytes", "get-write", "writing the received bytes instead of dcmwrite"),
        ("bare-get-queued", "get-write", "the same bytes written by a writer thread"),
        ("bare-get-queued-fastpoll", "get-write", "that plus the 0.1 ms poll"),
        ("get-noop-fastpoll", "get-noop", "a 0.1 ms idle poll in pynetdicom (no-op)"),
        ("get-write-fastpoll", "get-write", "a 0.1 ms idle poll in pynetdicom (writing)"),
        ("move-noop-listed", "move-noop", "a C-MOVE without the C-FIND listing"),
    ]
    effects = []
    for key, reference_key, description in what_ifs:
        result, reference = report.result(key), report.result(reference_key)
        if result is not None and reference is not None:
            change = 100 * (result.seconds / reference.seconds - 1)
            effects.append(
                f"{description}: {result.seconds:.2f} s against {reference.seconds:.2f} s "
                f"({change:+.0f}%)"
            )
    if effects:
        parts.append("What-if runs, same session: " + "; ".join(effects) + ".")
    parts.append(
        common.load_sentence(report)
        + (
            "; other processes shared the two cores, so single runs vary by 10-30%."
            if max(report.load_before, report.load_after) > 1.5
            else "."
        )
    )
    return " ".join(parts)


def format_markdown_section(report: Report) -> str:
    lines = [
        *common.section_head(report, f"fetch, N={report.instances}, repeat={report.repeat}"),
        f"- Study: {report.instances} CT instances, {ROWS}x{COLUMNS}, 16 bit, "
        f"{report.study_mib:.0f} MiB in Orthanc; uploaded by REST in "
        f"{report.upload_seconds:.1f} s. The operator's C-FIND listing of its instances took "
        f"{report.listing_seconds:.2f} s.",
        f"- Each method ran {report.repeat} times, round by round; seconds are the median, CPU "
        'the median per run. "vs dcmtk" is throughput relative to the named dcmtk baseline '
        "(1.00x = as fast). CPU bench is this process, all threads, the in-process receiver "
        "included. Peak RSS is getrusage's ru_maxrss after resetting the high-water mark "
        "before each run in this process; growth is the peak minus the RSS at the start.",
        "",
        common.markdown_table(result_rows(report)),
        "",
        "Target (issue): " + "; ".join(target_lines(report)) + ".",
        "",
        memory_summary(report),
        "",
    ]
    if report.unit_costs is not None:
        units = report.unit_costs
        lines += [
            f"Per-instance costs in this process ({UNIT_COST_INSTANCES} instances of "
            f"{units.instance_bytes} bytes, median): full pydicom decode {units.decode_ms:.2f} ms, "
            f"routing-UID read {units.decode_routing_ms:.2f} ms, dcmwrite to a file "
            f"{units.dcmwrite_ms:.2f} ms, raw bytes to a file {units.raw_write_ms:.2f} ms.",
            "",
        ]
    lines += ["Reading: " + reading(report), ""]
    for profile in report.profiles:
        lines += common.profile_details(
            profile,
            f"cProfile of one {profile.label} ({profile.wall_seconds:.1f} s wall under the "
            f"profiler, {profile.threads} threads merged)",
            PROFILE_TOP,
        )
    return "\n".join(lines)


# -- entry point -------------------------------------------------------------------------------


def run_fetch_benchmark(
    instances: int = 1000,
    repeat: int = 3,
    *,
    profile: bool = True,
    what_if: bool = False,
    record: bool = True,
    results_file: Path = RESULTS_FILE,
    echo: Echo = print,
) -> Report:
    """Runs the fetch benchmark; Django must be set up. Returns the report it printed.

    Args:
        instances: Slices of the CT study in Orthanc.
        repeat: Runs per method; the median counts.
        profile: Whether to add cProfile runs of the operator and per-instance costs.
        what_if: Whether to add the what-if variants (patched libraries, this process only).
        record: Whether to append the results to ``results_file``.
        results_file: The Markdown file the results are appended to.
        echo: Where progress and results are printed.
    """
    if instances < 1 or repeat < 1:
        raise ValueError("instances and repeat must be at least 1.")
    load_before = common.load_average()
    methods = METHODS + (WHAT_IF_METHODS if what_if else [])
    with (
        common.terminate_as_interrupt(),
        # Hides the receiver's log line per subscription; its warnings still show.
        common.quiet_logger("adit.core.dicom.receiver"),
        FetchBenchmark(instances, echo) as bench,
    ):
        bench.start()
        assert bench.orthanc is not None
        results = [MethodResult(method, instances) for method in methods]
        width = max(len(method.label) for method in methods)
        for round_number in range(1, repeat + 1):
            for result in results:
                run = bench.measure(result.method)
                result.runs.append(run)
                echo(
                    f"[{round_number}/{repeat}] {result.method.label:<{width}} "
                    f"{run.seconds:6.2f} s {instances / run.seconds:6.0f} inst/s"
                )
        report = Report(
            instances=instances,
            repeat=repeat,
            study_mib=bench.study_bytes / 2**20,
            upload_seconds=bench.upload_seconds,
            machine=common.machine(),
            versions=common.versions(bench.orthanc),
            results=results,
            listing_seconds=bench.listing_seconds,
            load_before=load_before,
            peak_rss_reset=bench.peak_rss_reset,
        )
        if profile:
            for key in ("get-write", "move-write"):
                echo(f"Profiling one {METHODS_BY_KEY[key].label} ...")
                report.profiles.append(bench.profile(METHODS_BY_KEY[key]))
            report.unit_costs = measure_unit_costs()
        report.load_after = common.load_average()
    common.print_results(
        echo,
        common.console_table(result_rows(report)),
        [*target_lines(report), memory_summary(report)],
        reading(report),
        section=(lambda: format_markdown_section(report)) if record else None,
        results_file=results_file,
    )
    return report
