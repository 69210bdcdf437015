"""The transfer benchmark of ADIT's job engine: ``uv run cli bench transfer``.

Two Orthancs run side by side: A (the source) holds a synthetic CT study of N slices (512x512,
16 bit, about 0.5 MB each), B (the destination) starts empty. The study is copied from A to B

* by Orthanc itself, the native baseline: B's REST API ``POST /modalities/A/move`` makes B send
  a C-MOVE to A with B as the destination, and A C-STOREs every instance to B;
* by ADIT, through a real job processed by a real worker (``manage.py worker --queue dicom``): a
  job with one transfer task is queued, the worker claims it and runs the TransferProcessor
  (C-FIND of the study, C-GET from A, C-STORE to B, then the check that B holds it all),
  once plain and once pseudonymized;
* by ADIT, plain, with a direct C-MOVE: for that run A's DicomServer row has "C-MOVE to
  destinations" (``moves_to_destinations``, a per-server option in the admin) and study-root
  C-MOVE on, so the worker asks A to C-MOVE the unmodified study straight to B; no instance
  passes through the worker, which only orchestrates and checks;
* by ADIT, plain, as two jobs of N/2 instances queued at once and run by a dicom worker per
  core (the set-up ``cli up`` starts), timed until both succeeded;
* by ADIT, plain, for a smaller study too (N/4 by default), so that the worker's peak memory can
  be compared at two study sizes.

After the timed rounds the stages of a transfer are measured one by one in this process
(``bench/stages.py``), and the ceiling their CPU costs set on this machine is printed next to
what the jobs reached.

The check is ADIT's own (``ServerDestination.verify``): one C-FIND at series level on B gives
the instances per series (NumberOfSeriesRelatedInstances), compared with what was sent, or, after
a direct C-MOVE, with the source's counts; the instances of a series are listed by C-FIND only
where the counts differ, to name what is missing.

Two lines judge the plain target (>= 0.8x Orthanc's own C-MOVE): the direct C-MOVE, the lever
ADIT has for it, and the transfer through the worker, reported too (it misses: every instance
is fetched into the worker and stored again).

Every method runs ``repeat`` times, interleaved round by round; the median counts. B is cleared
before every run, and after every run B must hold exactly what was sent: a run that does not
deliver every instance is an error, not a number.

The engine needs database tables, and the bench must not touch the user's data: it creates a
throwaway database (``adit_bench``) on the same PostgreSQL server, migrates it, points this
process and every worker at it through DATABASE_URL and drops it at the end. The job and task
models are selective transfer's (SelectiveTransferJob and SelectiveTransferTask, processed by
the TransferProcessor that every transfer job kind runs).

Every ADIT run gets a fresh worker, so the worker's memory of one run is not inherited from the
run before: the worker is started, its "is ready." line awaited, and a 5-instance pseudonymized
warm-up job run in it (imports, first associations), before the timed job is queued. The bench
samples the worker's RSS with psutil every 0.2 s and reads the kernel's high-water mark (reset
before the timed job). Optionally (``profile``) one more plain run and one more pseudonymized
run of the small study use a worker that runs under cProfile in every thread.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import pstats
import runpy
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from bench import common, stages
from bench.common import RESULTS_FILE, BenchmarkError, Echo, ProfileSummary

if TYPE_CHECKING:
    import psutil

    from adit.core.demo.orthanc import OrthancServer
    from adit.core.models import DicomServer

_Result = TypeVar("_Result")

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "adit_bench"
# The settings with the test-only example app, whose jobs the bench queues.
SETTINGS_MODULE = "adit.settings.test"
LOOPBACK = "127.0.0.1"

SOURCE_AE = "BENCHSRC"
DESTINATION_AE = "BENCHDST"
SOURCE_NAME = "SOURCE"  # how B names A among its modalities (the C-MOVE's peer)
DESTINATION_NAME = "DESTINATION"  # how A names B (the C-MOVE's destination)

ROWS = COLUMNS = 512
SEED = 0
SMALL_SEED = 1  # another seed, so the small study has UIDs of its own on A
WARM_UP_SEED = 2
WARM_UP_INSTANCES = 5
PSEUDONYM = "BENCH-001"

TARGET_PLAIN_RATIO = 0.8  # the issue: plain >= 0.8x of Orthanc's own C-MOVE
TARGET_PSEUDONYMIZED_RATIO = 0.5  # the issue: pseudonymized >= 0.5x of it
# The issue: two jobs of N/2 at once finish within 1.2x the time of one job of N.
TARGET_TWO_JOBS_FACTOR = 1.2
HALF_SEEDS = (3, 4)
# "Does not grow with the study size": the worker's peak at N may exceed its peak at the small
# size by at most this share of the study at N (at least FLAT_PEAK_MIN_MB, for allocator noise),
# and RSS may rise by at most FLAT_SLOPE_MB_PER_100 within a run. A worker that held the study
# would show ~50 MB per 100 instances.
FLAT_PEAK_SHARE = 0.05
FLAT_PEAK_MIN_MB = 10.0
FLAT_SLOPE_MB_PER_100 = 1.0

POLL_SECONDS = 0.05  # how often the task's status is read while a job runs
RSS_SAMPLE_SECONDS = 0.2
WORKER_READY_TIMEOUT = 60.0
WORKER_STOP_TIMEOUT = 30.0
MIN_SLOPE_SPAN = 100  # instances the RSS samples must span for a slope
PROFILE_TOP = 15
LOG_TAIL_LINES = 30


class TransferFailed(BenchmarkError):
    """A run did not deliver the study: the task failed, or B does not hold what was sent.

    Attributes:
        summary: One line for the report: the task's message and the worker's warnings.
    """

    def __init__(self, message: str, summary: str):
        super().__init__(message)
        self.summary = summary


class Kind:
    ORTHANC = "orthanc"
    PLAIN = "plain"
    PSEUDONYMIZED = "pseudonymized"


@dataclass(frozen=True)
class Method:
    """One way of copying a study from A to B.

    Attributes:
        key: Short name.
        label: Name in the table.
        kind: Kind.ORTHANC, Kind.PLAIN or Kind.PSEUDONYMIZED.
        small: Whether it copies the small study instead of the N-instance one.
        direct: The source row has "C-MOVE to destinations" on, so an unmodified study goes
            from A to B by A's own C-MOVE, ordered and verified by the worker.
        halves: Two jobs, each a study of N/2 instances, queued at once and run by the worker
            set-up of ``cli up`` (a dicom worker per core); timed until both succeeded.
    """

    key: str
    label: str
    kind: str
    small: bool = False
    direct: bool = False
    halves: bool = False

    @property
    def by_worker(self) -> bool:
        return self.kind != Kind.ORTHANC


METHODS = [
    Method("orthanc", "Orthanc C-MOVE (B pulls from A)", Kind.ORTHANC),
    Method("plain", "ADIT transfer, plain", Kind.PLAIN),
    Method("plain-direct", "ADIT transfer, plain, direct C-MOVE", Kind.PLAIN, direct=True),
    Method("pseudonymized", "ADIT transfer, pseudonymized", Kind.PSEUDONYMIZED),
    Method("two-jobs", "ADIT transfer, plain, two jobs of N/2 at once", Kind.PLAIN, halves=True),
    Method("plain-small", "ADIT transfer, plain", Kind.PLAIN, small=True),
]
# Under cProfile a run takes 2-3 times as long; the pseudonymized one at the small size keeps
# the whole benchmark within about ten minutes and still shows the per-instance costs.
PROFILED_METHODS = [
    METHODS[1],
    Method("pseudonymized-small", "ADIT transfer, pseudonymized", Kind.PSEUDONYMIZED, small=True),
]


@dataclass(frozen=True)
class Study:
    """One synthetic CT study on A."""

    instances: int
    patient_id: str
    study_uid: str
    sop_uids: frozenset[str]
    mib: float = 0.0


@dataclass
class Run:
    """One timed copy of a study.

    Attributes:
        seconds: From queueing the job (or calling Orthanc) until the task's status read
            Success (or Orthanc answered).
        task_seconds: The task's own start-to-end timestamps (claim to outcome).
        pickup_seconds: From queueing until the worker claimed the task.
        cpu_worker: User + system CPU seconds of the worker during the run.
        cpu_orthanc: CPU seconds of both Orthancs during the run.
        rss_ready_mb: The worker's RSS just before the job was queued (after the warm-up).
        peak_rss_mb: Highest sampled RSS of the worker during the run.
        hwm_mb: The kernel's RSS high-water mark of the worker (VmHWM), reset before the run.
        samples: (instances done, RSS MiB) every RSS_SAMPLE_SECONDS.
        busy_workers: Of several workers, how many worked on the tasks (by their CPU).
    """

    seconds: float
    task_seconds: float | None = None
    pickup_seconds: float | None = None
    cpu_worker: float | None = None
    cpu_orthanc: float = 0.0
    rss_ready_mb: float | None = None
    peak_rss_mb: float | None = None
    hwm_mb: float | None = None
    samples: list[tuple[int, float]] = field(default_factory=list)
    busy_workers: int | None = None

    @property
    def slope_mb_per_100(self) -> float | None:
        """Least-squares slope of RSS over instances done, in MiB per 100 instances."""
        points = [(done, rss) for done, rss in self.samples if done > 0]
        if len(points) < 3:
            return None
        xs = [float(done) for done, _ in points]
        if max(xs) - min(xs) < MIN_SLOPE_SPAN:
            return None
        return 100 * statistics.linear_regression(xs, [rss for _, rss in points]).slope


class MethodResult(common.MethodResultBase[Method, Run]):
    """All runs of one method and the figures derived from them."""

    @property
    def task_seconds(self) -> float | None:
        return self.median_of("task_seconds")

    @property
    def pickup_seconds(self) -> float | None:
        return self.median_of("pickup_seconds")

    @property
    def cpu_worker(self) -> float | None:
        return self.median_of("cpu_worker")

    @property
    def rss_ready_mb(self) -> float | None:
        return self.median_of("rss_ready_mb")

    @property
    def peak_rss_mb(self) -> float | None:
        """The highest peak of all runs: memory is judged by the worst run."""
        return self.maximum_of("peak_rss_mb")

    @property
    def hwm_mb(self) -> float | None:
        return self.maximum_of("hwm_mb")

    @property
    def slope_mb_per_100(self) -> float | None:
        return self.median_of("slope_mb_per_100")

    @property
    def busy_workers(self) -> int | None:
        """The fewest workers that worked on the tasks in any run."""
        counts = [run.busy_workers for run in self.runs if run.busy_workers is not None]
        return min(counts) if counts else None


@dataclass
class Report(common.ResultsByKey[MethodResult]):
    """Everything one benchmark session measured."""

    instances: int
    small_instances: int
    repeat: int
    study_mib: float
    small_study_mib: float
    upload_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    results: list[MethodResult]
    load_before: float
    load_after: float = 0.0
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    profiles: list[ProfileSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # runs that did not deliver, not counted
    stage_costs: stages.StageCosts | None = None

    def ratio(self, result: MethodResult) -> float:
        """Throughput relative to Orthanc's own C-MOVE of the N-instance study."""
        return result.rate / self.need("orthanc").rate


