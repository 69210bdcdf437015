import asyncio
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from procrastinate.app import WorkerOptions
from procrastinate.contrib.django import app

from adit.core.tasks import retry_stalled_jobs

# Seconds a task thread keeps its database connection between tasks.
WORKER_CONNECTION_MAX_AGE = 600


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
