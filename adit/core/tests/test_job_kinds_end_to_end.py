"""Both job kinds for real: a query job through a real worker process against a real Orthanc,
and a transfer whose job page then shows the study as the source described it."""

from __future__ import annotations

import re
import time

import pytest
from django.utils.html import escape

from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.factories import run_transfer, server_for
from adit.core.tests.job_pages import url
from adit.core.tests.query_app.models import QueryJob, QueryTask

pytestmark = [pytest.mark.integration]


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_query_job_to_success(client, member, orthanc1, orthanc1_studies):
    clear_task_queue()
    patient_id = orthanc1_studies[0].patient_id
    expected = sum(1 for study in orthanc1_studies if study.patient_id == patient_id)
    source = server_for(orthanc1)
    job = QueryJob.objects.create(owner=member, purpose="Priors")
    known = QueryTask.objects.create(job=job, source=source, patient_id=patient_id)
    unknown = QueryTask.objects.create(job=job, source=source, patient_id="NOBODY-HERE")
    job.start_processing(verified=True)

    with WorkerProcess("dicom") as worker:
        deadline = time.monotonic() + 60
        while job.status != JobStatus.SUCCESS:
            assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
            assert time.monotonic() < deadline, f"the job did not succeed:\n{worker.log()}"
            time.sleep(0.1)
            job.refresh_from_db()

    known.refresh_from_db()
    unknown.refresh_from_db()
    assert (known.status, known.result_count, known.message) == (
        TaskStatus.SUCCESS,
        expected,
        f"{expected} study(ies) found.",
    )
    assert (known.progress_done, known.progress_total) == (1, 1)
    assert (unknown.status, unknown.result_count) == (TaskStatus.SUCCESS, 0)
    assert job.message == "All tasks succeeded."

    client.force_login(member)
    page = client.get(url("job_detail", job)).content.decode()
    rows = page.split('data-testid="task-table"', 1)[1]
    assert re.search(
        rf"{re.escape(patient_id)}\s*<.*?>\s*{expected}\s*<.*?1 of 1 queries", rows, re.S
    )
    assert "Processed tasks: 2 of 2" in page and "hx-trigger" not in page


@pytest.mark.django_db
def test_a_transfer_records_the_study_for_its_job_page(
    client, member, orthanc1, empty_orthanc2, orthanc1_studies
):
    study = orthanc1_studies[0]

    task = run_transfer(
        member,
        server_for(orthanc1),
        server_for(empty_orthanc2),
        study.patient_id,
        study.study_instance_uid,
    )

    assert task.status == TaskStatus.SUCCESS, task.message
    assert task.study_date is not None
    assert task.study_date.strftime("%Y%m%d") == study.study_date
    assert task.study_description == study.study_description
    assert task.modalities == list(study.modalities)
    client.force_login(member)
    page = client.get(url("job_detail", task.job)).content.decode()
    rows = page.split("<tbody", 1)[1]
    assert f"{task.study_date:%Y-%m-%d} {', '.join(study.modalities)}" in rows
    assert escape(study.study_description) in rows
    assert f"{study.instance_count} of {study.instance_count} instances" in rows
    assert "ORTHANC1 → ORTHANC2" in page
