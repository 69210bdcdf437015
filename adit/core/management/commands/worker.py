import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand
from procrastinate.app import WorkerOptions
from procrastinate.contrib.django import app

from adit.core.tasks import retry_stalled_jobs


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
            "--concurrency", "-c", type=int, default=1, help="Jobs run at the same time."
        )

    def handle(self, *args, queues, concurrency, **options):
        self.stdout.write(f"Worker on queue(s) {', '.join(queues or ['all'])} is starting.")
        with app.replace_connector(app.connector.get_worker_connector()):  # type: ignore[attr-defined]
            asyncio.run(self._run(queues, concurrency))

    async def _run(self, queues: list[str] | None, concurrency: int) -> None:
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
