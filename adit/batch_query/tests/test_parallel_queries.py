"""A real worker answers the lines of a job several at a time, and the PACS never sees more
associations at once than its server's limit allows (counted at the Orthanc's port)."""

from __future__ import annotations

import time

import pytest

from adit.batch_query.models import BatchQueryJob, BatchQueryResult, BatchQueryTask
from adit.core.demo.connection_counter import ConnectionCounter
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_lines_run_in_parallel_within_the_servers_association_limit(
    researcher, population_server, population_orthanc, population
):
    clear_task_queue()
    patient_ids = sorted({study.patient_id for study in population})
    lines = [(patient_ids[number % len(patient_ids)], "CT") for number in range(30)]
    with ConnectionCounter(("127.0.0.1", population_orthanc.dicom_port)) as counter:
        population_server.port = counter.port
        population_server.max_associations = 2
        population_server.save()
        job = BatchQueryJob.create_with_tasks(
            owner=researcher,
            source=population_server,
            tasks=[
                BatchQueryTask(line=number, patient_id=patient_id, modalities=[modality])
                for number, (patient_id, modality) in enumerate(lines, start=2)
            ],
            project_name="Parallel",
        )
        with WorkerProcess("dicom", env={"DICOM_WORKER_CONCURRENCY": "4"}) as worker:
            deadline = time.monotonic() + 120
            while job.status != JobStatus.SUCCESS:
                assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
                assert time.monotonic() < deadline, f"the job did not succeed:\n{worker.log()}"
                time.sleep(0.1)
                job.refresh_from_db()

    assert "4 task(s) at a time" in worker.log()
    assert counter.most_at_once == 2, (
        f"the lines ran one after another, or over the limit: {counter.most_at_once} at once, "
        f"{counter.total} associations for {len(lines)} lines\n{worker.log()[-4000:]}"
    )
    # One association per line: all C-FINDs of a line share it.
    assert counter.total == len(lines)
    for number, (patient_id, _) in enumerate(lines, start=2):
        task = job.tasks.get(line=number)
        expected = {
            study.study_instance_uid
            for study in population
            if study.patient_id == patient_id and "CT" in study.modalities
        }
        found = set(BatchQueryResult.objects.filter(task=task).values_list("study_uid", flat=True))
        assert (task.status, found) == (TaskStatus.SUCCESS, expected)
