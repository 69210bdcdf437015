"""Batch transfers for real: the pages of the app, a real worker process and real Orthancs.
The round trip a data manager makes (a batch query's export uploaded unchanged), the check
run by the worker, and the transfers to a folder, unpseudonymized and as NIfTI."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import resolve, reverse

from adit.batch_transfer.models import BatchTransferJob, CheckResult, Phase
from adit.core.jobs import registry
from adit.core.jobs.statuses import JobStatus
from adit.core.tests.app_processes import WorkerProcess, clear_task_queue
from adit.core.tests.factories import give_permissions

from .conftest import csv_bytes, give, run_pending_tasks

pytestmark = [pytest.mark.integration]


def _wait_for(job_model, pk, worker, done, what: str, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while True:
        job = job_model.objects.get(pk=pk)
        if done(job):
            return job
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
        assert time.monotonic() < deadline, f"{what} did not happen:\n{worker.log()}"
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_a_batch_query_export_goes_into_a_batch_transfer_unchanged(
    client, researcher, source_server, destination_server, orthanc1_studies, empty_orthanc2
):
    clear_task_queue()
    give_permissions(researcher, "batch_query", "add_batchqueryjob", "view_batchqueryjob")
    client.force_login(researcher)
    patient = orthanc1_studies[1].patient_id  # a patient with two studies
    studies = [s for s in orthanc1_studies if s.patient_id == patient]
    assert len(studies) == 2
    query_file = (
        "PatientID,Modality,Pseudonym\n"
        f"{patient},CT,TRIAL-0001\n"
        "NOBODY-0000,CT,TRIAL-0002\n"  # found nothing: its export line is skipped
    ).encode()

    with WorkerProcess("dicom") as worker:
        response = client.post(
            reverse("batch_query:job_create"),
            {
                "source": source_server.pk,
                "project_name": "Round trip",
                "batch_file": SimpleUploadedFile("query.csv", query_file),
            },
        )
        assert response.status_code == 302
        # The batch query's job through the engine's registry: no app imports another.
        query_pk = resolve(response["Location"]).kwargs["pk"]
        query_jobs = next(k for k in registry.all_kinds() if k.namespace == "batch_query")
        _wait_for(query_jobs.job_model, query_pk, worker, lambda j: j.is_finished, "the query")
        export = client.get(reverse("batch_query:job_export_xlsx", args=[query_pk]))
        exported = b"".join(export.streaming_content)  # pyright: ignore[reportAttributeAccessIssue]

        response = client.post(
            reverse("batch_transfer:job_create"),
            {
                "source": source_server.pk,
                "destination": destination_server.pk,
                "batch_file": SimpleUploadedFile("results.xlsx", exported),
            },
            follow=True,
        )
        page = response.content.decode()
        assert "1 line was skipped: lines of a batch query export that found no study" in page
        job = BatchTransferJob.objects.get()
        job = _wait_for(BatchTransferJob, job.pk, worker, lambda j: j.is_finished, "the transfer")

    assert (job.status, job.message) == (JobStatus.SUCCESS, "All tasks succeeded.")
    assert sorted(job.tasks.values_list("study_uid", flat=True)) == sorted(
        s.study_instance_uid for s in studies
    )
    assert job.skipped_lines == [4]  # of the export: its lines 2 and 3 are the two studies
    sent = sum(s.instance_count for study in studies for s in study.series if s.modality == "CT")
    assert empty_orthanc2.count_instances() == sent
    patients = empty_orthanc2.rest("GET", "/patients?expand")
    assert [p["MainDicomTags"]["PatientID"] for p in patients] == ["TRIAL-0001"]


@pytest.mark.django_db(transaction=True)
def test_the_worker_checks_then_transfers_unpseudonymized_to_a_folder(
    client, researcher, source_server, destination_folder, orthanc1_studies
):
    clear_task_queue()
    give(researcher, "can_transfer_unpseudonymized")
    client.force_login(researcher)
    study = orthanc1_studies[0]
    series = study.series[0]
    rows = csv_bytes(
        [study.patient_id, study.study_instance_uid, series.series_instance_uid, ""],
        ["0000", "1.2.826.0.1.3680043.8.498.999", "", ""],
    )

    with WorkerProcess("dicom") as worker:
        response = client.post(
            reverse("batch_transfer:job_create"),
            {
                "source": source_server.pk,
                "destination": destination_folder.pk,
                "check_first": "on",
                "batch_file": SimpleUploadedFile("studies.csv", rows),
            },
        )
        assert response.status_code == 302
        pk = BatchTransferJob.objects.get().pk
        job = _wait_for(
            BatchTransferJob, pk, worker, lambda j: j.phase == Phase.CHECKED, "the check"
        )
        results = list(job.tasks.order_by("pk").values_list("check_result", "checked_instances"))
        assert results == [
            (CheckResult.FOUND, series.instance_count),
            (CheckResult.NOT_FOUND, None),
        ]

        client.post(reverse("batch_transfer:job_start", args=[pk]))
        job = _wait_for(BatchTransferJob, pk, worker, lambda j: j.is_finished, "the transfer")

    assert job.status == JobStatus.FAILURE  # the study the check did not find
    found = job.tasks.order_by("pk").first()
    assert found is not None and found.progress_text == (
        f"{series.instance_count} of {series.instance_count} instances"
    )
    files = sorted(Path(destination_folder.path).rglob("*.dcm"))
    assert len(files) == series.instance_count
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (first.PatientID, first.SeriesInstanceUID) == (
        study.patient_id,
        series.series_instance_uid,
    )


@pytest.mark.django_db
def test_a_folder_gets_nifti_volumes_under_the_pseudonym(
    researcher, source_server, destination_folder, orthanc1_studies
):
    from adit.batch_transfer.batch_file import read_batch_file
    from adit.core.transfer.forms import TransferChoices

    study = next(s for s in orthanc1_studies if "CT" in s.modalities)
    batch = read_batch_file(
        csv_bytes([study.patient_id, study.study_instance_uid, "", "NIFTI-1"]),
        "studies.csv",
        max_lines=None,
        pseudonym_required=True,
    )
    job = BatchTransferJob.create_with_tasks(
        owner=researcher,
        source=source_server,
        studies=batch.studies,
        options=TransferChoices(destination=destination_folder, convert_to_nifti=True),
        check_first=False,
    )
    run_pending_tasks(job)
    assert job.status in (JobStatus.SUCCESS, JobStatus.WARNING), job.tasks.get().log
    root = Path(destination_folder.path)
    assert list(root.rglob("*.nii.gz")) and not list(root.rglob("*.dcm"))
    assert all("NIFTI-1" in str(path) for path in root.rglob("*.nii.gz"))
