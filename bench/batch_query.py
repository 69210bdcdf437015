"""The batch query benchmark: ``uv run cli bench batch-query``.

One Orthanc holds a population of a few thousand small studies (``adit.core.demo.population``).
A batch file of N lines (default 1000), each a patient ID with a modality, is answered

* by a loop of dcmtk ``findscu``, one process per line, each a study-level C-FIND with the
  patient ID and the modality: what a user's script does today, the baseline;
* by ADIT: a batch query job of the same lines, queued (its tasks deferred) and processed by a
  real worker (``manage.py worker --queue dicom``, its default concurrency) to its end. Each
  line is a study C-FIND over one association, and a patient C-FIND when no study matched
  (to tell "no such patient" from "no such study"), as the app does it.

The worker reaches the Orthanc through a counting TCP proxy (``ConnectionCounter``), which
records the most associations open at once: it must not exceed the server's "max.
associations". Every line's results are checked against the population: a run that misses or
doubles a study is an error, not a number. Runs of both methods alternate, ``repeat`` times;
the medians count. The job runs in a throwaway database (as in ``bench transfer``).
"""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import common
from bench.common import RESULTS_FILE, BenchmarkError, Echo
from bench.transfer import DatabaseServer, Worker, bench_database

if TYPE_CHECKING:
    from adit.core.demo.orthanc import OrthancServer

AE_TITLE = "BENCHQRY"
LOOPBACK = "127.0.0.1"
FINDSCU = "/usr/bin/findscu"
SEED = 11
STUDIES_PER_PATIENT = 3
MODALITIES = ("CT", "MR")  # the lines alternate between them
TARGET_RATIO = 5.0  # the issue: ADIT's job >= 5x the findscu loop
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Line:
    patient_id: str
    modality: str
    expected_studies: frozenset[str]


@dataclass
class Report:
    started: datetime.datetime
    lines: int
    patients: int
    studies: int
    concurrency: int
    limit: int
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    load_before: float = 0.0
    load_after: float = 0.0
    findscu_seconds: list[float] = field(default_factory=list)
    adit_seconds: list[float] = field(default_factory=list)
    adit_cpu_worker: list[float] = field(default_factory=list)
    orthanc_cpu_findscu: list[float] = field(default_factory=list)
    orthanc_cpu_adit: list[float] = field(default_factory=list)
    most_associations: int = 0
    associations_opened: list[int] = field(default_factory=list)
    results_per_run: int = 0

    @property
    def findscu_rate(self) -> float:
        return self.lines / statistics.median(self.findscu_seconds)

    @property
    def adit_rate(self) -> float:
        return self.lines / statistics.median(self.adit_seconds)

    @property
    def ratio(self) -> float:
        return self.adit_rate / self.findscu_rate