# -- the throwaway database ----------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseServer:
    """A PostgreSQL server and an account on it that may create and drop databases.

    Attributes:
        host: Host name, or the directory of a unix socket.
        port: Port ("" for the default).
        user: Account name.
        password: Its password ("" for none).
        maintenance_database: A database to connect to while creating or dropping another one.
    """

    host: str
    port: str
    user: str
    password: str
    maintenance_database: str

    @classmethod
    def from_url(cls, url: str) -> DatabaseServer:
        """The server of a DATABASE_URL; its own database serves as the maintenance database."""
        import dj_database_url

        parsed = dj_database_url.parse(url)
        return cls(
            host=str(parsed.get("HOST") or ""),
            port=str(parsed.get("PORT") or ""),
            user=str(parsed.get("USER") or ""),
            password=str(parsed.get("PASSWORD") or ""),
            maintenance_database=str(parsed.get("NAME") or "postgres"),
        )

    @classmethod
    def embedded(cls, socket_dir: str) -> DatabaseServer:
        """The embedded server (see adit.embedded_postgres), reached through its socket."""
        from adit import embedded_postgres

        return cls(socket_dir, "", embedded_postgres.SUPERUSER, "", "postgres")

    def url(self, database: str) -> str:
        """A DATABASE_URL for ``database`` on this server."""
        # A socket directory goes into the host part percent-encoded, as dj-database-url reads it.
        host = quote(self.host, safe="")
        port = f":{self.port}" if self.port else ""
        password = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgres://{quote(self.user, safe='')}{password}@{host}{port}/{database}"

    def recreate(self, database: str) -> None:
        """Drops ``database`` if it exists (a leftover of a killed run) and creates it empty."""
        from psycopg import sql

        if database == self.maintenance_database:
            raise BenchmarkError(f"Refusing to recreate {database}: it is the configured database.")
        with self._connect() as connection:
            name = sql.Identifier(database)
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(name))

    def drop(self, database: str) -> None:
        from psycopg import sql

        with self._connect() as connection:
            name = sql.Identifier(database)
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))

    def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import make_conninfo

        parameters = {"dbname": self.maintenance_database, "user": self.user}
        for key, value in (("host", self.host), ("port", self.port), ("password", self.password)):
            if value:
                parameters[key] = value
        try:
            return psycopg.connect(make_conninfo(**parameters), autocommit=True)
        except psycopg.Error as err:
            raise BenchmarkError(f"Cannot reach the PostgreSQL server: {err}") from err


@contextlib.contextmanager
def bench_database(server: DatabaseServer) -> Iterator[str]:
    """Creates the throwaway database, points this process at it and sets Django up.

    Yields the database's URL. Afterwards the connections are closed, the database dropped and
    the environment restored. Django must not have been set up in this process before.
    """
    import django

    url = server.url(BENCH_DATABASE)
    server.recreate(BENCH_DATABASE)
    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    try:
        django.setup()
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
        yield url
    finally:
        from django.db import connections

        connections.close_all()
        server.drop(BENCH_DATABASE)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- the worker ----------------------------------------------------------------------------------


