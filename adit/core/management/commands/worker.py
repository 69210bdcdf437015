import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from procrastinate.app import WorkerOptions
from procrastinate.contrib.django import app

from adit.core.jobs.processing import occupies_a_core
from adit.core.tasks import retry_stalled_jobs

# Seconds a task thread keeps its database connection between tasks.
WORKER_CONNECTION_MAX_AGE = 600
# How long a worker running a task that keeps a core busy waits before it takes another task,
# so that an idle worker (woken by the same notification) takes it first.
CORE_SHARING_WAIT_SECONDS = 0.5


def leave_tasks_to_idle_workers(job_manager: Any, wait: float = CORE_SHARING_WAIT_SECONDS) -> None:
    """Makes this worker take a task only after ``wait`` seconds while it runs a task that
    keeps a core busy (a transfer).

    procrastinate's worker takes tasks as long as it has free slots, so two transfers queued
    together usually land in the same worker process, where they share one core (the GIL)
    while the other workers idle. Waiting a little lets an idle worker claim the second one.
    Only the job manager object of this process is changed: it still fetches, finishes and
    retries as before, and remembers which of its jobs keep a core busy.
    """
    running: set[int] = set()
    fetch, finish, retry = job_manager.fetch_job, job_manager.finish_job, job_manager.retry_job

    async def fetch_job(*args: Any, **kwargs: Any) -> Any:
        if running:
            await asyncio.sleep(wait)
        job = await fetch(*args, **kwargs)
        if job is not None and job.id is not None and occupies_a_core(job.task_kwargs):
            running.add(job.id)
        return job

    async def finish_job(job: Any, *args: Any, **kwargs: Any) -> Any:
        running.discard(job.id)
        return await finish(job, *args, **kwargs)

    async def retry_job(job: Any, *args: Any, **kwargs: Any) -> Any:
        running.discard(job.id)
        return await retry(job, *args, **kwargs)

    job_manager.fetch_job = fetch_job
    job_manager.finish_job = finish_job
    job_manager.retry_job = retry_job


class Command(BaseCommand):
    help = (
        "Runs a task worker on the given queues. Before taking new work it puts back in the "
        "queue the jobs of workers that died."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            dest="queues",
            help="Queue to work on (repeatable; default: all queues).",
        )
        parser.add_argument(
            "--concurrency",
            "-c",
            type=int,
            default=None,
            help="Tasks run at the same time (default: the setting DICOM_WORKER_CONCURRENCY "
            "for a worker on the dicom queue only, else 1).",
        )

    def handle(self, *args, queues, concurrency, **options):
        if concurrency is None:
            # DICOM tasks mostly wait for a PACS: several at once use the machine (a batch
            # query asks several lines at a time); the server's association limit keeps a
            # PACS from getting more than it takes.
            concurrency = settings.DICOM_WORKER_CONCURRENCY if queues == ["dicom"] else 1
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        # A task is often short (a batch query line is a few C-FINDs): a new database
        # connection for each would cost more than the task. The task threads keep theirs,
        # checked before reuse, so a restarted database costs one failed check, not a task.
        for alias in connections:
            database = connections.settings[alias]
            database["CONN_HEALTH_CHECKS"] = True
            if database.get("CONN_MAX_AGE") == 0:  # None (forever) and a set age stay
                database["CONN_MAX_AGE"] = WORKER_CONNECTION_MAX_AGE
        self.stdout.write(
            f"Worker on queue(s) {', '.join(queues or ['all'])} is starting "
            f"({concurrency} task(s) at a time)."
        )
        with app.replace_connector(app.connector.get_worker_connector()):  # type: ignore[attr-defined]
            leave_tasks_to_idle_workers(app.job_manager)
            asyncio.run(self._run(queues, concurrency))

    async def _run(self, queues: list[str] | None, concurrency: int) -> None:
        # Procrastinate runs each sync task in the loop's default executor, whose few threads
        # (cores + 4) would cap the concurrency silently.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="task")
        )
        async with app.open_async():
            self.stdout.write("Connected to the task queue; looking for stalled jobs.")
            retried = await retry_stalled_jobs(app)
            if retried:
                self.stdout.write(f"Put {retried} stalled job(s) back in the queue.")
            self.stdout.write(f"Worker on queue(s) {', '.join(queues or ['all'])} is ready.")
            options: WorkerOptions = {
                "concurrency": concurrency,
                "install_signal_handlers": True,
                # On SIGTERM a running task gets this long to finish; then it is asked to stop
                # after its current instance and goes back to the queue (well before the
                # supervisor's SIGKILL after 8 s).
                "shutdown_graceful_timeout": settings.WORKER_SHUTDOWN_GRACE_SECONDS,
            }
            if queues:  # procrastinate spells "every queue" as no queues option at all
                options["queues"] = queues
            await app.run_worker_async(**options)