class BatchQueryBenchmark(common.Session):
    def __init__(self, lines: int, patients: int, echo: Echo):
        super().__init__("adit-bench-batch-query-")
        self.line_count = lines
        self.patients = patients
        self.echo = echo
        self.orthanc: OrthancServer | None = None
        self.lines: list[Line] = []
        self._server_row: Any = None
        self._owner: Any = None

    def start(self) -> None:
        from adit.core.demo.connection_counter import ConnectionCounter
        from adit.core.demo.orthanc import OrthancServer, stop_servers
        from adit.core.demo.population import describe_population, generate_population

        orthanc = OrthancServer(AE_TITLE, storage_dir=self.workdir / "orthanc", dicomweb=False)
        self._stack.callback(stop_servers, [orthanc])
        orthanc.start()
        self.orthanc = orthanc
        population = describe_population(self.patients, STUDIES_PER_PATIENT, SEED)
        instances = sum(len(study.series) for study in population)
        self.echo(
            f"Uploading {len(population)} studies of {self.patients} patients "
            f"({instances} small instances) to Orthanc {AE_TITLE} ..."
        )
        started = time.perf_counter()
        orthanc.upload(generate_population(self.patients, STUDIES_PER_PATIENT, SEED))
        self.echo(f"Uploaded in {time.perf_counter() - started:.1f} s.")
        studies_of: dict[tuple[str, str], set[str]] = {}
        for study in population:
            for modality in study.modalities:
                studies_of.setdefault((study.patient_id, modality), set()).add(
                    study.study_instance_uid
                )
        patient_ids = sorted({study.patient_id for study in population})
        for number in range(self.line_count):
            patient_id = patient_ids[number % len(patient_ids)]
            modality = MODALITIES[number % len(MODALITIES)]
            expected = frozenset(studies_of.get((patient_id, modality), set()))
            self.lines.append(Line(patient_id, modality, expected))
        self.counter = self._stack.enter_context(ConnectionCounter((LOOPBACK, orthanc.dicom_port)))

    def create_rows(self) -> None:
        from django.contrib.auth import get_user_model

        from adit.core.models import DicomServer

        assert self.orthanc is not None
        self._owner = get_user_model().objects.create_user(username="bench")
        self._server_row = DicomServer.objects.create(
            name="Bench PACS",
            ae_title=AE_TITLE,
            host=LOOPBACK,
            port=self.counter.port,  # through the counting proxy
            study_root_find_support=True,
        )

    @property
    def limit(self) -> int:
        return self._server_row.max_associations

    def orthanc_cpu(self) -> float:
        assert self.orthanc is not None
        return common.process_cpu_seconds(self.orthanc.pid)

    # -- the baseline ---------------------------------------------------------------------------

    def findscu_loop(self) -> tuple[float, float]:
        """Seconds for the loop, and the Orthanc's CPU seconds meanwhile."""
        assert self.orthanc is not None
        env = {**os.environ, "TCP_NODELAY": "1"}
        base = [FINDSCU, "-S", "-aet", "ADIT", "-aec", AE_TITLE]
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "StudyDate"]
        keys += ["-k", "StudyDescription", "-k", "NumberOfStudyRelatedInstances"]
        cpu = self.orthanc_cpu()
        started = time.perf_counter()
        for line in self.lines:
            query = [
                "-k",
                f"PatientID={line.patient_id}",
                "-k",
                f"ModalitiesInStudy={line.modality}",
            ]
            completed = subprocess.run(
                [*base, *keys, *query, LOOPBACK, str(self.orthanc.dicom_port)],
                env=env,
                capture_output=True,
            )
            if completed.returncode != 0:
                raise BenchmarkError(f"findscu failed: {completed.stderr.decode()[-500:]}")
        return time.perf_counter() - started, self.orthanc_cpu() - cpu

    # -- ADIT -----------------------------------------------------------------------------------

    def adit_job(self, worker: Worker, lines: list[Line]) -> tuple[float, float, float, int]:
        """Seconds from queueing to the job's end, the worker's and the Orthanc's CPU seconds
        meanwhile, and the results found; every line checked."""
        from adit.batch_query.models import BatchQueryJob, BatchQueryResult, BatchQueryTask
        from adit.core.jobs.statuses import JobStatus, TaskStatus

        tasks = [
            BatchQueryTask(line=number, patient_id=line.patient_id, modalities=[line.modality])
            for number, line in enumerate(lines, start=2)
        ]
        cpu_worker, cpu_orthanc = worker.cpu_seconds(), self.orthanc_cpu()
        deadline = time.monotonic() + 60 + len(lines)
        started = time.perf_counter()
        job = BatchQueryJob.create_with_tasks(
            owner=self._owner, source=self._server_row, tasks=tasks, project_name="Bench"
        )
        jobs = BatchQueryJob.objects.filter(pk=job.pk)
        while (status := jobs.values_list("status", flat=True).get()) not in (
            JobStatus.SUCCESS,
            JobStatus.WARNING,
            JobStatus.FAILURE,
            JobStatus.CANCELED,
        ):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"The job was still {status} at the deadline.")
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        cpu_worker, cpu_orthanc = (
            worker.cpu_seconds() - cpu_worker,
            self.orthanc_cpu() - cpu_orthanc,
        )
        failed = job.tasks.exclude(status=TaskStatus.SUCCESS).values_list("line", "message")[:5]
        if failed:
            raise BenchmarkError(f"Lines did not succeed: {list(failed)}\n{worker.log_tail()}")
        found: dict[int, Counter[str]] = {}
        for line_number, study_uid in BatchQueryResult.objects.filter(job=job).values_list(
            "task__line", "study_uid"
        ):
            found.setdefault(line_number, Counter())[study_uid] += 1
        for number, line in enumerate(lines, start=2):
            got = found.get(number, Counter())
            if set(got) != line.expected_studies or any(count > 1 for count in got.values()):
                raise BenchmarkError(
                    f"Line {number} ({line.patient_id}, {line.modality}) found {dict(got)}, "
                    f"expected {sorted(line.expected_studies)}."
                )
        return seconds, cpu_worker, cpu_orthanc, sum(len(line.expected_studies) for line in lines)


