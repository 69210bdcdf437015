"""The batch transfer benchmark: ``uv run cli bench batch-transfer``.

What a task costs beyond its instances. Orthanc A (the source) holds N small CT studies of M
instances each (default 100 x 10, 512x512, 16 bit, about 0.5 MB an instance) and one study of
N x M instances of the same kind; Orthanc B (the destination) starts empty. The same two
Orthancs as in ``bench transfer`` (``OrthancPair``), the same throwaway database and the same
worker process (``manage.py worker --queue dicom`` at its default concurrency). Copied from A
to B:

* by Orthanc itself, the baseline: B's REST API ``POST /modalities/A/move`` with all N
  StudyInstanceUIDs in one request, so B's C-MOVE SCU sends A one C-MOVE per study over one
  association, and A C-STOREs each study to B. For comparison also one such request per study
  (an association and a REST call each) and one request for the one large study, which give
  Orthanc's own cost per study;
* by ADIT: one batch transfer job (``BatchTransferJob.create_with_tasks``, ``check_first``
  off, no pseudonyms) of the N studies, one task each, run by the worker's TransferProcessor
  (C-FIND of the study and its series on A, C-GET from A, C-STORE to B, then the check of B's
  counts per series), timed from queueing (creating the job, its tasks and their queue
  entries) to the job's end;
* by ADIT, the same job of the one large study: the instances are the same, the tasks 1 instead
  of N, so (batch job - one-study job) / N is ADIT's overhead per task, in wall seconds at the
  worker's concurrency;
* both ADIT jobs again with A's row set to "C-MOVE to destinations" (``moves_to_destinations``
  and study-root C-MOVE), where each task asks A to C-MOVE its study straight to B.

Every method runs ``repeat`` times, round by round; medians count. B is cleared before every
run and must hold every study afterwards, each instance once and nothing else; a run that
misses one is an error, listed and run once more (a second failure ends the benchmark). One
worker serves all rounds, warmed up first; with ``profile`` one more batch job is run by a
worker under cProfile in every thread, to tell where a task's time goes.
"""

from __future__ import annotations

import datetime
import functools
import pstats
import statistics
import time
from dataclasses import dataclass, field

