"""The requests the upload page's script makes, as a script (or someone forging them) would
make them: start, one per file, finish; what the server refuses and what it stores."""

from __future__ import annotations

import datetime
import io
import os
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from pydicom import dcmread

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.core.jobs.processing import clean_up_stuck_tasks
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import DicomFolder, Project
from adit.core.tests.factories import grant
from adit.upload.models import UploadJob, UploadTask

from .conftest import PSEUDONYM, encoded, original_instance, pseudonymized_file

START_URL = reverse("upload:job_create")


def start(client, destination, **fields):
    data = {"pseudonym": PSEUDONYM, "destination": destination.pk, "files_total": 2}
    data.update(fields)
    return client.post(START_URL, data)


def send(client, answer: dict, content: bytes, name: str = "instance.dcm", modalities="CT"):
    upload = SimpleUploadedFile(name, content, content_type="application/dicom")
    return client.post(answer["file_url"], {"file": upload, "study_modalities": modalities})


def files_below(folder: DicomFolder) -> list[Path]:
    return sorted(path for path in Path(folder.path).rglob("*.dcm"))


@pytest.mark.django_db
def test_without_the_permission_the_page_and_every_request_are_refused(client, member):
    client.force_login(member)
    page = client.get(START_URL)
    assert page.status_code == 403
    assert "upload.can_upload_data" in page.content.decode()
    answer = client.post(START_URL, {"pseudonym": PSEUDONYM})
    assert answer.status_code == 403
    assert "upload.can_upload_data" in answer.json()["error"]


def test_the_page_offers_the_groups_destinations_and_the_profile(
    researcher_client, destination_folder, destination_server
):
    page = researcher_client.get(START_URL)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Research share" in text and destination_server.name in text
    # The browser's table of actions is the server's, served with the page.
    assert 'id="upload-profile"' in text and '"00100010": "PSEUDONYM"' in text


@pytest.mark.django_db
def test_a_start_with_bad_fields_says_what_is_wrong_per_field(researcher_client, researcher):
    other_group = GroupFactory(name="Elsewhere")
    foreign = DicomFolder.objects.create(name="Foreign share", path="/tmp/foreign")
    grant(foreign, other_group, destination=True)
    answer = researcher_client.post(
        START_URL, {"pseudonym": "A\\B", "destination": foreign.pk, "files_total": 0}
    )
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert "backslash" in errors["pseudonym"][0]["message"]
    assert "valid choice" in errors["destination"][0]["message"]
    assert errors["files_total"]
    assert not UploadJob.objects.exists()


def test_a_started_upload_is_a_job_in_progress_with_a_key_per_project(
    researcher_client, researcher, destination_folder
):
    project = Project.objects.create(name="Lung study")
    project.groups.add(researcher.active_group)
    first = start(researcher_client, destination_folder, project=project.pk, files_skipped=3)
    second = start(researcher_client, destination_folder, project=project.pk)
    unbound = start(researcher_client, destination_folder)
    assert first.status_code == second.status_code == unbound.status_code == 201
    # Uploads of one project derive the same new UIDs; one without a project its own.
    assert first.json()["key"] == second.json()["key"] != unbound.json()["key"]
    assert first.json()["key"] != project.secret
    job = UploadJob.objects.get(pk=first.json()["job"])
    assert job.status == JobStatus.IN_PROGRESS and job.files_skipped == 3
    assert job.task.progress_text == "0 of 2 files"
    job_list = researcher_client.get(reverse("upload:job_list")).content.decode()
    assert f'href="{first.json()["job_url"]}"' in job_list


def test_a_pseudonymized_file_is_stored_in_the_folder_layout(
    researcher_client, researcher, destination_folder
):
    answer = start(researcher_client, destination_folder, files_skipped=1).json()
    stored = send(researcher_client, answer, pseudonymized_file())
    assert stored.status_code == 200, stored.json()
    (path,) = files_below(destination_folder)
    job_folder = path.relative_to(destination_folder.path).parts[0]
    assert job_folder.startswith(f"adit_upload_{answer['job']}_")
    assert path.relative_to(destination_folder.path).parts[1] == PSEUDONYM
    written = dcmread(path)
    assert written.PatientID == PSEUDONYM and stored.json()["stored"] == written.SOPInstanceUID
    finished = researcher_client.post(answer["finish_url"])
    # The browser said two files would come; one did.
    assert finished.json()["message"] == "Upload finished: 1 stored, 1 skipped (not DICOM)."
    job = UploadJob.objects.get(pk=answer["job"])
    assert job.task.files_stored == 1 and job.task.bytes_stored > 0


