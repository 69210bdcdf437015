"""Transfers run by real worker processes: a job runs to the end, cancel stops a running task
within seconds, and a worker killed mid-task loses and doubles nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from adit.core.demo.orthanc import OrthancServer
from adit.core.demo.synthetic import describe_ct_series, generate_ct_series
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import DicomServer
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.example_app.models import ExampleJob, ExampleTask

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Small slices, many of them: slow enough (several seconds) to cancel, kill or stop a worker
# in the middle of the task, cheap to generate.
INSTANCES = 600
ROWS = COLUMNS = 64


@pytest.fixture(scope="module")
def big_study_pacs(tmp_path_factory) -> Iterator[OrthancServer]:
    """An Orthanc of its own holding one CT study of 300 instances."""
    with OrthancServer("BIGPACS", storage_dir=tmp_path_factory.mktemp("bigpacs")) as orthanc:
        orthanc.upload(generate_ct_series(INSTANCES, rows=ROWS, columns=COLUMNS, seed=7))
        yield orthanc


def _server(orthanc: OrthancServer) -> DicomServer:
    return DicomServer.objects.create(
        name=orthanc.ae_title,
        ae_title=orthanc.ae_title,
        host="127.0.0.1",
        port=orthanc.dicom_port,
        study_root_find_support=True,
        study_root_get_support=True,
        store_scp_support=True,
    )


@pytest.fixture
def big_transfer(member, big_study_pacs, empty_orthanc2) -> ExampleTask:
    """A queued job transferring the 300-instance study to the (empty) second Orthanc."""
    clear_task_queue()
    study = describe_ct_series(INSTANCES, seed=7)
    job = ExampleJob.objects.create(owner=member)
    task = ExampleTask.objects.create(
        job=job,
        source=_server(big_study_pacs),
        destination=_server(empty_orthanc2),
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
    )
    job.start_processing(verified=True)
    return task


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, worker=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker is not None:
            assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
        log = f"\n{worker.log()}" if worker is not None else ""
        assert time.monotonic() < deadline, f"timed out waiting for {what}{log}"
        time.sleep(0.05)


def _task(task: ExampleTask) -> ExampleTask:
    task.refresh_from_db()
    return task


def test_a_worker_runs_a_queued_job_to_success(big_transfer, empty_orthanc2):
    with WorkerProcess("dicom") as worker:
        _wait_for(lambda: _task(big_transfer).status == TaskStatus.SUCCESS, 120, "success", worker)
    job = big_transfer.job
    job.refresh_from_db()
    assert (job.status, job.message) == (JobStatus.SUCCESS, "All tasks succeeded.")
    assert empty_orthanc2.count_instances() == INSTANCES
    assert big_transfer.progress_done == INSTANCES


def test_cancel_stops_a_running_task_within_seconds(big_transfer, empty_orthanc2):
    with WorkerProcess("dicom") as worker:
        _wait_for(lambda: _task(big_transfer).progress_done >= 20, 60, "the transfer", worker)
        job = big_transfer.job
        job.refresh_from_db()
        job.cancel()
        asked = time.monotonic()
        _wait_for(
            lambda: _task(big_transfer).status == TaskStatus.CANCELED, 10, "the cancel", worker
        )
        took = time.monotonic() - asked

    assert took < 5, f"the task stopped {took:.1f} s after the cancel"
    assert big_transfer.message == "Task was canceled."
    assert big_transfer.progress_done < INSTANCES
    job.refresh_from_db()
    assert (job.status, job.message) == (JobStatus.CANCELED, "Job was canceled.")
    assert empty_orthanc2.count_instances() < INSTANCES


def test_worker_killed_mid_task_then_a_new_worker_completes_it_exactly_once(
    big_transfer, empty_orthanc2
):
    # The dead worker's jobs count as stalled 3 s after its last heartbeat.
    env = {"STALLED_WORKER_SECONDS": "3"}
    first = WorkerProcess("dicom", env=env)
    try:
        _wait_for(lambda: _task(big_transfer).progress_done >= INSTANCES // 2, 60, "half", first)
        first.kill()
    finally:
        first.stop()
    assert _task(big_transfer).status == TaskStatus.IN_PROGRESS
    stored_before = empty_orthanc2.count_instances()
    assert 0 < stored_before < INSTANCES

    time.sleep(4)
    with WorkerProcess("dicom", env=env) as second:
        _wait_for(lambda: _task(big_transfer).status == TaskStatus.SUCCESS, 120, "success", second)
        log = second.log()
    assert "Put 1 stalled job(s) back in the queue." in log
    # At least the killed attempt and the one that completed; a transient error in between
    # would add an attempt, and the log says which.
    assert big_transfer.attempts >= 2, big_transfer.log
    job = big_transfer.job
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS
    expected = set(describe_ct_series(INSTANCES, seed=7).series[0].sop_instance_uids)
    held = empty_orthanc2.study_instance_uids(big_transfer.study_uid)
    assert len(held) == INSTANCES and set(held) == expected


def test_stopping_the_worker_puts_a_running_task_back_in_the_queue(big_transfer, empty_orthanc2):
    worker = WorkerProcess("dicom", env={"WORKER_SHUTDOWN_GRACE_SECONDS": "0.5"})
    try:
        _wait_for(lambda: _task(big_transfer).progress_done >= 20, 60, "the transfer", worker)
    finally:
        returncode = worker.stop(timeout=15)
    assert returncode == 0
    task = _task(big_transfer)
    assert task.status == TaskStatus.PENDING
    assert task.message == "The worker stopped; the task resumes when a worker runs."
    assert task.queued_job_id is not None

    with WorkerProcess("dicom") as worker:
        _wait_for(lambda: _task(big_transfer).status == TaskStatus.SUCCESS, 120, "success", worker)
    assert empty_orthanc2.count_instances() == INSTANCES


def test_two_transfers_queued_together_run_in_two_worker_processes(
    member, big_study_pacs, empty_orthanc2
):
    """A transfer keeps a core busy (the GIL), so two in one worker process would share a
    core while the other worker idles: the busy worker leaves the second to the idle one."""
    clear_task_queue()
    study = describe_ct_series(INSTANCES, seed=7)
    source, destination = _server(big_study_pacs), _server(empty_orthanc2)
    with WorkerProcess("dicom") as first, WorkerProcess("dicom") as second:
        first.wait_until_ready()
        second.wait_until_ready()
        tasks = []
        for _ in range(2):
            job = ExampleJob.objects.create(owner=member)
            tasks.append(
                ExampleTask.objects.create(
                    job=job,
                    source=source,
                    destination=destination,
                    patient_id=study.patient_id,
                    study_uid=study.study_instance_uid,
                )
            )
        for task in tasks:
            task.job.start_processing(verified=True)
        _wait_for(
            lambda: all(_task(task).status == TaskStatus.SUCCESS for task in tasks),
            180,
            "both transfers",
        )
    logs = [first.log(), second.log()]
    # procrastinate logs "Starting job ...(task_id=<pk>, task_label=...)" for each task it runs.
    ran = [sum(f"(task_id={task.pk}," in log for task in tasks) for log in logs]
    assert ran == [1, 1], "\n---\n".join(logs)
