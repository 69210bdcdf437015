"""A task whose worker died is picked up again when a worker starts."""

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from adit.core.tasks import delete_expired_channel_messages
from adit.core.tests.app_processes import clear_task_queue, database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _fetch_value(query: str, params: list) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    assert row is not None
    return row[0]


def _job_status(job_id: int) -> object:
    return _fetch_value("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])


def _simulate_worker_killed_while_running(job_id: int) -> None:
    """The state a `kill -9` leaves: the job is 'doing' and its worker went silent long ago."""
    worker_id = _fetch_value(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - interval '1 hour') RETURNING id",
        [],
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            [worker_id, job_id],
        )


def test_worker_start_retries_jobs_of_dead_workers():
    clear_task_queue()
    job_id = delete_expired_channel_messages.defer(timestamp=0)  # pyright: ignore[reportCallIssue]
    _simulate_worker_killed_while_running(job_id)
    assert _job_status(job_id) == "doing"

    worker = subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--queue", "default"],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "adit.settings.test",
            "DATABASE_URL": database_url(),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _job_status(job_id) != "succeeded" and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)
        assert _job_status(job_id) == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert "Put 1 stalled job(s) back in the queue." in output
    assert worker.returncode == 0, output
