"""`uv run cli up` as a new user runs it: the whole stack comes up and goes down cleanly."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from adit import embedded_postgres
from adit.core.demo.orthanc import free_ports
from adit.env import BASE_DIR as REPO_ROOT

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait_for_health(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "cli up exited before the web server answered"
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (an exited daemon may wait for a subreaper like uv to reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_log(
    cli: subprocess.Popen, log_file: Path, name: str, text: str, count: int = 1
) -> None:
    """Waits until the process ``name`` logged a line starting with ``text`` ``count`` times."""
    line = re.compile(rf"^{name} +\| {re.escape(text)}", re.MULTILINE)
    deadline = time.monotonic() + 60
    while len(line.findall(log_file.read_text())) < count:
        assert cli.poll() is None and time.monotonic() < deadline, (
            f"{name} did not log {text!r} {count} time(s):\n{log_file.read_text()}"
        )
        time.sleep(0.2)


def _with_cmdline(processes: list[psutil.Process], *parts: str) -> psutil.Process:
    [found] = [p for p in processes if all(part in p.cmdline() for part in parts)]
    return found


def test_up_demo_serves_the_app_with_filled_pacs_survives_crashes_and_stops_on_sigterm(
    short_tmp_dir, free_port
):
    env_file = short_tmp_dir / ".env"
    data_dir = short_tmp_dir / "data"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    receiver_port, channel_port, *orthanc_ports = free_ports(6)
    orthanc1_url = f"http://127.0.0.1:{orthanc_ports[0]}"
    environment |= {
        "ENV_FILE": str(env_file),
        "ADIT_DATA_DIR": str(data_dir),
        "RECEIVER_PORT": str(receiver_port),
        "FILE_CHANNEL_PORT": str(channel_port),
        "ORTHANC1_URL": orthanc1_url,
        "ORTHANC2_URL": f"http://127.0.0.1:{orthanc_ports[1]}",
        "ORTHANC1_DICOM_PORT": str(orthanc_ports[2]),
        "ORTHANC2_DICOM_PORT": str(orthanc_ports[3]),
    }
    log_file = short_tmp_dir / "up.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "cli"), "up", "--demo", "--port", str(free_port)],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as in a terminal
        )
    try:
        base_url = f"http://127.0.0.1:{free_port}"
        _wait_for_health(f"{base_url}/health/", process, timeout=120)
        status, login_page = _get(f"{base_url}/accounts/login/")
        assert status == 200
        assert "Log in" in login_page

        # Both workers and the receiver report ready before anything is stopped.
        ready_lines = (
            "Worker on queue(s) default is ready.",
            "Worker on queue(s) dicom is ready.",
            "Receiver ADIT listening for C-STORE on port",
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
            line in log_file.read_text() for line in ready_lines
        ):
            time.sleep(0.5)
        output = log_file.read_text()
        print(output)  # shown by pytest when an assertion below fails
        assert "Worker on queue(s) default is ready." in output
        assert "Worker on queue(s) dicom is ready." in output
        assert "Receiver ADIT listening for C-STORE on port" in output
        assert f"Created {env_file} with random secrets." in output
        assert "Log in as 'admin' with password" in output
        assert "Example users alice, bob (password 'adit-demo')" in output
        status, statistics = _get(f"{orthanc1_url}/statistics")
        assert json.loads(statistics)["CountInstances"] == 72
        orthancs = [
            process
            for process in psutil.process_iter(["cmdline"])
            if str(data_dir / "demo") in " ".join(process.info["cmdline"] or [])
        ]
        assert len(orthancs) == 2

        assert "Superuser 'admin' joined the example groups" in output

        # Without being told, one dicom worker per core (up to 8): concurrent transfers each
        # get a core of their own.
        children = psutil.Process(process.pid).children(recursive=True)
        dicom_workers = [p for p in children if {"worker", "dicom"} <= set(p.cmdline())]
        expected_workers = min(os.cpu_count() or 1, 8)
        assert len(dicom_workers) == expected_workers
        _wait_for_log(
            process,
            log_file,
            r"dicom_worker_\d+",
            "Worker on queue(s) dicom is ready.",
            count=expected_workers,
        )

        # A crashed worker comes back, and the web server is not stopped for it.
        web = _with_cmdline(children, "-m", "adit.web_server")
        dicom_workers[0].kill()
        _wait_for_log(
            process, log_file, r"dicom_worker_\d+", "was killed by SIGKILL; restarting it in 1 s"
        )
        _wait_for_log(
            process,
            log_file,
            r"dicom_worker_\d+",
            "Worker on queue(s) dicom is ready.",
            count=expected_workers + 1,
        )
        assert _get(f"{base_url}/health/")[0] == 200
        assert _alive(web)
        # A demo PACS that dies is reported.
        _with_cmdline(orthancs, str(data_dir / "demo" / "orthanc2" / "orthanc.json")).kill()
        _wait_for_log(process, log_file, "ORTHANC2", "the demo PACS stopped")

        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 4
        pgdata = data_dir / "pgdata"
        postmaster = embedded_postgres.running_pid(pgdata)
        assert postmaster is not None
        postmaster_process = psutil.Process(postmaster)

        started = time.monotonic()
        # To the whole group, as a terminal or `kill -TERM -<pgid>` does; `uv run` passes it on
        # once more.
        os.killpg(process.pid, signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            # Its children run in process groups of their own: only `cli up` can stop them.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    survivors = [process for process in [*children, *orthancs] if _alive(process)]
    assert survivors == []
    assert not _alive(postmaster_process)
    assert not (pgdata / "postmaster.pid").exists(), "a stale lock file would block the next start"
