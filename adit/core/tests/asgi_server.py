"""The ASGI app (HTTP and WebSockets) served by daphne in a subprocess, on the test database.

pytest-django's ``live_server`` speaks WSGI only, so pages that use a WebSocket need this.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from django.conf import settings

from adit.core.dicom.orthanc import free_ports
from adit.core.tests.worker_process import database_url


class AsgiServer:
    def __init__(self, env: dict[str, str] | None = None):
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+", prefix="daphne-", suffix=".log"
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "adit.asgi:application",
            ],  # fmt: skip
            cwd=settings.BASE_DIR,
            env={
                # The test process allows sync ORM calls from async code (Playwright needs it);
                # the server must not, or a consumer doing so would pass here and fail in use.
                **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
                "DJANGO_SETTINGS_MODULE": "adit.settings.test",
                "DATABASE_URL": database_url(),
                # The test settings keep channel layers in memory; this server needs none.
                **(env or {}),
            },
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._wait_until_up()

    def log(self) -> str:
        self.output.flush()
        with open(self.output.name) as log:
            return log.read()

    def _wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"daphne exited:\n{self.log()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with urllib.request.urlopen(f"{self.url}/health/", timeout=5):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"daphne did not answer:\n{self.log()}"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()
