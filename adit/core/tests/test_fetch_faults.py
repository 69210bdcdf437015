"""A source PACS killed in the middle of a study, for every way of fetching: the transfer never
ends as a success with part of the study, it is retried, and once the PACS is back it ends with
every instance at the destination, once each.

Real worker processes transfer a 300-instance study from an Orthanc of its own; the test kills
that Orthanc (SIGKILL) when about a third has arrived at the destination, then starts it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from adit.core.demo.orthanc import free_ports
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.app_processes import ReceiverProcess, WorkerProcess, clear_task_queue
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import server_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.log()}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["dicomweb", "c-get", "c-move"])
def test_a_source_killed_mid_study_is_retried_never_a_success_then_completes(
    kind, member, fragile_pacs, fragile_study, empty_orthanc2, receiver
):
    clear_task_queue()
    study = fragile_study
    instances = study.instance_count
    job = ExampleJob.objects.create(owner=member)
    task = ExampleTask.objects.create(
        job=job,
        source=server_for(fragile_pacs, kind=kind),
        destination=server_for(empty_orthanc2),
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
    )
    job.start_processing(verified=True)
    channel_host, channel_port = receiver.channel_address
    env = {
        "FILE_CHANNEL_HOST": channel_host,
        "FILE_CHANNEL_PORT": str(channel_port),
        "DICOM_TASK_MAX_ATTEMPTS": "6",
    }

    def reload() -> ExampleTask:
        task.refresh_from_db()
        return task

    with WorkerProcess("dicom", env=env) as worker:
        _wait_for(lambda: empty_orthanc2.count_instances() >= instances // 3, 60, "a third", worker)
        fragile_pacs.kill()
        try:
            _wait_for(lambda: reload().status != TaskStatus.IN_PROGRESS, 60, "the end", worker)
            assert task.status == TaskStatus.PENDING, (task.status, task.message, task.log)
            assert "will be retried" in task.message
            assert empty_orthanc2.count_instances() < instances
        finally:
            fragile_pacs.start()
        _wait_for(lambda: reload().status == TaskStatus.SUCCESS, 120, "success", worker)

    job.refresh_from_db()
    assert (job.status, job.message) == (JobStatus.SUCCESS, "All tasks succeeded.")
    held = empty_orthanc2.study_instance_uids(study.study_instance_uid)
    assert len(held) == instances
    assert set(held) == set(study.series[0].sop_instance_uids)
    assert f"holds all {instances} instance(s) that FRAGILE holds" in task.log


def test_a_receiver_stopped_mid_move_is_no_failed_attempt_and_the_task_resumes(
    member, fragile_pacs, fragile_study, empty_orthanc2
):
    """The receiver (``manage.py receiver``) gets SIGTERM during a C-MOVE, as on a restart: the
    task goes back to the queue without using up an attempt, and finishes once the receiver
    runs again."""
    from django.conf import settings

    clear_task_queue()
    study = fragile_study
    store_port, channel_port = free_ports(2)
    receiver_env = {"RECEIVER_PORT": str(store_port), "FILE_CHANNEL_PORT": str(channel_port)}
    session_receiver = fragile_pacs.modalities["ADIT"]
    fragile_pacs.add_modality("ADIT", settings.RECEIVER_AE_TITLE, "127.0.0.1", store_port)
    job = ExampleJob.objects.create(owner=member)
    task = ExampleTask.objects.create(
        job=job,
        source=server_for(fragile_pacs, kind="c-move"),
        destination=server_for(empty_orthanc2),
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
    )
    job.start_processing(verified=True)

    def reload() -> ExampleTask:
        task.refresh_from_db()
        return task

    receiver = ReceiverProcess(receiver_env)
    try:
        with WorkerProcess("dicom", env={"FILE_CHANNEL_PORT": str(channel_port)}) as worker:
            _wait_for(lambda: reload().progress_done >= 30, 60, "the transfer", worker)
            receiver.stop()
            _wait_for(lambda: reload().status != TaskStatus.IN_PROGRESS, 60, "the end", worker)
            assert task.status == TaskStatus.PENDING, (task.status, task.message, task.log)
            assert "receiver" in task.message and "stopped" in task.message
            assert "resumes in" in task.message
            assert task.attempts == 0  # not a failed attempt

            receiver = ReceiverProcess(receiver_env)
            _wait_for(lambda: reload().status == TaskStatus.SUCCESS, 120, "success", worker)
    finally:
        receiver.stop()
        fragile_pacs.add_modality("ADIT", *session_receiver)
    held = empty_orthanc2.study_instance_uids(study.study_instance_uid)
    assert set(held) == set(study.series[0].sop_instance_uids)