def test_a_forged_unpseudonymized_file_is_refused_and_not_stored(
    researcher_client, destination_folder
):
    answer = start(researcher_client, destination_folder).json()
    refused = send(researcher_client, answer, encoded(original_instance()))
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert "PatientID is not the pseudonym" in error
    assert "PatientIdentityRemoved is not YES" in error
    # Pseudonymized for someone else: refused as well.
    other = send(researcher_client, answer, pseudonymized_file(pseudonym="SOMEONE-ELSE"))
    assert other.status_code == 422 and "PatientName is not the pseudonym" in other.json()["error"]
    assert files_below(destination_folder) == []
    task = UploadJob.objects.get(pk=answer["job"]).task
    assert task.files_refused == 2 and "Refused a file" in task.log
    finished = researcher_client.post(answer["finish_url"]).json()
    assert finished["status"] == "Failure"
    assert finished["message"] == "Upload failed: 2 refused by the server."


def test_a_file_with_a_private_tag_or_an_institution_left_is_refused(
    researcher_client, destination_folder
):
    answer = start(researcher_client, destination_folder).json()
    dataset = dcmread(io.BytesIO(pseudonymized_file()))
    dataset.InstitutionName = "St. Elsewhere"
    block = dataset.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "Mueller^Hans")
    refused = send(researcher_client, answer, encoded(dataset))
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert "InstitutionName, which the profile removes" in error
    assert "private attribute" in error


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"This CD contains images. Start viewer.exe to see them.\n", "Not a DICOM file"),
        (pseudonymized_file()[:700], "cut off"),
        (pseudonymized_file()[:136], "no DICOM instance"),
    ],
    ids=["text file", "cut off in its data set", "cut off in its header"],
)
def test_a_file_that_is_no_dicom_instance_is_refused_with_the_reason(
    researcher_client, destination_folder, content, expected
):
    answer = start(researcher_client, destination_folder).json()
    refused = send(researcher_client, answer, content)
    assert refused.status_code == 422
    assert expected in refused.json()["error"]


def test_a_large_file_cut_off_in_its_pixel_data_is_refused(
    researcher_client, destination_folder, settings
):
    # Spooled to a temporary file like a large upload: its pixel data stays on disk.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    answer = start(researcher_client, destination_folder).json()
    complete = pseudonymized_file()
    refused = send(researcher_client, answer, complete[:-5000])
    assert refused.status_code == 422
    assert "cut off" in refused.json()["error"]
    assert send(researcher_client, answer, complete).status_code == 200


def test_a_file_goes_to_a_pacs(researcher_client, destination_server, empty_orthanc2):
    answer = start(researcher_client, destination_server, files_total=1).json()
    stored = send(researcher_client, answer, pseudonymized_file(name="MR_small.dcm"), "MR")
    assert stored.status_code == 200, stored.json()
    (study_uid,) = empty_orthanc2.list_study_uids()
    (held,) = empty_orthanc2.study_files(study_uid)
    assert dcmread(io.BytesIO(held)).PatientID == PSEUDONYM
    finished = researcher_client.post(answer["finish_url"]).json()
    assert finished == {"message": "Upload finished: 1 stored.", "status": "Success"}


def test_a_destination_that_is_down_fails_the_file_with_its_reason(
    researcher_client, researcher, tmp_path
):
    folder = DicomFolder.objects.create(name="Gone share", path=str(tmp_path / "gone"))
    grant(folder, researcher.active_group, destination=True)
    answer = start(researcher_client, folder).json()
    (tmp_path / "gone").write_text("a file where the folder should be")
    failed = send(researcher_client, answer, pseudonymized_file())
    assert failed.status_code == 502
    assert "Could not save" in failed.json()["error"]
    os.remove(tmp_path / "gone")
    task = UploadJob.objects.get(pk=answer["job"]).task
    assert task.files_failed == 1 and "did not take a file" in task.log


