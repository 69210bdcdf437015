"""The ASGI app (HTTP and WebSockets) served by ADIT's web server (adit.web_server, daphne with
lazily read request bodies) in a subprocess, on the test database.

pytest-django's ``live_server`` speaks WSGI only, so pages that use a WebSocket need this.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request

from adit.core.demo.orthanc import free_ports
from adit.core.tests.app_processes import AppProcess


class AsgiServer(AppProcess):
    def __init__(self, env: dict[str, str] | None = None):
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "adit.web_server", "-b", "127.0.0.1", "-p", str(self.port)]
        super().__init__([*command, "adit.asgi:application"], "web-server", env)
        self._wait_until_up()

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