def run_batch_query_benchmark(
    server: DatabaseServer,
    lines: int,
    patients: int,
    repeat: int,
    *,
    record: bool,
    echo: Echo,
) -> Report:
    from django.conf import settings

    with common.terminate_as_interrupt(), BatchQueryBenchmark(lines, patients, echo) as bench:
        bench.start()
        with bench_database(server):
            bench.create_rows()
            assert bench.orthanc is not None
            report = Report(
                started=datetime.datetime.now().astimezone(),
                lines=lines,
                patients=patients,
                studies=patients * STUDIES_PER_PATIENT,
                concurrency=settings.DICOM_WORKER_CONCURRENCY,
                limit=bench.limit,
                machine=common.machine(),
                versions=common.versions(bench.orthanc),
                load_before=common.load_average(),
            )
            worker = Worker(bench.workdir / "worker.log")
            worker.start()
            try:
                worker.wait_until_ready()
                echo("Warming the worker up with 20 lines ...")
                bench.adit_job(worker, bench.lines[:20])
                bench.counter.most_at_once = 0
                for round_number in range(1, repeat + 1):
                    seconds, cpu = bench.findscu_loop()
                    report.findscu_seconds.append(seconds)
                    report.orthanc_cpu_findscu.append(cpu)
                    echo(f"Round {round_number}: findscu loop {lines / seconds:.0f} lines/s")
                    opened = bench.counter.total
                    seconds, cpu_worker, cpu_orthanc, results = bench.adit_job(worker, bench.lines)
                    report.adit_seconds.append(seconds)
                    report.adit_cpu_worker.append(cpu_worker)
                    report.orthanc_cpu_adit.append(cpu_orthanc)
                    report.associations_opened.append(bench.counter.total - opened)
                    report.results_per_run = results
                    echo(f"Round {round_number}: ADIT job {lines / seconds:.0f} lines/s")
            finally:
                worker.stop()
            report.most_associations = bench.counter.most_at_once
            report.load_after = common.load_average()
    _print(report, echo, record)
    return report


def _rows(report: Report) -> list[list[str]]:
    lines = report.lines
    findscu, adit = report.findscu_seconds, report.adit_seconds
    return [
        ["method", "seconds", "lines/s", "ratio", "worker CPU ms/line", "Orthanc CPU ms/line"],
        [
            "dcmtk findscu, one process per line",
            f"{statistics.median(findscu):.2f}",
            f"{report.findscu_rate:.0f}",
            "1.00x",
            "",
            f"{1000 * statistics.median(report.orthanc_cpu_findscu) / lines:.2f}",
        ],
        [
            f"ADIT batch query job ({report.concurrency} tasks at a time)",
            f"{statistics.median(adit):.2f}",
            f"{report.adit_rate:.0f}",
            f"{report.ratio:.2f}x",
            f"{1000 * statistics.median(report.adit_cpu_worker) / lines:.2f}",
            f"{1000 * statistics.median(report.orthanc_cpu_adit) / lines:.2f}",
        ],
    ]


def _verdicts(report: Report) -> list[str]:
    speed = "PASS" if report.ratio >= TARGET_RATIO else "MISS"
    limit = "PASS" if report.most_associations <= report.limit else "MISS"
    return [
        f"{speed}: ADIT's job answers {report.ratio:.1f}x the lines per second of the findscu "
        f"loop (target >= {TARGET_RATIO:g}x).",
        f"{limit}: at most {report.most_associations} associations were open at the Orthanc at "
        f"once (the server's limit: {report.limit}); "
        f"{statistics.median(report.associations_opened):.0f} associations opened per job of "
        f"{report.lines} lines.",
    ]


def _print(report: Report, echo: Echo, record: bool) -> None:
    rows = _rows(report)
    reading = (
        f"{report.lines} lines (patient ID and one modality, CT and MR alternating) against "
        f"{report.studies} studies of {report.patients} patients; each run checked line by line "
        f"({report.results_per_run} studies found per run). {common.load_sentence(report)}."
    )

    def section() -> str:
        lines = common.section_head(report, "batch query")
        lines += [
            f"- Run: `uv run cli bench batch-query --lines {report.lines} --patients "
            f"{report.patients} --repeat {len(report.adit_seconds)}`; medians.",
            "",
            common.markdown_table(rows),
            "",
            *(f"- {verdict}" for verdict in _verdicts(report)),
            "",
            reading,
            "",
        ]
        return "\n".join(lines)

    common.print_results(
        echo,
        common.console_table(rows),
        _verdicts(report),
        reading,
        section=section if record else None,
        results_file=RESULTS_FILE,
    )