def test_stopping_cancels_the_job_and_refuses_later_files(researcher_client, destination_folder):
    answer = start(researcher_client, destination_folder, files_total=5).json()
    assert send(researcher_client, answer, pseudonymized_file()).status_code == 200
    stopped = researcher_client.post(answer["finish_url"], {"stopped": "1"}).json()
    assert stopped == {"message": "Upload stopped: 1 stored, 4 not sent.", "status": "Canceled"}
    late = send(researcher_client, answer, pseudonymized_file())
    assert late.status_code == 409 and "stopped" in late.json()["error"]
    job = UploadJob.objects.get(pk=answer["job"])
    # An upload is not resumed, retried or restarted by a worker: its files are elsewhere.
    assert not job.is_resumable and not job.is_restartable


def test_canceling_on_the_job_page_stops_the_browsers_upload(researcher_client, destination_folder):
    answer = start(researcher_client, destination_folder).json()
    canceled = researcher_client.post(reverse("upload:job_cancel", args=[answer["job"]]))
    assert canceled.status_code in (200, 302)
    job = UploadJob.objects.get(pk=answer["job"])
    assert job.status == JobStatus.CANCELED
    assert job.task.status == TaskStatus.CANCELED
    assert send(researcher_client, answer, pseudonymized_file()).status_code == 409


@pytest.mark.django_db
def test_somebody_elses_upload_cannot_be_sent_to(client, researcher, destination_folder):
    client.force_login(researcher)
    answer = start(client, destination_folder).json()
    intruder = UserFactory(username="mallory", groups=[researcher.active_group])
    client.force_login(intruder)
    assert send(client, answer, pseudonymized_file()).status_code == 404
    assert client.post(answer["finish_url"]).status_code == 404


def test_an_abandoned_upload_ends_after_a_while_and_a_running_one_does_not(
    researcher_client, destination_folder
):
    abandoned = start(researcher_client, destination_folder).json()
    running = start(researcher_client, destination_folder).json()
    long_ago = timezone.now() - datetime.timedelta(minutes=11)
    UploadTask.objects.filter(job_id=abandoned["job"]).update(last_file=long_ago)
    clean_up_stuck_tasks()
    ended = UploadJob.objects.get(pk=abandoned["job"])
    assert ended.status == JobStatus.FAILURE
    assert "The browser stopped sending files" in ended.task.message
    assert UploadJob.objects.get(pk=running["job"]).status == JobStatus.IN_PROGRESS


def test_the_job_and_task_pages_say_where_the_files_went_and_what_did_not_arrive(
    researcher_client, destination_folder
):
    answer = start(researcher_client, destination_folder, files_skipped=2).json()
    send(researcher_client, answer, pseudonymized_file())
    send(researcher_client, answer, b"This is no DICOM file.")
    researcher_client.post(answer["finish_url"])
    job_page = researcher_client.get(answer["job_url"]).content.decode()
    message = "Upload finished with problems: 1 stored, 1 refused by the server, 2 skipped"
    assert message in job_page
    assert "Research share" in job_page and PSEUDONYM in job_page
    task = UploadJob.objects.get(pk=answer["job"]).task
    task_page = researcher_client.get(reverse("upload:task_detail", args=[task.pk]))
    text = task_page.content.decode()
    assert "Destination" in text and ">Source<" not in text
    assert "1 stored, 1 refused, 0 not taken" in text
    assert "Not a DICOM file" in text  # why the refused file did not arrive


def test_a_large_upload_is_stored_from_its_file_as_the_bytes_sent(
    researcher_client, researcher, destination_folder, destination_server, empty_orthanc2, settings
):
    # Spooled to a temporary file like every large upload: it is copied to a folder and sent
    # to a PACS from that file, in pieces, never read whole.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    content = pseudonymized_file(name="MR_small.dcm")
    to_folder = start(researcher_client, destination_folder, files_total=1).json()
    assert send(researcher_client, to_folder, content, modalities="MR").status_code == 200
    (path,) = files_below(destination_folder)
    assert path.read_bytes() == content
    to_pacs = start(researcher_client, destination_server, files_total=1).json()
    stored = send(researcher_client, to_pacs, content, modalities="MR")
    assert stored.status_code == 200, stored.json()
    (study_uid,) = empty_orthanc2.list_study_uids()
    (held,) = empty_orthanc2.study_files(study_uid)
    held_dataset, sent_dataset = dcmread(io.BytesIO(held)), dcmread(io.BytesIO(content))
    assert held_dataset.SOPInstanceUID == sent_dataset.SOPInstanceUID
    assert held_dataset.PixelData == sent_dataset.PixelData
