"""Runs ADIT's processes side by side, shows their logs together and keeps them running."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# Colors that tell the processes apart in a terminal.
_COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
_RESET = "\033[0m"
_POLL_INTERVAL = 0.2


class Supervisor:
    """Starts each command in its own process group, restarts it when it ends and stops all.

    A process that ends on its own is restarted after a delay that doubles with each crash
    within ``crash_window`` seconds (``first_delay`` up to ``max_delay``). Everything stops on
    SIGINT/SIGTERM, or when one process crashes ``crash_limit`` times within ``crash_window``:
    a half-running ADIT (a web server without workers, say) would accept work it never does.

    ``watched`` names things started elsewhere (the demo PACS, say) with a check that returns
    None while all is well and else a message, which is logged once.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        cwd: Path,
        stop_timeout: float = 8.0,
        out=None,
        *,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        crash_limit: int = 10,
        crash_window: float = 600.0,
        watched: Mapping[str, Callable[[], str | None]] | None = None,
    ):
        assert crash_limit >= 1
        self.commands = commands
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.processes: dict[str, subprocess.Popen] = {}
        self._watched = dict(watched or {})
        self._crashes = {name: collections.deque() for name in commands}
        self._restart_at: dict[str, float] = {}
        # Set by the signal handler, read by the main loop; a plain attribute because the
        # handler may interrupt the main thread while it holds a lock (see _request_stop).
        self._stop_signal: int | None = None
        self._output_lock = threading.Lock()
        use_color = getattr(self.out, "isatty", lambda: False)()
        self._colors = {
            name: _COLORS[index % len(_COLORS)] if use_color else ""
            for index, name in enumerate(commands)
        }
        self._width = max(len(name) for name in [*commands, *self._watched])

    def run(self) -> int:
        """Runs until SIGINT/SIGTERM (returns 0) or until a process keeps crashing (returns 1)."""
        previous = {
            sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for name in self.commands:
                self._start(name)
            failed = self._supervise()
        finally:
            self._stop_all()
            # After a stop signal, more of them keep only setting the flag: a terminal's Ctrl-C
            # reaches every process of the group and `uv run` forwards SIGTERM, so duplicates
            # come late, and with Python's handlers back they would interrupt what the caller
            # does to finish (`cli up` stops the demo PACS and the embedded database).
            if self._stop_signal is None:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return 1 if failed else 0

    def _request_stop(self, signum, frame) -> None:
        # Python runs this between two bytecodes of the main thread, which may hold a lock at
        # that moment (an Event's, the output's). Taking a lock here could wait for ever, as
        # Event.set did when a second signal came right after the first; so only a flag is set.
        self._stop_signal = signum

    def _start(self, name: str) -> None:
        command = self.commands[name]
        process = subprocess.Popen(
            command,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its children stop with it
            text=True,
            errors="replace",
        )
        self.processes[name] = process
        threading.Thread(target=self._forward_output, args=(name, process), daemon=True).start()
        self._log(name, f"started (pid {process.pid}): {' '.join(command)}")

    def _forward_output(self, name: str, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._log(name, line.rstrip("\n"))

    def _log(self, name: str, line: str) -> None:
        prefix = f"{name:<{self._width}} |"
        color = self._colors.get(name, "")
        if color:
            prefix = f"{color}{prefix}{_RESET}"
        with self._output_lock:
            print(f"{prefix} {line}", file=self.out, flush=True)

    def _supervise(self) -> bool:
        """Restarts ended processes until a stop signal (False) or a crash loop (True)."""
        while self._stop_signal is None:
            now = time.monotonic()
            for name, process in self.processes.items():
                if name in self._restart_at:
                    if now >= self._restart_at[name]:
                        del self._restart_at[name]
                        self._start(name)
                    continue
                code = process.poll()
                if code is not None and not self._schedule_restart(name, code, now):
                    return True
            self._check_watched()
            time.sleep(_POLL_INTERVAL)
        self._log_line(f"Received {_signal_name(self._stop_signal)}.")
        return False

    def _schedule_restart(self, name: str, code: int, now: float) -> bool:
        """Notes the crash of ``name``; False if it crashed too often to be restarted."""
        # What the process started and left behind in its group goes with it.
        self._signal_group(self.processes[name], signal.SIGKILL)
        ended = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited ({code})"
        crashes = self._crashes[name]
        crashes.append(now)
        while crashes[0] <= now - self.crash_window:
            crashes.popleft()
        if len(crashes) >= self.crash_limit:
            self._log(
                name,
                f"{ended}; it ended {len(crashes)} times within {self.crash_window:g} s, so "
                f"everything stops. Its messages above tell why '{name}' does not stay up.",
            )
            return False
        delay = min(self.first_delay * 2 ** (len(crashes) - 1), self.max_delay)
        self._log(name, f"{ended}; restarting it in {delay:g} s")
        self._restart_at[name] = now + delay
        return True

    def _check_watched(self) -> None:
        for name, check in list(self._watched.items()):
            problem = check()
            if problem is not None:
                self._log(name, problem)
                del self._watched[name]

    def _log_line(self, line: str) -> None:
        with self._output_lock:
            print(line, file=self.out, flush=True)

    def _stop_all(self) -> None:
        # Processes waiting for their restart are gone already.
        running = {
            name: process
            for name, process in self.processes.items()
            if name not in self._restart_at
        }
        if running:
            self._log_line("Stopping all processes ...")
        for process in running.values():
            self._signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, process in running.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._log(name, f"did not stop within {self.stop_timeout:g} s; killing it")
        for process in running.values():
            # Also reaps grandchildren that outlived their parent in the group.
            self._signal_group(process, signal.SIGKILL)
            process.wait()

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
