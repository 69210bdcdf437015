"""Processes of the app (workers, daphne) in subprocesses on the test database, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def database_url() -> str:
    database = connection.settings_dict
    host = quote(database["HOST"], safe="")
    port = f":{database['PORT']}" if database["PORT"] else ""
    password = f":{quote(database['PASSWORD'])}" if database["PASSWORD"] else ""
    return f"postgres://{database['USER']}{password}@{host}{port}/{database['NAME']}"


class AppProcess:
    """A process of the app (``manage.py …``, daphne) with the test settings on the test
    database; its output goes to a file, for the message of a failing test."""

    def __init__(self, command: list[str], name: str, env: dict[str, str] | None = None):
        self.final_log = ""
        self.output = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+", prefix=f"{name}-", suffix=".log"
        )
        self.process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env={
                # Browser tests allow sync ORM calls from async code (Playwright needs it in
                # the test process); the app must not, or code doing so would pass here and
                # fail in use.
                **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
                "DJANGO_SETTINGS_MODULE": "adit.settings.test",
                "DATABASE_URL": database_url(),
                **(env or {}),
            },
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def log(self) -> str:
        """What the process wrote so far (all of it, once stopped)."""
        if self.output.closed:
            return self.final_log
        self.output.flush()
        with open(self.output.name) as log:
            return log.read()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        returncode = self.process.returncode
        if not self.output.closed:
            self.final_log = self.log()
            self.output.close()
        return returncode


class WorkerProcess(AppProcess):
    """``manage.py worker`` on the given queues."""

    def __init__(self, *queues: str, env: dict[str, str] | None = None):
        arguments = [argument for queue in queues for argument in ("--queue", queue)]
        super().__init__([sys.executable, "manage.py", "worker", *arguments], "worker", env)

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "is ready." not in self.log():
            assert self.process.poll() is None, f"the worker exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"the worker did not get ready:\n{self.log()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """What a crash or `kill -9` does: no chance to clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ReceiverProcess(AppProcess):
    """``manage.py receiver``, started and listening when the constructor returns."""

    def __init__(self, env: dict[str, str], timeout: float = 30):
        super().__init__([sys.executable, "manage.py", "receiver"], "receiver", env)
        deadline = time.monotonic() + timeout
        while "listening for C-STORE" not in self.log():
            assert self.process.poll() is None, f"the receiver exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"the receiver did not start:\n{self.log()}"
            time.sleep(0.1)


def clear_task_queue() -> None:
    """Empties the queue tables, which (unmanaged by Django) outlive each test's flush: jobs and
    dead workers left by an earlier test would otherwise be retried or counted here."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs")
        cursor.execute("DELETE FROM procrastinate_workers")