class Worker:
    """``manage.py worker --queue dicom`` on the bench database, its output in a log file.

    With ``profile_to`` the worker runs under cProfile in every thread and writes the merged
    statistics there when it stops (see ``_wrapped_manage``).
    """

    def __init__(self, log_path: Path, profile_to: Path | None = None):
        self.log_path = log_path
        self.profile_to = profile_to
        self.process: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def start(self) -> None:
        import psutil

        from adit.core.demo.orthanc import parent_death_signal

        command = [sys.executable, "manage.py", "worker", "--queue", "dicom"]
        if self.profile_to is not None:
            command = [
                sys.executable,
                "-m",
                "bench.transfer",
                "--profile-to",
                str(self.profile_to),
                "--",
                *command[2:],
            ]
        env = {
            **os.environ,
            # Inherited from this process already; named here so the worker's database and
            # settings never depend on what .env says.
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            # A failed attempt must show as a failure, not be retried and timed as one run.
            "DICOM_TASK_MAX_ATTEMPTS": "1",
            # The ready line must reach the log file at once, not when a buffer fills.
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A benchmark killed with SIGKILL must not leave a worker polling a dropped
                # database behind.
                preexec_fn=parent_death_signal(),
            )
        self._ps = psutil.Process(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        return "\n".join(self.log().splitlines()[-LOG_TAIL_LINES:]) or "(empty log)"

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"The worker exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_until_ready(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while "is ready." not in self.log():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"The worker was not ready after {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def rss_mb(self) -> float:
        assert self._ps is not None
        return self._ps.memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        assert self._ps is not None
        times = self._ps.cpu_times()
        return times.user + times.system

    def reset_high_water_mark(self) -> bool:
        """Makes VmHWM the peak from now on (Linux >= 4.0); False where not allowed."""
        return common.reset_high_water_mark(self.pid)

    def high_water_mark_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
        except (OSError, ValueError, IndexError):
            return None
        return None

    def stop(self) -> None:
        """SIGTERM (procrastinate shuts down gracefully), SIGKILL if it does not end."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def failure_summary(outcome: str, worker_log: str) -> str:
    """The outcome plus the worker's first warnings and errors, on one line."""
    noted = [
        line.split(" ", 3)[-1]  # without level, date and time
        for line in worker_log.splitlines()
        if line.startswith(("WARNING", "ERROR"))
    ]
    return outcome + (f" (worker log: {'; '.join(noted[:3])})" if noted else "")


def _wrapped_manage(argv: list[str]) -> int:
    """``python -m bench.transfer [--profile-to PATH] -- MANAGE.PY-ARGS``.

    Runs manage.py in this process, under cProfile in every thread with ``--profile-to``.
    """
    usage = "usage: python -m bench.transfer [--profile-to PATH] -- ARGS..."
    profile_to: Path | None = None
    while argv and argv[0] != "--":
        if argv[0] == "--profile-to" and len(argv) > 1:
            profile_to, argv = Path(argv[1]), argv[2:]
        else:
            print(usage)
            return 2
    sys.argv = ["manage.py", *argv[1:]]
    manage = functools.partial(runpy.run_path, str(BASE_DIR / "manage.py"), run_name="__main__")
    if profile_to is None:
        manage()
    else:
        _run_profiled(manage, profile_to)
    return 0


def _run_profiled(target: Callable[[], object], output: Path) -> None:
    """Runs ``target`` under cProfile in this thread and every thread started meanwhile.

    cProfile alone sees only the main thread, but the worker runs each task on a thread of an
    executor and the task starts its own threads (the fetch, pynetdicom's reactors). Every
    thread started here gets a profiler of its own; all are merged and written to ``output``
    when ``target`` returns (on SIGTERM the worker shuts down gracefully and returns).
    """
    profiler = common.ThreadProfiler()
    try:
        with profiler:
            target()
    finally:
        profiler.stats().dump_stats(str(output))
        output.with_suffix(".threads").write_text(str(profiler.threads))


# -- the benchmark -------------------------------------------------------------------------------


class OrthancPair(common.Session):
    """Orthanc A (the source) and Orthanc B (the destination), each knowing the other as a DICOM
    modality, their DicomServer rows and the user who owns the jobs: what the transfer and the
    batch transfer benchmark share.

    Use as a context manager; leaving it stops both Orthancs (and whatever a subclass
    registered on ``_stack``) and removes the session's folder, also on Ctrl-C.
    """

    def __init__(self, prefix: str, echo: Echo):
        super().__init__(prefix)
        self.echo = echo
        self.source: OrthancServer | None = None
        self.destination: OrthancServer | None = None
        self.source_row: DicomServer | None = None
        self.destination_row: DicomServer | None = None
        self.owner: Any = None

    def start_servers(
        self,
        *,
        source_modalities: dict[str, tuple[str, str, int]] | None = None,
        source_dicomweb: bool = False,
    ) -> None:
        """Starts A and B on free ports.

        Args:
            source_modalities: Modalities A knows besides B (C-MOVE destinations).
            source_dicomweb: Whether A serves DICOMweb too.
        """
        from adit.core.demo.orthanc import OrthancServer, free_ports, stop_servers

        source_dicom, source_http, destination_dicom, destination_http = free_ports(4)
        source = OrthancServer(
            SOURCE_AE,
            storage_dir=self.workdir / "source",
            dicom_port=source_dicom,
            http_port=source_http,
            modalities={
                DESTINATION_NAME: (DESTINATION_AE, LOOPBACK, destination_dicom),
                **(source_modalities or {}),
            },
            dicomweb=source_dicomweb,
        )
        destination = OrthancServer(
            DESTINATION_AE,
            storage_dir=self.workdir / "destination",
            dicom_port=destination_dicom,
            http_port=destination_http,
            modalities={SOURCE_NAME: (SOURCE_AE, LOOPBACK, source_dicom)},
            dicomweb=False,
        )
        self._stack.callback(stop_servers, [source, destination])
        source.start()
        destination.start()
        self.source, self.destination = source, destination

    def upload(self, instances: int, seed: int) -> Study:
        """Uploads the CT study of ``instances`` slices made from ``seed`` to A."""
        from adit.core.demo.synthetic import describe_ct_series, generate_ct_series

        assert self.source is not None
        summary = describe_ct_series(instances, seed=seed)
        self.source.upload(generate_ct_series(instances, rows=ROWS, columns=COLUMNS, seed=seed))
        uid = summary.study_instance_uid
        held = self.source.study_instance_uids(uid)
        if len(held) != instances:
            raise BenchmarkError(f"{SOURCE_AE} holds {len(held)} of the {instances} instances.")
        query = {"Level": "Study", "Query": {"StudyInstanceUID": uid}}
        (orthanc_id,) = self.source.rest("POST", "/tools/find", query)
        size = int(self.source.rest("GET", f"/studies/{orthanc_id}/statistics")["DiskSize"])
        return Study(
            instances=instances,
            patient_id=summary.patient_id,
            study_uid=uid,
            sop_uids=frozenset(
                uid for series in summary.series for uid in series.sop_instance_uids
            ),
            mib=size / 2**20,
        )

    def create_rows(self) -> None:
        """The DicomServer rows of A and B, and the user who owns the jobs."""
        from django.contrib.auth import get_user_model

        from adit.core.models import DicomServer

        assert self.source is not None and self.destination is not None
        # Staff, so that no job waits for a staff member's verification whatever
        # JOBS_NEED_STAFF_VERIFICATION says.
        self.owner = get_user_model().objects.create_user(username="bench", is_staff=True)
        # C-GET is what the engine uses when a source offers it; C-MOVE would also need the
        # receiver process running, and was 35% slower in the fetch benchmark.
        self.source_row = DicomServer.objects.create(
            name="Bench source",
            ae_title=SOURCE_AE,
            host=LOOPBACK,
            port=self.source.dicom_port,
            study_root_find_support=True,
            study_root_get_support=True,
        )
        # C-FIND too, or the task could not verify what arrived and would end with a warning.
        self.destination_row = DicomServer.objects.create(
            name="Bench destination",
            ae_title=DESTINATION_AE,
            host=LOOPBACK,
            port=self.destination.dicom_port,
            study_root_find_support=True,
            store_scp_support=True,
        )

    def set_direct_move(self, direct: bool) -> None:
        """Turns A's "C-MOVE to destinations" (and its study-root C-MOVE) on or off."""
        from adit.core.models import DicomServer

        assert self.source_row is not None
        DicomServer.objects.filter(pk=self.source_row.pk).update(
            study_root_move_support=direct, moves_to_destinations=direct
        )

    def orthanc_cpu(self) -> float:
        """CPU seconds of both Orthancs so far."""
        assert self.source is not None and self.destination is not None
        return common.process_cpu_seconds(self.source.pid) + common.process_cpu_seconds(
            self.destination.pid
        )

    def clear_destination(self) -> None:
        assert self.destination is not None
        self.destination.clear()
        if self.destination.count_instances():
            raise BenchmarkError(f"{DESTINATION_AE} still holds instances after clearing it.")

    def orthanc_move(self, study_uids: list[str]) -> Run:
        """B's C-MOVE SCU asks A to send the studies to B: Orthanc's own server-to-server copy.

        One REST call, one association from B to A with a C-MOVE request per study (Orthanc's
        move job keeps its association open from one resource to the next).
        """
        assert self.destination is not None
        body = {
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": uid} for uid in study_uids],
            "TargetAet": DESTINATION_AE,
            "Synchronous": True,  # Orthanc 1.10 always is; later versions need asking
        }
        cpu_before = self.orthanc_cpu()
        started = time.perf_counter()
        self.destination.rest("POST", f"/modalities/{SOURCE_NAME}/move", body)
        seconds = time.perf_counter() - started
        return Run(seconds=seconds, cpu_orthanc=self.orthanc_cpu() - cpu_before)

    def verify_copies(self, studies: list[Study]) -> None:
        """B must hold exactly ``studies``, unmodified: every instance once, nothing else.

        Raises:
            TransferFailed: Naming the first study B does not hold exactly.
        """
        assert self.destination is not None
        for study in studies:
            held = self.destination.study_instance_uids(study.study_uid)
            if set(held) != study.sop_uids or len(held) != study.instances:
                missing = len(study.sop_uids - set(held))
                message = (
                    f"{DESTINATION_AE} holds {len(held)} instances of {study.study_uid} and "
                    f"misses {missing} of its {study.instances}"
                )
                raise TransferFailed(message, message)
        held_total = self.destination.count_instances()
        expected = sum(study.instances for study in studies)
        if held_total != expected:
            message = f"{DESTINATION_AE} holds {held_total} instances in all; expected {expected}"
            raise TransferFailed(message, message)


class TransferBenchmark(OrthancPair):
    """The two Orthancs, the database rows and the temporary folders of one session.

    Use as a context manager; leaving it stops every server and worker and removes every folder,
    also on Ctrl-C.
    """

    def __init__(self, instances: int, small_instances: int, echo: Echo):
        super().__init__("adit-bench-transfer-", echo)
        self.instances = instances
        self.small_instances = small_instances
        self.study: Study | None = None
        self.small_study: Study | None = None
        self.warm_up_study: Study | None = None
        self.half_studies: list[Study] = []
        self.upload_seconds = 0.0
        self._last_task: Any = None  # the SelectiveTransferTask of the latest run by a worker
        self._runs = 0

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts both Orthancs, uploads the studies to A and creates the database rows."""
        self.start_servers()
        self.echo(
            f"Uploading CT studies of {self.instances}, {self.small_instances}, "
            f"{WARM_UP_INSTANCES} and twice {self.instances // 2} instances ({ROWS}x{COLUMNS}, "
            f"16 bit) to Orthanc {SOURCE_AE} ..."
        )
        started = time.perf_counter()
        self.study = self.upload(self.instances, SEED)
        self.small_study = self.upload(self.small_instances, SMALL_SEED)
        self.warm_up_study = self.upload(WARM_UP_INSTANCES, WARM_UP_SEED)
        half = self.instances // 2
        self.half_studies = [self.upload(half, seed) for seed in HALF_SEEDS]
        self.upload_seconds = time.perf_counter() - started
        total = self.instances + self.small_instances + WARM_UP_INSTANCES + 2 * half
        self.echo(
            f"Uploaded {self.study.mib + self.small_study.mib:.0f} MiB in "
            f"{self.upload_seconds:.1f} s ({total / self.upload_seconds:.0f} instances/s)."
        )
        self.create_rows()

    # -- the methods ----------------------------------------------------------------------

    def study_of(self, method: Method) -> Study:
        """The method's study (for the two jobs: the size of both together)."""
        study = self.small_study if method.small else self.study
        assert study is not None
        return study

    def measure(self, method: Method, profile_to: Path | None = None) -> Run:
        """Copies the method's study from A to B once; returns the figures of the run."""
        self.clear_destination()
        if method.halves:
            run = self._two_jobs()
            self.verify_copies(self.half_studies)
            return run
        study = self.study_of(method)
        if method.kind == Kind.ORTHANC:
            run = self.orthanc_move([study.study_uid])
        else:
            run = self._by_worker(method, study, profile_to)
        self._verify(method, study)
        return run

    def _two_jobs(self) -> Run:
        """Both half studies as two jobs queued at once, run by a dicom worker per core (what
        ``cli up`` starts without being told), each worker warmed up first."""
        from adit.env import dicom_worker_processes

        assert self.destination is not None and self.warm_up_study is not None
        self._runs += 1
        workers = [
            Worker(self.workdir / f"worker-{self._runs}-two-jobs-{number}.log")
            for number in range(1, dicom_worker_processes() + 1)
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.wait_until_ready()
            # As many warm-up jobs as workers, queued at once: they spread over the workers as
            # the timed jobs will.
            self._run_jobs(workers, [self.warm_up_study] * len(workers), pseudonymized=True)
            self.destination.clear()
            return self._run_jobs(workers, self.half_studies, pseudonymized=False)
        finally:
            for worker in workers:
                worker.stop()

    def stage_costs(self) -> stages.StageCosts:
        """CPU per instance of each stage, measured in this process over the small study."""
        assert self.source_row is not None and self.destination_row is not None
        assert self.small_study is not None and self.study is not None
        self.set_direct_move(False)
        self.source_row.refresh_from_db()
        return stages.measure_stage_costs(
            self.source_row,
            self.destination_row,
            self.small_study.patient_id,
            self.small_study.study_uid,
            timed_instances=self.study.instances,
            pseudonym=PSEUDONYM,
            clear_destination=self.clear_destination,
        )

    def _by_worker(self, method: Method, study: Study, profile_to: Path | None) -> Run:
        assert self.destination is not None and self.warm_up_study is not None
        self._runs += 1
        worker = Worker(self.workdir / f"worker-{self._runs}-{method.key}.log", profile_to)
        try:
            worker.start()
            worker.wait_until_ready()
            # The first job of a worker pays for imports and first associations; a real worker
            # has long paid for them, so a small pseudonymized job warms this one up untimed.
            self._run_job(worker, self.warm_up_study, pseudonymized=True)
            self.destination.clear()
            self.set_direct_move(method.direct)
            try:
                return self._run_job(worker, study, pseudonymized=method.kind == Kind.PSEUDONYMIZED)
            finally:
                self.set_direct_move(False)
        finally:
            worker.stop()
            if worker.process is not None and worker.process.returncode not in (0, None):
                self.echo(f"(The worker exited with code {worker.process.returncode}.)")

    def _run_job(self, worker: Worker, study: Study, *, pseudonymized: bool) -> Run:
        """Queues one job with one task and waits for its success, sampling the worker."""
        return self._run_jobs([worker], [study], pseudonymized=pseudonymized)

    def _run_jobs(self, workers: list[Worker], studies: list[Study], *, pseudonymized: bool) -> Run:
        """Queues a job with one task per study, all at once, and waits until every task
        succeeded, sampling the workers (RSS: the largest worker's; CPU: all together)."""
        from adit.core.jobs.statuses import TaskStatus
        from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask

        jobs, task_pks = [], []
        for study in studies:
            job = SelectiveTransferJob.objects.create(owner=self.owner)
            task = SelectiveTransferTask.objects.create(
                job=job,
                source=self.source_row,
                destination=self.destination_row,
                patient_id=study.patient_id,
                study_uid=study.study_uid,
                pseudonym=PSEUDONYM if pseudonymized else "",
            )
            jobs.append(job)
            task_pks.append(task.pk)
        instances = sum(study.instances for study in studies)
        hwm_reset = all([worker.reset_high_water_mark() for worker in workers])

        def largest_rss() -> float:
            return max(worker.rss_mb() for worker in workers)

        rss_ready = largest_rss()
        samples: list[tuple[int, float]] = [(0, rss_ready)]
        cpu_workers = [worker.cpu_seconds() for worker in workers]
        cpu_orthanc = self.orthanc_cpu()
        # Fail rather than wait forever, but leave room for slow (profiled) runs.
        deadline = time.monotonic() + 120 + instances
        queued_at = datetime.datetime.now(datetime.UTC)
        started = time.perf_counter()
        for job in jobs:
            job.start_processing(verified=True)
        next_sample = time.monotonic() + RSS_SAMPLE_SECONDS
        tasks = SelectiveTransferTask.objects.filter(pk__in=task_pks)
        while True:
            states = list(tasks.values_list("pk", "status", "progress_done"))
            if all(status == TaskStatus.SUCCESS for _, status, _ in states):
                break
            done = sum(progress for _, _, progress in states)
            for pk, status, _ in states:
                if status in (TaskStatus.FAILURE, TaskStatus.WARNING, TaskStatus.CANCELED):
                    task = SelectiveTransferTask.objects.get(pk=pk)
                    logs = "\n".join(worker.log_tail() for worker in workers)
                    outcome = f"the task ended {TaskStatus(status).label}: {task.message}"
                    raise TransferFailed(
                        f"{outcome}\nTask log:\n{task.log}\nWorker log:\n{logs}",
                        failure_summary(outcome, "\n".join(worker.log() for worker in workers)),
                    )
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                outcome = (
                    f"the tasks were not all done after {time.perf_counter() - started:.0f} s "
                    f"({done} instances done)"
                )
                logs = "\n".join(worker.log() for worker in workers)
                raise TransferFailed(f"{outcome}:\n{logs}", failure_summary(outcome, logs))
            if time.monotonic() >= next_sample:
                samples.append((done, largest_rss()))
                next_sample += RSS_SAMPLE_SECONDS
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        samples.append((instances, largest_rss()))
        finished = list(SelectiveTransferTask.objects.filter(pk__in=task_pks))
        task_seconds = pickup = None
        if all(task.start is not None and task.end is not None for task in finished):
            first_start = min(task.start for task in finished if task.start is not None)
            last_end = max(task.end for task in finished if task.end is not None)
            task_seconds = (last_end - first_start).total_seconds()
            pickup = (first_start - queued_at).total_seconds()
        self._last_task = finished[-1]
        cpu_each = [
            worker.cpu_seconds() - before
            for worker, before in zip(workers, cpu_workers, strict=True)
        ]
        hwm = [worker.high_water_mark_mb() for worker in workers] if hwm_reset else []
        return Run(
            seconds=seconds,
            task_seconds=task_seconds,
            pickup_seconds=pickup,
            cpu_worker=sum(cpu_each),
            cpu_orthanc=self.orthanc_cpu() - cpu_orthanc,
            rss_ready_mb=rss_ready,
            peak_rss_mb=max(rss for _, rss in samples),
            hwm_mb=max((mb for mb in hwm if mb is not None), default=None),
            samples=samples,
            # A worker that burnt a fifth of the run's CPU or more worked on a task.
            busy_workers=sum(1 for cpu in cpu_each if cpu >= 0.2 * sum(cpu_each)),
        )

    def _verify(self, method: Method, study: Study) -> None:
        """B must hold exactly the study: every instance, nothing else."""
        assert self.destination is not None
        if method.kind != Kind.PSEUDONYMIZED:
            self.verify_copies([study])
            return
        held_total = self.destination.count_instances()
        uid = self._last_task.pseudonymized_study_uid
        if not uid or uid == study.study_uid:
            message = f"the task recorded no pseudonymized study UID ({uid!r})"
            raise TransferFailed(message, message)
        held = set(self.destination.study_instance_uids(uid))
        if held & study.sop_uids:
            message = "the pseudonymized copy kept original SOPInstanceUIDs"
            raise TransferFailed(message, message)
        if len(held) != study.instances or held_total != study.instances:
            message = (
                f"{DESTINATION_AE} holds {len(held)} instances under {uid} and {held_total} in "
                f"all; expected {study.instances}"
            )
            raise TransferFailed(message, message)

    # -- explanations -----------------------------------------------------------------------

    def profile(self, method: Method) -> ProfileSummary:
        """One more run of ``method`` with the worker under cProfile in every thread."""
        output = self.workdir / f"profile-{method.key}.prof"
        run = self.measure(method, profile_to=output)
        if not output.exists():
            raise BenchmarkError(f"The profiled worker wrote no statistics to {output}.")
        threads_file = output.with_suffix(".threads")
        threads = int(threads_file.read_text()) if threads_file.exists() else 0
        return common.summarize_profile(
            f"{method.label} (N={self.study_of(method).instances})",
            self.study_of(method).instances,
            pstats.Stats(str(output)),
            run.seconds,
            threads,
            key_functions=KEY_FUNCTIONS,
            top=PROFILE_TOP,
        )


# Functions whose cumulative time explains a transfer.
KEY_FUNCTIONS: list[common.KeyFunction] = [
    ("whole task (TransferProcessor.process)", "adit/core/transfer/pipeline.py", "process"),
    ("C-FIND of the study and its series on A", "adit/core/transfer/study.py", "find_study"),
    # ThreadedStream._run of an InstanceStream: fetch_study, or fetch_series per series when
    # pseudonymizing leaves series of excluded modalities out.
    (
        "fetch thread: C-GET from A (ThreadedStream._run)",
        "adit/core/dicom/read_ahead.py",
        "_run",
    ),
    ("fetch thread: C-STORE handler of the C-GET", "adit/core/dicom/dimse.py", "handle_store"),
    (
        "fetch thread: Dataset from the received file (read lazily)",
        "adit/core/dicom/dimse.py",
        "_arrived_dataset",
    ),
    ("fetch thread: hand-over (waits when full)", "adit/core/dicom/read_ahead.py", "_put"),
    ("store thread: waits for the next instance", "adit/core/dicom/read_ahead.py", "__iter__"),
    ("store thread: pseudonymize or stamp", "adit/core/transfer/modify.py", "__call__"),
    (
        "store thread: Pseudonymizer.pseudonymize",
        "adit/core/transfer/pseudonymizer.py",
        "pseudonymize",
    ),
    ("store thread: C-STORE to B per instance", "adit/core/dicom/dimse.py", "send"),
    ("pynetdicom send_c_store (encode, send, await)", "pynetdicom/association.py", "send_c_store"),
    (
        "store thread: C-STORE of the bytes as received",
        "adit/core/dicom/dimse.py",
        "_send_as_received",
    ),
    ("store thread: is it unchanged? (compare)", "adit/core/dicom/files.py", "unchanged_data_set"),
    ("pydicom encodes a Dataset (write_dataset)", "pydicom/filewriter.py", "write_dataset"),
    ("verify: counts per series on B (C-FIND)", "adit/core/transfer/destinations.py", "verify"),
    ("TaskControl.check (job status query)", "adit/core/jobs/processing.py", "check"),
    ("TaskControl.progress (progress update)", "adit/core/jobs/processing.py", "progress"),
    ("pynetdicom DUL reads PDUs", "pynetdicom/dul.py", "_is_transport_event"),
    ("pynetdicom state machine, per PDU", "pynetdicom/fsm.py", "do_action"),
    ("idle sleeps (pynetdicom reactors and others)", "~", "<built-in method time.sleep>"),
]


# -- reporting -----------------------------------------------------------------------------------


def result_rows(report: Report) -> list[list[str]]:
    header = [
        "method",
        "N",
        "s (median)",
        "min-max s",
        "inst/s",
        "vs Orthanc",
        "task s",
        "pickup s",
        "CPU s: worker",
        "Orthancs",
        "worker RSS MiB: ready",
        "peak",
        "VmHWM",
        "slope MiB/100",
    ]
    rows = [header]
    for result in report.results:
        seconds = [run.seconds for run in result.runs]
        rows.append(
            [
                result.method.label,
                str(result.instances),
                f"{result.seconds:.2f}",
                f"{min(seconds):.2f}-{max(seconds):.2f}",
                f"{result.rate:.0f}",
                f"{report.ratio(result):.2f}x",
                common.number(result.task_seconds, 2),
                common.number(result.pickup_seconds, 2),
                common.number(result.cpu_worker, 2),
                f"{result.cpu_orthanc:.2f}",
                common.number(result.rss_ready_mb),
                common.number(result.peak_rss_mb),
                common.number(result.hwm_mb),
                common.number(result.slope_mb_per_100, 2, sign=True),
            ]
        )
    return rows


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def memory_verdict(report: Report) -> tuple[bool, str]:
    """Whether the worker's peak memory stays flat with the study size, and why."""
    large, small = report.need("plain"), report.need("plain-small")
    growth_limit = max(FLAT_PEAK_MIN_MB, FLAT_PEAK_SHARE * report.study_mib)
    # Growth is what matters, and over the long runs: on the small study a few MiB of allocator
    # noise make a steep-looking slope either way.
    slopes = [
        result.slope_mb_per_100
        for result in report.results
        if result.method.by_worker
        and not result.method.small
        and result.slope_mb_per_100 is not None
    ]
    if large.peak_rss_mb is None or small.peak_rss_mb is None:
        return False, "the worker's memory was not measured"
    growth = large.peak_rss_mb - small.peak_rss_mb
    steepest = max(slopes) if slopes else None
    flat = growth <= growth_limit and (steepest is None or steepest <= FLAT_SLOPE_MB_PER_100)
    text = (
        f"worker peak RSS {large.peak_rss_mb:.0f} MiB at N={report.instances} vs "
        f"{small.peak_rss_mb:.0f} MiB at N={report.small_instances} ({growth:+.0f} MiB, limit "
        f"+{growth_limit:.0f}); steepest median in-run slope at N={report.instances} "
        f"{common.number(steepest, 2, sign=True)} MiB per 100 instances (limit "
        f"+{FLAT_SLOPE_MB_PER_100:g}; holding the study would be ~"
        f"{100 * report.study_mib / report.instances:.0f})"
    )
    return flat, text


def target_lines(report: Report) -> list[str]:
    plain, pseudonymized = report.need("plain"), report.need("pseudonymized")
    direct = report.need("plain-direct")
    ratio, direct_ratio = report.ratio(plain), report.ratio(direct)
    orthanc_rate = report.need("orthanc").rate
    pseudonymized_ratio = report.ratio(pseudonymized)
    two = report.need("two-jobs")
    two_factor = two.seconds / plain.seconds
    processes = f", {two.busy_workers} worker(s) busy" if two.busy_workers is not None else ""
    flat, memory_text = memory_verdict(report)
    return [
        f"{_verdict(ratio >= TARGET_PLAIN_RATIO)} plain >= {TARGET_PLAIN_RATIO}x Orthanc's own "
        f"C-MOVE, through the worker (fetch and store): {ratio:.2f}x ({plain.rate:.0f} vs "
        f"{orthanc_rate:.0f} instances/s)",
        f"{_verdict(pseudonymized_ratio >= TARGET_PSEUDONYMIZED_RATIO)} pseudonymized >= "
        f"{TARGET_PSEUDONYMIZED_RATIO}x Orthanc's own C-MOVE: {pseudonymized_ratio:.2f}x "
        f"({pseudonymized.rate:.0f} instances/s)",
        f"{_verdict(two_factor <= TARGET_TWO_JOBS_FACTOR)} two jobs of N/2 at once (a dicom "
        f"worker per core, as `cli up` starts them) within {TARGET_TWO_JOBS_FACTOR}x the time "
        f"of one job of N: {two.seconds:.2f} s vs {plain.seconds:.2f} s = {two_factor:.2f}x"
        f"{processes}",
        f"{_verdict(flat)} worker peak memory does not grow with the study size: {memory_text}",
        f"(not a target: plain with the source's C-MOVE straight to the destination, the "
        f"per-server option: {direct_ratio:.2f}x, {direct.rate:.0f} instances/s)",
    ]


def stage_rows(report: Report) -> list[list[str]]:
    """CPU ms per instance of each stage, the worker's measured CPU and the ceiling."""
    costs = report.stage_costs
    assert costs is not None
    header = [
        "method",
        *STAGE_LABELS,
        "sum",
        "worker CPU (run)",
        "Orthancs (run)",
        "ceiling inst/s: one process",
        "all cores",
        "ceiling vs Orthanc",
        "measured inst/s",
        "of ceiling",
    ]
    rows = [header]
    orthanc_rate = report.need("orthanc").rate
    for key, pseudonymized in (("plain", False), ("pseudonymized", True)):
        result = report.need(key)
        per_stage = costs.of(pseudonymized)
        limit = stages.ceiling(per_stage, 1000 * result.cpu_orthanc / result.instances)
        worker_ms = (
            1000 * result.cpu_worker / result.instances if result.cpu_worker is not None else None
        )
        rows.append(
            [
                result.method.label,
                *[f"{per_stage[stage]:.2f}" for stage in stages.STAGES],
                f"{limit.adit_ms:.2f}",
                common.number(worker_ms, 2),
                f"{limit.orthanc_ms:.2f}",
                f"{limit.one_process:.0f}",
                f"{limit.machine:.0f}",
                f"{limit.one_process / orthanc_rate:.2f}x / {limit.machine / orthanc_rate:.2f}x",
                f"{result.rate:.0f}",
                f"{result.rate / limit.rate:.0%}",
            ]
        )
    return rows


STAGE_LABELS = [f"{stage} ms" for stage in stages.STAGES]


def stage_reading(report: Report) -> str:
    """What the stage costs say about the targets."""
    costs = report.stage_costs
    assert costs is not None
    orthanc_rate = report.need("orthanc").rate
    parts = [
        f"Stage costs: CPU ms per instance, measured in the benchmark's process with the "
        f"worker's code over the {costs.instances}-instance study (receive = the operator's "
        "C-GET less decoding; send = its C-STORE of unchanged instances less the unchanged "
        "check; verify = one check of the study per instance of the timed one). The ceiling "
        "is the lower of one worker process's (its stages on one core: the GIL) and the "
        "machine's (all cores for ADIT's stages and the Orthancs' CPU of the timed run)."
    ]
    for key, pseudonymized, target in (
        ("plain", False, TARGET_PLAIN_RATIO),
        ("pseudonymized", True, TARGET_PSEUDONYMIZED_RATIO),
    ):
        result = report.need(key)
        per_stage = costs.of(pseudonymized)
        limit = stages.ceiling(per_stage, 1000 * result.cpu_orthanc / result.instances)
        largest = max(per_stage, key=lambda stage: per_stage[stage])
        needed = 1000.0 / (target * orthanc_rate)
        needed_machine = 1000.0 * limit.cores / (target * orthanc_rate) - limit.orthanc_ms
        parts.append(
            f"{key.capitalize()}: the stages sum to {limit.adit_ms:.1f} ms, "
            f"{largest} the largest ({per_stage[largest]:.1f} ms); with these costs one "
            f"worker process allows at most {limit.one_process:.0f} instances/s "
            f"({limit.one_process / orthanc_rate:.2f}x Orthanc's own C-MOVE) and even a "
            f"pipeline spread over all {limit.cores} cores at most {limit.machine:.0f}/s "
            f"({limit.machine / orthanc_rate:.2f}x); the job reached "
            f"{result.rate / limit.rate:.0%} of the lower. The target ({target}x) needs at most "
            f"{needed:.1f} ms of ADIT CPU per instance in one process, or "
            f"{max(0.0, needed_machine):.1f} ms spread over all cores."
        )
    return " ".join(parts)


def reading(report: Report) -> str:
    """A paragraph on where the time goes, built from this session's measurements."""
    n = report.instances
    orthanc, plain = report.need("orthanc"), report.need("plain")
    pseudonymized, small = report.need("pseudonymized"), report.need("plain-small")
    parts = [
        f"Orthanc copies the study in {orthanc.ms_per_instance:.1f} ms per instance "
        f"({1000 * orthanc.cpu_orthanc / n:.1f} ms CPU of both Orthancs). ADIT needs "
        f"{plain.ms_per_instance:.1f} ms plain and {pseudonymized.ms_per_instance:.1f} ms "
        f"pseudonymized, so pseudonymizing costs "
        f"{pseudonymized.ms_per_instance - plain.ms_per_instance:.1f} ms per instance.",
    ]
    if plain.cpu_worker is not None and pseudonymized.cpu_worker is not None:
        parts.append(
            f"The worker burns {1000 * plain.cpu_worker / n:.1f} ms CPU per instance plain "
            f"({100 * plain.cpu_worker / plain.seconds:.0f}% of one core over the run) and "
            f"{1000 * pseudonymized.cpu_worker / n:.1f} ms pseudonymized "
            f"({100 * pseudonymized.cpu_worker / pseudonymized.seconds:.0f}%); the Orthancs "
            f"{1000 * plain.cpu_orthanc / n:.1f} ms during the plain transfer."
        )
    if plain.task_seconds is not None and plain.pickup_seconds is not None:
        parts.append(
            f"Of the plain {plain.seconds:.2f} s, the worker took {plain.pickup_seconds:.2f} s "
            f"to claim the task and the task itself ran {plain.task_seconds:.2f} s (claim to "
            f"outcome, the verifying C-FIND included); the small study (N={small.instances}) "
            f"went at {small.rate:.0f} instances/s against {plain.rate:.0f} at N={n}."
        )
    direct = report.need("plain-direct")
    parts.append(
        f"With A's C-MOVE straight to B (no instance passes the worker) the plain transfer "
        f"takes {direct.ms_per_instance:.1f} ms per instance, {report.ratio(direct):.2f}x "
        "Orthanc's own C-MOVE"
        + (
            f"; the worker burns {1000 * direct.cpu_worker / n:.1f} ms CPU per instance "
            "ordering the move, following its progress and checking the counts."
            if direct.cpu_worker is not None
            else "."
        )
    )
    for profile in report.profiles:
        wall = profile.wall_seconds
        task, _ = profile.cumulative("whole task")
        fetch, _ = profile.cumulative("fetch thread: C-GET")
        store, _ = profile.cumulative("store thread: C-STORE")
        waits, _ = profile.cumulative("store thread: waits")
        put, _ = profile.cumulative("fetch thread: hand-over")
        verify, _ = profile.cumulative("verify")
        modify, _ = profile.cumulative("store thread: pseudonymize or stamp")
        parts.append(
            f"Under cProfile ({profile.label}: {wall:.1f} s, {profile.threads} threads) the "
            f"worker's two tasks (the 5-instance warm-up and the timed one) ran {task:.1f} s: "
            f"the fetch thread's C-GET {fetch:.1f} s, of which {put:.1f} s waiting to hand "
            "over to the full queue; the store thread's C-STOREs "
            f"{store:.1f} s, waiting for the next instance {waits:.1f} s, modifying "
            f"{modify:.1f} s; the verifying C-FIND {verify:.1f} s."
        )
    parts.append(common.load_sentence(report) + ".")
    return " ".join(parts)


def format_markdown_section(report: Report) -> str:
    lines = [
        *common.section_head(
            report,
            f"transfer, N={report.instances} (and {report.small_instances}), "
            f"repeat={report.repeat}",
        ),
        f"- Studies: {report.instances} CT instances, {ROWS}x{COLUMNS}, 16 bit, "
        f"{report.study_mib:.0f} MiB in Orthanc, and {report.small_instances} instances "
        f"({report.small_study_mib:.0f} MiB); uploaded to A by REST in "
        f"{report.upload_seconds:.1f} s.",
        f"- Orthanc A ({SOURCE_AE}) -> Orthanc B ({DESTINATION_AE}) on loopback. Orthanc: B's "
        f"`POST /modalities/{SOURCE_NAME}/move` (B's C-MOVE SCU, A C-STOREs to B). ADIT: one "
        "SelectiveTransferJob with one task, queued with `start_processing(verified=True)` and "
        "run by a fresh `manage.py worker --queue dicom` (warmed up with a 5-instance job), "
        "C-GET from A, C-STORE to B, then the check (C-FIND of B's series, comparing the "
        "instances per series with what was sent; instances listed only where a count "
        "differs); *direct C-MOVE*: the same job with A's row set to \"C-MOVE to "
        'destinations" (and study-root C-MOVE), so A C-MOVEs the study straight to B and the '
        "check compares B's counts per series with A's. Timed from queueing until the task "
        f"reads Success (polled every {POLL_SECONDS} s). Each method ran {report.repeat} "
        "times, round by round; seconds are the median. *task s* is the task's own "
        "start-to-end, *pickup s* queueing to claim. CPU is per run (median). Worker RSS: "
        "*ready* before queueing, *peak* the highest psutil sample "
        f"(every {RSS_SAMPLE_SECONDS} s; highest of all runs), *VmHWM* the kernel's high-water "
        "mark (reset before the job; highest of all runs), *slope* the least-squares RSS slope "
        "over instances done (median of runs).",
        "",
        common.markdown_table(result_rows(report)),
        "",
        "Targets (issue):",
        "",
        *[f"- {line}" for line in target_lines(report)],
        "",
        "Reading: " + reading(report),
        "",
    ]
    if report.stage_costs is not None:
        lines += [common.markdown_table(stage_rows(report)), "", stage_reading(report), ""]
    if report.failures:
        lines += [
            "Failed runs (they delivered less than the study; not counted, each run again):",
            "",
            *[f"- {failure}" for failure in report.failures],
            "",
        ]
    for profile in report.profiles:
        lines += common.profile_details(
            profile,
            f"cProfile of the worker during one {profile.label} ({profile.wall_seconds:.1f} s "
            f"under the profiler, {profile.threads} threads merged; the worker's start-up and "
            "warm-up included)",
            PROFILE_TOP,
        )
    return "\n".join(lines)


def engine_versions() -> dict[str, str]:
    """Versions that matter to the engine beyond those the fetch benchmark records."""
    from django.db import connection

    versions: dict[str, str] = {}
    for package in ("django", "procrastinate", "dicognito", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    with contextlib.suppress(Exception), connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        row = cursor.fetchone()
        if row:
            versions["postgresql"] = str(row[0]).split()[0]
    return versions


# -- entry point -------------------------------------------------------------------------------


def once_more_on_failure(
    label: str, attempt: Callable[[], _Result], failures: list[str], echo: Echo
) -> _Result:
    """Runs ``attempt``; a run that did not deliver is recorded and run once more.

    A failed run is no number, but one rare failure should not cost the whole session: it is
    listed in the report and replaced by another run. A second failure of the same method ends
    the benchmark.
    """
    while True:
        try:
            return attempt()
        except TransferFailed as err:
            earlier = sum(1 for failure in failures if failure.startswith(label + ":"))
            failures.append(f"{label}: {err.summary}")
            if earlier:
                raise
            echo(f"FAILED {label}: {err.summary}; not counted, running it once more ...")


def run_transfer_benchmark(
    database_server: DatabaseServer,
    instances: int = 1000,
    repeat: int = 3,
    *,
    small_instances: int | None = None,
    profile: bool = True,
    record: bool = True,
    results_file: Path = RESULTS_FILE,
    echo: Echo = print,
) -> Report:
    """Runs the transfer benchmark in a throwaway database; returns the report it printed.

    Django must not be set up yet: this sets it up with the test settings on the throwaway
    database.

    Args:
        database_server: The PostgreSQL server to create the throwaway database on.
        instances: Slices of the large CT study.
        repeat: Runs per method; the median counts.
        small_instances: Slices of the small study (default: a quarter of ``instances``).
        profile: Whether to add a plain run (N) and a pseudonymized one (small study) by a
            worker under cProfile.
        record: Whether to append the results to ``results_file``.
        results_file: The Markdown file the results are appended to.
        echo: Where progress and results are printed.
    """
    small = small_instances if small_instances is not None else max(1, instances // 4)
    if instances < 1 or small < 1 or repeat < 1:
        raise ValueError("instances, small_instances and repeat must be at least 1.")
    if small >= instances:
        raise ValueError("small_instances must be smaller than instances.")
    load_before = common.load_average()
    with common.terminate_as_interrupt():
        echo(f"Creating the throwaway database {BENCH_DATABASE} ...")
        # Left to right: Django is set up (and its logging configured) before the log is quieted.
        with (
            bench_database(database_server),
            # Hides procrastinate's line per deferred job in this process; warnings still show.
            common.quiet_logger("procrastinate"),
            TransferBenchmark(instances, small, echo) as bench,
        ):
            bench.start()
            assert bench.source is not None
            assert bench.study is not None and bench.small_study is not None
            results = [MethodResult(method, bench.study_of(method).instances) for method in METHODS]
            width = max(len(method.label) for method in METHODS)
            failures: list[str] = []
            for round_number in range(1, repeat + 1):
                for result in results:
                    run = once_more_on_failure(
                        f"{result.method.label} (N={result.instances})",
                        functools.partial(bench.measure, result.method),
                        failures,
                        echo,
                    )
                    result.runs.append(run)
                    echo(
                        f"[{round_number}/{repeat}] {result.method.label:<{width}} "
                        f"N={result.instances:<5} {run.seconds:6.2f} s "
                        f"{result.instances / run.seconds:6.0f} inst/s"
                        + (f", worker peak {run.peak_rss_mb:.0f} MiB" if run.peak_rss_mb else "")
                    )
            report = Report(
                instances=instances,
                small_instances=small,
                repeat=repeat,
                study_mib=bench.study.mib,
                small_study_mib=bench.small_study.mib,
                upload_seconds=bench.upload_seconds,
                machine=common.machine(),
                versions={**common.versions(bench.source), **engine_versions()},
                results=results,
                load_before=load_before,
                failures=failures,
            )
            echo(f"Measuring the stages over {small} instances in this process ...")
            report.stage_costs = bench.stage_costs()
            if profile:
                for method in PROFILED_METHODS:
                    echo(
                        f"Profiling the worker during one {method.label}, "
                        f"N={bench.study_of(method).instances} ..."
                    )
                    report.profiles.append(
                        once_more_on_failure(
                            f"profiled {method.label} (N={bench.study_of(method).instances})",
                            functools.partial(bench.profile, method),
                            failures,
                            echo,
                        )
                    )
            report.load_after = common.load_average()
    echo(f"Dropped the throwaway database {BENCH_DATABASE}.")
    common.print_results(
        echo,
        common.console_table(result_rows(report))
        + ("\n\n" + common.console_table(stage_rows(report)) if report.stage_costs else ""),
        [
            *target_lines(report),
            *[f"Failed run (not counted): {failure}" for failure in report.failures],
        ],
        reading(report) + (" " + stage_reading(report) if report.stage_costs else ""),
        section=(lambda: format_markdown_section(report)) if record else None,
        results_file=results_file,
    )
    return report


if __name__ == "__main__":
    sys.exit(_wrapped_manage(sys.argv[1:]))
