"""The supervisor of `cli up` with small real child processes: restarts, crash loops, signals."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from adit.env import BASE_DIR

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# Runs a Supervisor in a process of its own, so that signals reach it as they reach `cli up`.
RUNNER = """
import json, sys
from pathlib import Path
from adit.supervisor import Supervisor
commands, options = json.loads(sys.argv[1])
sys.exit(Supervisor(commands, cwd=Path.cwd(), **options).run())
"""


def _start_supervisor(log: Path, commands: dict[str, list[str]], **options) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, json.dumps([commands, options])],
            cwd=BASE_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for_pids(log: Path, name: str, count: int, supervisor: subprocess.Popen) -> list[int]:
    """The pids of the first ``count`` starts of ``name`` as the supervisor logged them."""
    pattern = re.compile(rf"^{name} +\| started \(pid (\d+)\)", re.MULTILINE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [int(pid) for pid in pattern.findall(log.read_text())]
        if len(pids) >= count:
            return pids[:count]
        assert supervisor.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{name} was not started {count} time(s):\n{log.read_text()}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(supervisor: subprocess.Popen, pids: list[int]) -> None:
    """Cleans up after a failed test: neither the supervisor nor a child may stay behind."""
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_process_is_restarted_while_the_others_keep_running(tmp_path):
    log = tmp_path / "supervisor.log"
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
    supervisor = _start_supervisor(
        log, {"worker": SLEEPER, "web": stubborn}, first_delay=0.1, stop_timeout=1
    )
    pids: list[int] = []
    try:
        [worker] = _wait_for_pids(log, "worker", 1, supervisor)
        [web] = _wait_for_pids(log, "web", 1, supervisor)
        pids = [worker, web]
        os.kill(worker, signal.SIGKILL)  # as `kill -9` of the dicom worker

        restarted = _wait_for_pids(log, "worker", 2, supervisor)[1]
        pids.append(restarted)
        output = log.read_text()
        assert "worker | was killed by SIGKILL; restarting it in 0.1 s" in output
        assert _alive(restarted)
        assert _alive(web)
        assert len(re.findall(r"^web +\| started", output, re.MULTILINE)) == 1

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        output = log.read_text()
        assert "web    | did not stop within 1 s; killing it" in output
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        _stop(supervisor, pids)


def test_a_process_that_keeps_crashing_stops_everything_and_is_named(tmp_path):
    log = tmp_path / "supervisor.log"
    broken = [sys.executable, "-c", "import sys; print('no database'); sys.exit(3)"]
    supervisor = _start_supervisor(
        log,
        {"receiver": broken, "web": SLEEPER},
        first_delay=0.05,
        max_delay=0.2,
        crash_limit=5,
        crash_window=600,
    )
    pids: list[int] = []
    try:
        pids = _wait_for_pids(log, "web", 1, supervisor)
        assert supervisor.wait(timeout=60) == 1
        output = log.read_text()
        delays = re.findall(r"^receiver \| exited \(3\); restarting it in (\S+) s", output, re.M)
        assert delays == ["0.05", "0.1", "0.2", "0.2"]  # doubling, up to max_delay
        assert output.count("receiver | no database") == 5
        assert (
            "receiver | exited (3); it ended 5 times within 600 s, so everything stops. "
            "Its messages above tell why 'receiver' does not stay up."
        ) in output
        assert not _alive(pids[0])
    finally:
        _stop(supervisor, pids)


def test_signals_in_quick_succession_stop_every_child(tmp_path):
    # `uv run` forwards the SIGTERM sent to the process group, so the supervisor gets two at
    # once; a handler that takes a lock hung in about a third of such stops.
    for attempt in range(20):
        log = tmp_path / f"supervisor-{attempt}.log"
        supervisor = _start_supervisor(log, {"a": SLEEPER, "b": SLEEPER}, stop_timeout=2)
        pids: list[int] = []
        try:
            pids = [
                *_wait_for_pids(log, "a", 1, supervisor),
                *_wait_for_pids(log, "b", 1, supervisor),
            ]
            for _ in range(2000):
                supervisor.send_signal(signal.SIGTERM)
                supervisor.send_signal(signal.SIGINT)
            try:
                code = supervisor.wait(timeout=15)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"attempt {attempt}: the supervisor hung") from None
            assert code == 0, log.read_text()
            assert [pid for pid in pids if _alive(pid)] == []
        finally:
            _stop(supervisor, pids)