from bench import common
from bench.common import RESULTS_FILE, BenchmarkError, Echo, ProfileSummary
from bench.transfer import (
    COLUMNS,
    DESTINATION_AE,
    KEY_FUNCTIONS,
    ROWS,
    SOURCE_AE,
    SOURCE_NAME,
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

TARGET_RATIO = 0.5  # the issue: the batch job >= 0.5x Orthanc's own C-MOVE of the studies
LARGE_SEED = 0
FIRST_SMALL_SEED = 1  # study i of the batch is made from seed FIRST_SMALL_SEED + i
POLL_SECONDS = 0.05
PROFILE_TOP = 15
# The profiled job: enough tasks for per-task averages, few enough to keep the session short
# (cProfile slows the worker 2-3x).
PROFILED_STUDIES = 25


@dataclass(frozen=True)
class Method:
    """One way of copying the studies from A to B.

    Attributes:
        key: Short name.
        label: Name in the table.
        by_worker: An ADIT job run by the worker, else Orthanc's own C-MOVE.
        batch: The N small studies, else the one study of as many instances.
        request_per_study: Orthanc only: one REST call (and association) per study.
        direct: ADIT only: A's row has "C-MOVE to destinations" on.
    """

    key: str
    label: str
    by_worker: bool
    batch: bool
    request_per_study: bool = False
    direct: bool = False


METHODS = [
    Method("orthanc", "Orthanc C-MOVE, one request", by_worker=False, batch=True),
    Method(
        "orthanc-each",
        "Orthanc C-MOVE, a request per study",
        by_worker=False,
        batch=True,
        request_per_study=True,
    ),
    Method("orthanc-one", "Orthanc C-MOVE, one study", by_worker=False, batch=False),
    Method("batch", "ADIT batch job, C-GET + C-STORE", by_worker=True, batch=True),
    Method("one", "ADIT job of one study, C-GET + C-STORE", by_worker=True, batch=False),
    Method(
        "batch-direct", "ADIT batch job, direct C-MOVE", by_worker=True, batch=True, direct=True
    ),
    Method(
        "one-direct",
        "ADIT job of one study, direct C-MOVE",
        by_worker=True,
        batch=False,
        direct=True,
    ),
]


@dataclass
class Run:
    """One timed copy.

    Attributes:
        seconds: From queueing (or calling Orthanc) until the job read as ended (or Orthanc
            answered).
        cpu_orthanc: CPU seconds of both Orthancs meanwhile.
        cpu_worker: CPU seconds of the worker meanwhile.
        queue_seconds: Creating the job, its tasks and their queue entries (in this process).
        pickup_seconds: From queueing until the first task was claimed.
        task_seconds: Each task's own claim to end.
    """

    seconds: float
    cpu_orthanc: float
    cpu_worker: float | None = None
    queue_seconds: float | None = None
    pickup_seconds: float | None = None
    task_seconds: list[float] = field(default_factory=list)


class MethodResult(common.MethodResultBase[Method, Run]):
    @property
    def cpu_worker(self) -> float | None:
        return self.median_of("cpu_worker")

    @property
    def queue_seconds(self) -> float | None:
        return self.median_of("queue_seconds")

    @property
    def pickup_seconds(self) -> float | None:
        return self.median_of("pickup_seconds")

    @property
    def task_seconds(self) -> float | None:
        """The median task of all runs."""
        seconds = [seconds for run in self.runs for seconds in run.task_seconds]
        return statistics.median(seconds) if seconds else None

    def busy_share(self, concurrency: int) -> float | None:
        """The share of the worker's task slots that ran a task, from queueing to the end."""
        shares = [
            sum(run.task_seconds) / (run.seconds * concurrency)
            for run in self.runs
            if run.task_seconds
        ]
        return statistics.median(shares) if shares else None


@dataclass
class Report(common.ResultsByKey[MethodResult]):
    studies: int
    instances: int  # per study of the batch
    repeat: int
    concurrency: int
    study_mib: float  # the N studies together
    large_study_mib: float
    upload_seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    results: list[MethodResult]
    load_before: float
    load_after: float = 0.0
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    profile: ProfileSummary | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def total_instances(self) -> int:
        return self.studies * self.instances

    def ratio(self, result: MethodResult) -> float:
        """Throughput relative to Orthanc's C-MOVE of the N studies in one request."""
        return self.need("orthanc").seconds / result.seconds

    def per_study_ms(self, batch_key: str, one_key: str) -> float:
        """What the N studies cost beyond one study of as many instances, per study."""
        return 1000 * (self.need(batch_key).seconds - self.need(one_key).seconds) / self.studies

    def per_study_cpu_ms(self, batch_key: str, one_key: str) -> float | None:
        batch, one = self.need(batch_key).cpu_worker, self.need(one_key).cpu_worker
        if batch is None or one is None:
            return None
        return 1000 * (batch - one) / self.studies


class BatchTransferBenchmark(OrthancPair):
    """The two Orthancs with the studies, the rows and the runs of one session."""

    def __init__(self, studies: int, instances: int, echo: Echo):
        super().__init__("adit-bench-batch-transfer-", echo)
        self.study_count = studies
        self.instances = instances
        self.studies: list[Study] = []
        self.large_study: Study | None = None
        self.upload_seconds = 0.0

    def start(self) -> None:
        self.start_servers()
        total = self.study_count * self.instances
        self.echo(
            f"Uploading {self.study_count} CT studies of {self.instances} instances and one of "
            f"{total} ({ROWS}x{COLUMNS}, 16 bit) to Orthanc {SOURCE_AE} ..."
        )
        started = time.perf_counter()
        self.studies = [
            self.upload(self.instances, FIRST_SMALL_SEED + number)
            for number in range(self.study_count)
        ]
        self.large_study = self.upload(total, LARGE_SEED)
        self.upload_seconds = time.perf_counter() - started
        if (
            len({study.study_uid for study in [*self.studies, self.large_study]})
            != len(self.studies) + 1
        ):
            raise BenchmarkError("Two of the synthetic studies share a StudyInstanceUID.")
        self.echo(f"Uploaded {2 * total} instances in {self.upload_seconds:.1f} s.")
        self.create_rows()

    def studies_of(self, method: Method) -> list[Study]:
        if method.batch:
            return self.studies
        assert self.large_study is not None
        return [self.large_study]

    def measure(
        self, method: Method, worker: Worker | None, studies: list[Study] | None = None
    ) -> Run:
        """Copies the method's studies (or ``studies``) from A to B once and checks B."""
        self.clear_destination()
        studies = studies if studies is not None else self.studies_of(method)
        if not method.by_worker:
            run = self._orthanc_move(studies, per_study=method.request_per_study)
        else:
            assert worker is not None
            self.set_direct_move(method.direct)
            try:
                run = self.run_job(worker, studies)
            finally:
                self.set_direct_move(False)
        self.verify_copies(studies)
        return run

    def _orthanc_move(self, studies: list[Study], *, per_study: bool) -> Run:
        if not per_study:
            move = self.orthanc_move([study.study_uid for study in studies])
            return Run(seconds=move.seconds, cpu_orthanc=move.cpu_orthanc)
        moves = [self.orthanc_move([study.study_uid]) for study in studies]
        return Run(
            seconds=sum(move.seconds for move in moves),
            cpu_orthanc=sum(move.cpu_orthanc for move in moves),
        )

    def run_job(self, worker: Worker, studies: list[Study]) -> Run:
        """Queues one batch transfer job of ``studies`` and waits for its end."""
        from adit.batch_transfer.batch_file import StudyRequest
        from adit.batch_transfer.models import BatchTransferJob
        from adit.core.jobs.statuses import JobStatus, TaskStatus
        from adit.core.transfer.forms import TransferChoices

        assert self.destination_row is not None
        requests = [
            StudyRequest(
                patient_id=study.patient_id,
                study_uid=study.study_uid,
                pseudonym="",
                lines=[line],
                line_series_uids=[""],
            )
            for line, study in enumerate(studies, start=2)
        ]
        options = TransferChoices(destination=self.destination_row)
        # Fail rather than wait forever, but leave room for slow (profiled) runs.
        deadline = time.monotonic() + 120 + sum(study.instances for study in studies) / 10
        cpu_worker, cpu_orthanc = worker.cpu_seconds(), self.orthanc_cpu()
        queued_at = datetime.datetime.now(datetime.UTC)
        started = time.perf_counter()
        job = BatchTransferJob.create_with_tasks(
            owner=self.owner,
            source=self.source_row,
            studies=requests,
            options=options,
            check_first=False,
        )
        queue_seconds = time.perf_counter() - started
        jobs = BatchTransferJob.objects.filter(pk=job.pk)
        ended = (JobStatus.SUCCESS, JobStatus.WARNING, JobStatus.FAILURE, JobStatus.CANCELED)
        while (status := jobs.values_list("status", flat=True).get()) not in ended:
            worker.check_alive()
            if time.monotonic() > deadline:
                done = job.tasks.filter(status=TaskStatus.SUCCESS).count()
                outcome = (
                    f"the job was still {JobStatus(status).label} after "
                    f"{time.perf_counter() - started:.0f} s ({done} of {len(studies)} tasks done)"
                )
                raise TransferFailed(
                    f"{outcome}:\n{worker.log_tail()}", failure_summary(outcome, worker.log())
                )
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        cpu_worker = worker.cpu_seconds() - cpu_worker
        cpu_orthanc = self.orthanc_cpu() - cpu_orthanc
        if status != JobStatus.SUCCESS:
            failed = list(
                job.tasks.exclude(status=TaskStatus.SUCCESS).values_list("study_uid", "message")[:3]
            )
            outcome = f"the job ended {JobStatus(status).label}: {failed}"
            raise TransferFailed(
                f"{outcome}\nWorker log:\n{worker.log_tail()}",
                failure_summary(outcome, worker.log()),
            )
        times = list(job.tasks.values_list("start", "end"))
        starts = [start for start, _ in times if start is not None]
        return Run(
            seconds=seconds,
            cpu_orthanc=cpu_orthanc,
            cpu_worker=cpu_worker,
            queue_seconds=queue_seconds,
            pickup_seconds=(min(starts) - queued_at).total_seconds() if starts else None,
            task_seconds=[
                (end - start).total_seconds()
                for start, end in times
                if start is not None and end is not None
            ],
        )

    def warm_up(self, worker: Worker, *, direct_too: bool = True) -> None:
        """A small job (and a small direct one), untimed: imports and first associations, which
        a long-running worker paid for long ago."""
        from django.conf import settings

        studies = self.studies[: settings.DICOM_WORKER_CONCURRENCY]
        for direct in (False, True) if direct_too else (False,):
            self.set_direct_move(direct)
            try:
                self.run_job(worker, studies)
            finally:
                self.set_direct_move(False)
            self.clear_destination()

    def profile(self, method: Method) -> ProfileSummary:
        """One more run of ``method``, of at most PROFILED_STUDIES studies, by a fresh worker
        under cProfile in every thread."""
        studies = self.studies_of(method)[:PROFILED_STUDIES]
        output = self.workdir / f"profile-{method.key}.prof"
        worker = Worker(self.workdir / f"worker-profiled-{method.key}.log", profile_to=output)
        worker.start()
        try:
            worker.wait_until_ready()
            # Plain only, so that the calls per task in the profile are those of one kind.
            self.warm_up(worker, direct_too=False)
            run = self.measure(method, worker, studies)
        finally:
            worker.stop()
        if not output.exists():
            raise BenchmarkError(f"The profiled worker wrote no statistics to {output}.")
        threads_file = output.with_suffix(".threads")
        threads = int(threads_file.read_text()) if threads_file.exists() else 0
        return common.summarize_profile(
            f"{method.label} ({len(studies)} tasks)",
            sum(study.instances for study in studies),
            pstats.Stats(str(output)),
            run.seconds,
            threads,
            key_functions=BATCH_KEY_FUNCTIONS,
            top=PROFILE_TOP,
        )


# What a task does besides moving instances, then what moving them does (``bench transfer``'s).
BATCH_KEY_FUNCTIONS: list[common.KeyFunction] = [
    ("task: run_task (claim to outcome)", "adit/core/jobs/processing.py", "run_task"),
    ("task: claim (UPDATE, re-read)", "adit/core/jobs/models.py", "claim"),
    ("task: job status recount", "adit/core/jobs/models.py", "refresh_status"),
    ("task: may the job change", "adit/core/jobs/processing.py", "_job_may_change"),
    ("task: record the study found", "adit/core/transfer/models.py", "record_study"),
    ("association set-up (AE.associate)", "pynetdicom/ae.py", "associate"),
    ("association release (Association.release)", "pynetdicom/association.py", "release"),
    ("association closed (_wait_until_closed)", "adit/core/dicom/dimse.py", "_wait_until_closed"),
    (
        "C-GET: image-level C-FIND of the SOP classes",
        "adit/core/dicom/operator.py",
        "_study_sop_classes",
    ),
    ("slots of a stream, take and give back", "adit/core/association_slots.py", "reserved"),
    (
        "slot of an association, take and give back",
        "adit/core/association_slots.py",
        "association_slot",
    ),
    (
        "procrastinate fetch_job (coroutine, awaits not counted)",
        "procrastinate/manager.py",
        "fetch_job",
    ),
    (
        "procrastinate finish_job (coroutine, awaits not counted)",
        "procrastinate/manager.py",
        "finish_job",
    ),
    *KEY_FUNCTIONS,
]


# -- reporting -----------------------------------------------------------------------------------


def result_rows(report: Report) -> list[list[str]]:
    rows = [
        [
            "method",
            "tasks x inst",
            "s (median)",
            "min-max s",
            "inst/s",
            "vs Orthanc",
            "queueing s",
            "first claim s",
            "task s (median)",
            "slots busy",
            "CPU s: worker",
            "Orthancs",
        ]
    ]
    for result in report.results:
        method = result.method
        seconds = [run.seconds for run in result.runs]
        count = report.studies if method.batch else 1
        per = report.instances if method.batch else report.total_instances
        busy = result.busy_share(report.concurrency)
        rows.append(
            [
                method.label,
                f"{count} x {per}",
                f"{result.seconds:.2f}",
                f"{min(seconds):.2f}-{max(seconds):.2f}",
                f"{result.rate:.0f}",
                f"{report.ratio(result):.2f}x",
                common.number(result.queue_seconds, 2),
                common.number(result.pickup_seconds, 2),
                common.number(result.task_seconds, 2),
                "-" if busy is None else f"{100 * busy:.0f}%",
                common.number(result.cpu_worker, 2),
                f"{result.cpu_orthanc:.2f}",
            ]
        )
    return rows


def target_lines(report: Report) -> list[str]:
    orthanc = report.need("orthanc")
    lines = []
    for batch_key, one_key, how in (
        ("batch", "one", "through the worker (C-GET + C-STORE)"),
        ("batch-direct", "one-direct", "direct C-MOVE"),
    ):
        result = report.need(batch_key)
        ratio = report.ratio(result)
        lines.append(
            f"{'PASS' if ratio >= TARGET_RATIO else 'MISS'} batch job of {report.studies} "
            f"studies >= {TARGET_RATIO}x Orthanc's own C-MOVE of them, {how}: {ratio:.2f}x "
            f"({result.seconds:.2f} s vs {orthanc.seconds:.2f} s); with no cost per task "
            f"(the job of one study of as many instances) {report.ratio(report.need(one_key)):.2f}x"
        )
    lines.append(
        f"Per-task overhead: {report.per_study_ms('batch', 'one'):.0f} ms through the worker, "
        f"{report.per_study_ms('batch-direct', 'one-direct'):.0f} ms with the direct C-MOVE "
        f"((batch job - job of one study of {report.total_instances} instances) / "
        f"{report.studies}, wall time at {report.concurrency} tasks at a time); Orthanc's own "
        f"per study: {report.per_study_ms('orthanc', 'orthanc-one'):.0f} ms in one request, "
        f"{report.per_study_ms('orthanc-each', 'orthanc-one'):.0f} ms with a request each"
    )
    return lines


def _per_call_ms(profile: ProfileSummary, prefix: str) -> tuple[float, int]:
    seconds, calls = profile.cumulative(prefix)
    return (1000 * seconds / calls if calls else 0.0), calls


def reading(report: Report) -> str:
    n = report.studies
    batch, one = report.need("batch"), report.need("one")
    parts = [
        f"Orthanc copies the {n} studies in {report.need('orthanc').seconds:.2f} s with one "
        f"request and {report.need('orthanc-each').seconds:.2f} s with a request per study, "
        f"the one study of {report.total_instances} instances in "
        f"{report.need('orthanc-one').seconds:.2f} s. ADIT's batch job takes "
        f"{batch.seconds:.2f} s, the job of the one study {one.seconds:.2f} s: "
        f"{report.per_study_ms('batch', 'one'):.0f} ms more per task at "
        f"{report.concurrency} tasks at a time.",
    ]
    cpu = report.per_study_cpu_ms("batch", "one")
    if cpu is not None and batch.cpu_worker is not None:
        parts.append(
            f"The worker burns {cpu:.0f} ms CPU more per task ({batch.cpu_worker:.1f} s against "
            f"{one.cpu_worker:.1f} s; {100 * batch.cpu_worker / batch.seconds:.0f}% of one core "
            f"over the batch job), the Orthancs "
            f"{1000 * (batch.cpu_orthanc - one.cpu_orthanc) / n:.0f} ms more per study; on two "
            "cores the worker, both Orthancs and PostgreSQL compete."
        )
    busy = batch.busy_share(report.concurrency)
    if batch.task_seconds is not None and batch.queue_seconds is not None and busy is not None:
        parts.append(
            f"Creating the job with its {n} tasks and queue entries took "
            f"{batch.queue_seconds:.2f} s (timed, in the bench's process); the first task was "
            f"claimed {common.number(batch.pickup_seconds, 2)} s after queueing; a task ran "
            f"{1000 * batch.task_seconds:.0f} ms (median, claim to end, against "
            f"{1000 * report.instances * one.seconds / report.total_instances:.0f} ms of the "
            f"one-study job's time for {report.instances} instances), and the "
            f"{report.concurrency} task slots were busy {100 * busy:.0f}% of the job's time."
        )
    parts.append(
        f"With the direct C-MOVE the batch job takes {report.need('batch-direct').seconds:.2f} "
        f"s against {report.need('one-direct').seconds:.2f} s for the one study: "
        f"{report.per_study_ms('batch-direct', 'one-direct'):.0f} ms per task."
    )
    profile = report.profile
    if profile is not None:
        task_ms, tasks = _per_call_ms(profile, "task: run_task")
        pieces = []
        for prefix, what in (
            ("task: claim", "claim"),
            ("C-FIND of the study and its series", "C-FINDs of the study and its series on A"),
            ("C-GET: image-level C-FIND", "C-FIND of the SOP classes before the C-GET"),
            ("fetch thread: C-GET", "the C-GET (fetch thread, with that C-FIND)"),
            ("store thread: C-STORE to B per instance", "a C-STORE to B"),
            ("verify", "verifying C-FIND on B"),
            ("task: job status recount", "job status recount"),
            ("task: may the job change", "job-end check"),
            ("association set-up", "association set-up"),
            ("association release", "release"),
            ("slots of a stream", "taking the stream's slots"),
        ):
            ms, calls = _per_call_ms(profile, prefix)
            if calls:
                pieces.append(f"{what} {ms:.0f} ms x {calls / max(tasks, 1):.1f}")
        parts.append(
            f"Under cProfile ({profile.label}, {profile.wall_seconds:.1f} s profiled, "
            f"{profile.threads} threads; times inflated 2-3x, the warm-up's tasks included) a "
            f"task ran {task_ms:.0f} ms on average over {tasks} tasks; per task: "
            + ", ".join(pieces)
            + "."
        )
    parts.append(common.load_sentence(report) + ".")
    return " ".join(parts)


def format_markdown_section(report: Report) -> str:
    lines = [
        *common.section_head(
            report,
            f"batch transfer, {report.studies} studies x {report.instances} instances, "
            f"repeat={report.repeat}",
        ),
        f"- Run: `uv run cli bench batch-transfer --studies {report.studies} --instances "
        f"{report.instances} --repeat {report.repeat}`; medians.",
        f"- Studies: {report.studies} CT studies of {report.instances} instances ({ROWS}x"
        f"{COLUMNS}, 16 bit; {report.study_mib:.0f} MiB in Orthanc together) and one of "
        f"{report.total_instances} ({report.large_study_mib:.0f} MiB); uploaded to A by REST in "
        f"{report.upload_seconds:.1f} s.",
        f"- Orthanc A ({SOURCE_AE}) -> Orthanc B ({DESTINATION_AE}) on loopback. Orthanc: B's "
        f"`POST /modalities/{SOURCE_NAME}/move` with all StudyInstanceUIDs in one request (one "
        "association, a C-MOVE per study), or a request per study. ADIT: one "
        "BatchTransferJob (`create_with_tasks`, check_first off, no pseudonyms), a task per "
        f"study, run by one `manage.py worker --queue dicom` ({report.concurrency} tasks at a "
        "time, warmed up with a small job), timed from queueing (the job, its tasks and their "
        f"queue entries) until the job reads Success (polled every {POLL_SECONDS} s); *direct "
        'C-MOVE*: A\'s row set to "C-MOVE to destinations". B cleared before and checked '
        "after every run (every instance of every study, once). *queueing s*: "
        "`create_with_tasks`; *first claim s*: queueing to the first task's claim; *task s*: "
        "a task's claim to end; *slots busy*: the tasks' time over job time x concurrency.",
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
    if report.failures:
        lines += [
            "Failed runs (not counted, each run again):",
            "",
            *[f"- {failure}" for failure in report.failures],
            "",
        ]
    if report.profile is not None:
        lines += common.profile_details(
            report.profile,
            f"cProfile of the worker during one {report.profile.label} "
            f"({report.profile.wall_seconds:.1f} s under the profiler, "
            f"{report.profile.threads} threads merged; start-up and warm-up included)",
            PROFILE_TOP,
        )
    return "\n".join(lines)


# -- entry point -------------------------------------------------------------------------------


def run_batch_transfer_benchmark(
    server: DatabaseServer,
    studies: int = 100,
    instances: int = 10,
    repeat: int = 3,
    *,
    profile: bool = True,
    record: bool = True,
    echo: Echo = print,
) -> Report:
    """Runs the batch transfer benchmark in a throwaway database; returns its report.

    Django must not be set up yet: this sets it up with the test settings on that database.

    Args:
        server: The PostgreSQL server to create the throwaway database on.
        studies: Studies in the batch job (tasks).
        instances: CT slices per study; the one-study job moves ``studies * instances``.
        repeat: Runs per method; the median counts.
        profile: Whether to add one batch job by a worker under cProfile.
        record: Whether to append the results to bench/RESULTS.md.
        echo: Where progress and results are printed.
    """
    if studies < 2 or instances < 1 or repeat < 1:
        raise ValueError("studies must be at least 2, instances and repeat at least 1.")
    load_before = common.load_average()
    with common.terminate_as_interrupt():
        with (
            bench_database(server),
            common.quiet_logger("procrastinate"),
            BatchTransferBenchmark(studies, instances, echo) as bench,
        ):
            from django.conf import settings

            bench.start()
            assert bench.source is not None and bench.large_study is not None
            results = [
                MethodResult(method, sum(s.instances for s in bench.studies_of(method)))
                for method in METHODS
            ]
            failures: list[str] = []
            width = max(len(method.label) for method in METHODS)
            worker = Worker(bench.workdir / "worker.log")
            worker.start()
            try:
                worker.wait_until_ready()
                echo("Warming the worker up ...")
                bench.warm_up(worker)
                for round_number in range(1, repeat + 1):
                    for result in results:
                        run = once_more_on_failure(
                            result.method.label,
                            functools.partial(bench.measure, result.method, worker),
                            failures,
                            echo,
                        )
                        result.runs.append(run)
                        echo(
                            f"[{round_number}/{repeat}] {result.method.label:<{width}} "
                            f"{run.seconds:6.2f} s {result.instances / run.seconds:6.0f} inst/s"
                        )
            finally:
                worker.stop()
            report = Report(
                studies=studies,
                instances=instances,
                repeat=repeat,
                concurrency=settings.DICOM_WORKER_CONCURRENCY,
                study_mib=sum(study.mib for study in bench.studies),
                large_study_mib=bench.large_study.mib,
                upload_seconds=bench.upload_seconds,
                machine=common.machine(),
                versions={**common.versions(bench.source), **engine_versions()},
                results=results,
                load_before=load_before,
                failures=failures,
            )
            if profile:
                method = next(method for method in METHODS if method.key == "batch")
                echo(f"Profiling the worker during one {method.label} ...")
                report.profile = once_more_on_failure(
                    f"profiled {method.label}",
                    functools.partial(bench.profile, method),
                    failures,
                    echo,
                )
            report.load_after = common.load_average()
    echo("Dropped the throwaway database.")
    common.print_results(
        echo,
        common.console_table(result_rows(report)),
        [
            *target_lines(report),
            *[f"Failed run (not counted): {failure}" for failure in report.failures],
        ],
        reading(report),
        section=(lambda: format_markdown_section(report)) if record else None,
        results_file=RESULTS_FILE,
    )
    return report
