"""Runs ADIT's processes side by side, shows their logs together and stops them together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# Colors that tell the processes apart in a terminal.
_COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
_RESET = "\033[0m"


class Supervisor:
    """Starts each command in its own process group and stops all of them as one.

    A process that exits on its own stops the others too: a half-running ADIT (a web server
    without workers, say) would accept work it never does.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        cwd: Path,
        stop_timeout: float = 8.0,
        out=None,
    ):
        self.commands = commands
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.processes: dict[str, subprocess.Popen] = {}
        self._stop_requested = threading.Event()
        self._output_lock = threading.Lock()
        self._use_color = getattr(self.out, "isatty", lambda: False)()
        self._width = max(len(name) for name in commands)

    def run(self) -> int:
        """Runs until a signal (SIGINT, SIGTERM) or a process exits; returns the exit code."""
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._start_all()
            failed = self._wait_for_stop()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if failed else 0

    def _request_stop(self, signum, frame) -> None:
        self._stop_requested.set()

    def _start_all(self) -> None:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for index, (name, command) in enumerate(self.commands.items()):
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so its children stop with it
                text=True,
                errors="replace",
            )
            self.processes[name] = process
            color = _COLORS[index % len(_COLORS)] if self._use_color else ""
            threading.Thread(
                target=self._forward_output, args=(name, process, color), daemon=True
            ).start()
            self._log(name, f"started (pid {process.pid}): {' '.join(command)}", color)

    def _forward_output(self, name: str, process: subprocess.Popen, color: str) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._log(name, line.rstrip("\n"), color)

    def _log(self, name: str, line: str, color: str = "") -> None:
        prefix = f"{name:<{self._width}} |"
        if color:
            prefix = f"{color}{prefix}{_RESET}"
        with self._output_lock:
            print(f"{prefix} {line}", file=self.out, flush=True)

    def _wait_for_stop(self) -> bool:
        """Blocks until a stop is requested or a process ends; True if a process ended first."""
        while not self._stop_requested.wait(0.2):
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    self._log(name, f"exited with code {code}; stopping everything")
                    return True
        return False

    def _stop_all(self) -> None:
        if self.processes:
            print("Stopping all processes ...", file=self.out, flush=True)
        for process in self.processes.values():
            self._signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in self.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._log(name, f"did not stop within {self.stop_timeout:.0f} s; killing it")
        for process in self.processes.values():
            # Also reaps grandchildren that outlived their parent in the group.
            self._signal_group(process, signal.SIGKILL)
            process.wait()

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
