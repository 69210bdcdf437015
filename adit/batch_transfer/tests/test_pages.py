"""The batch transfer pages as a user meets them: the form that creates nothing while the
file or an option has a problem, the project named on the form, the permission matrix, the
two steps of a checked job and the per-line export read back."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import load_workbook
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.batch_transfer.models import BatchTransferJob, BatchTransferTask, CheckResult, Phase
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import Project
from adit.core.tests.factories import give_permissions, grant, unreachable_server

from .conftest import csv_bytes, give

pytestmark = pytest.mark.django_db

NEW = reverse("batch_transfer:job_create")
STUDY_A = "1.2.826.0.1.3680043.8.498.1"
STUDY_B = "1.2.826.0.1.3680043.8.498.2"
SERIES_1 = "1.2.826.0.1.3680043.8.498.1.1"


@pytest.fixture
def logged_in(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture
def nodes(researcher, tmp_path):
    from adit.core.models import DicomFolder

    source = unreachable_server("Hospital PACS")
    grant(source, researcher.active_group, source=True)
    folder = DicomFolder.objects.create(name="Research share", path=str(tmp_path / "share"))
    grant(folder, researcher.active_group, destination=True)
    return source, folder


def _post(client, nodes, data: bytes, filename: str = "studies.csv", url=NEW, **fields):
    source, destination = nodes
    form = {
        "source": source.pk,
        "destination": destination.pk,
        "batch_file": SimpleUploadedFile(filename, data),
        **fields,
    }
    return client.post(url, form)


def _page(response) -> str:
    return response.content.decode()


def test_a_valid_file_creates_a_job_whose_studies_are_checked_first(
    logged_in, researcher, nodes, django_capture_on_commit_callbacks
):
    give(researcher, "can_process_urgently")
    data = csv_bytes(
        ["0012345", STUDY_A, SERIES_1, "SUBJ-01"],
        ["0012345", STUDY_A, "", "SUBJ-01"],
        ["0099", STUDY_B, "", "SUBJ-02"],
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _post(
            logged_in, nodes, data, check_first="on", trial_protocol_id="T-7", urgent="on"
        )

    job = BatchTransferJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("batch_transfer:job_detail", args=[job.pk])
    assert len(callbacks) == 1, "the check is queued once the job is saved"
    callbacks[0]()
    queued = ProcrastinateJob.objects.get(task_name="adit.batch_transfer.check_studies")
    assert queued.args == {"job_id": job.pk, "check_round": 0}
    # Before transfers of the same priority: somebody waits for its answer.
    assert (queued.queue_name, queued.priority) == ("dicom", job.urgent_priority + 1)
    assert (job.phase, job.status, job.trial_protocol_id) == (
        Phase.CHECKING,
        JobStatus.UNVERIFIED,
        "T-7",
    )
    tasks = [(t.study_uid, t.series_uids, t.lines, t.pseudonym) for t in job.tasks.all()]
    assert tasks == [(STUDY_A, [], [2, 3], "SUBJ-01"), (STUDY_B, [], [4], "SUBJ-02")]

    page = _page(logged_in.get(response["Location"]))
    assert "Checking the studies at Hospital PACS" in page
    assert 'data-testid="status">Checking<' in page
    assert 'data-testid="start-transfer"' not in page, "no start before the check ended"


def test_without_the_check_the_job_is_queued_at_once(logged_in, nodes):
    data = csv_bytes(["0012345", STUDY_A, "", "SUBJ-01"])
    _post(logged_in, nodes, data)  # the checkbox left off
    job = BatchTransferJob.objects.get()
    assert (job.phase, job.status) == (Phase.STARTED, JobStatus.PENDING)
    assert job.tasks.get().queued_job_id is not None


@pytest.mark.parametrize(
    ("row", "column", "message"),
    [
        (["0012345", "1.2.3.abc", "", "S1"], "StudyInstanceUID", "digits and dots only"),
        (["0012345", "1." + "2" * 70, "", "S1"], "StudyInstanceUID", "Longer than 64"),
        (["0012345", STUDY_A, "1.2.x", "S1"], "SeriesInstanceUID", "digits and dots only"),
        (["0012345", STUDY_A, "", "S\\1"], "Pseudonym", "backslash"),
        (["0012345", STUDY_A, "", "P" * 65], "Pseudonym", "Longer than 64"),
        (
            ["0012345", STUDY_A, "", ""],
            "Pseudonym",
            "You are only allowed to transfer pseudonymized.",
        ),
        (["", STUDY_A, "", "S1"], "PatientID", "This field is required."),
    ],
)
def test_a_line_problem_is_named_and_nothing_is_created(logged_in, nodes, row, column, message):
    response = _post(logged_in, nodes, csv_bytes(["0099", STUDY_B, "", "S2"], row))
    page = _page(response)
    assert response.status_code == 200
    assert BatchTransferJob.objects.count() == 0 and Project.objects.count() == 0
    assert "The batch file has 1 problem (listed below); nothing was created." in page
    problem = page.split('data-testid="batch-file-problem"', 1)[1].split("</tr>", 1)[0]
    assert ">3<" in problem and column in problem
    assert message.lower() in problem.lower().replace("&#x27;", "'")


def test_whole_file_problems_with_upstreams_messages(logged_in, nodes):
    page = _page(
        _post(
            logged_in,
            nodes,
            csv_bytes(
                ["0012345", STUDY_A, "", "S1"],
                ["0099", STUDY_A, "", "S1"],
                ["0012345", STUDY_B, "", "S9"],
            ),
        )
    )
    assert f"Same Study Instance UID {STUDY_A} can&#x27;t belong to different Patient IDs" in page
    assert "Same Patient ID 0012345 can&#x27;t have different pseudonyms" in page
    assert "Same pseudonym S1 can&#x27;t belong to different Patient IDs" in page
    assert BatchTransferJob.objects.count() == 0


def test_unpseudonymized_lines_need_the_permission(logged_in, researcher, nodes):
    give(researcher, "can_transfer_unpseudonymized")
    response = _post(logged_in, nodes, csv_bytes(["0012345", STUDY_A, "", ""]))
    assert response.status_code == 302
    assert BatchTransferJob.objects.get().tasks.get().pseudonym == ""


def test_at_most_500_lines_for_non_staff(logged_in, nodes):
    rows = [[f"P{n}", f"1.2.3.{n}", "", f"S{n}"] for n in range(501)]
    page = _page(_post(logged_in, nodes, csv_bytes(*rows)))
    assert "500" in page and BatchTransferJob.objects.count() == 0


def test_the_ethics_approval_is_required_when_the_setting_says_so(logged_in, nodes, settings):
    settings.ETHICS_COMMITTEE_APPROVAL_REQUIRED = True
    data = csv_bytes(["0012345", STUDY_A, "", "S1"])
    page = _page(_post(logged_in, nodes, data))
    assert "Ethics committee approval:</strong> This field is required." in page
    assert BatchTransferJob.objects.count() == 0
    _post(logged_in, nodes, data, ethics_application_id="EK 123/24")
    job = BatchTransferJob.objects.get()
    assert job.ethics_application_id == "EK 123/24"
    assert "EK 123/24" in _page(logged_in.get(reverse("batch_transfer:job_detail", args=[job.pk])))


def test_a_new_project_is_created_for_the_group_and_an_existing_name_is_reused(
    logged_in, researcher, nodes
):
    data = csv_bytes(["0012345", STUDY_A, "", "S1"])
    _post(logged_in, nodes, data, new_project_name="Lung 2026", project_description="Screening")
    project = Project.objects.get()
    assert (project.name, project.description) == ("Lung 2026", "Screening")
    assert list(project.groups.all()) == [researcher.active_group]
    assert BatchTransferJob.objects.get().project == project

    _post(logged_in, nodes, data, new_project_name="lung 2026")  # the same, typed again
    assert Project.objects.count() == 1
    assert [job.project for job in BatchTransferJob.objects.all()] == [project, project]

    other = Project.objects.create(name="Someone else's")
    other.groups.add(GroupFactory(name="Other group"))
    page = _page(_post(logged_in, nodes, data, new_project_name="Someone else's"))
    assert "exists and is not one of your group" in page
    assert BatchTransferJob.objects.count() == 2


def test_a_pseudonym_the_project_gave_another_patient_is_refused(logged_in, researcher, nodes):
    project = Project.objects.create(name="Trial")
    project.groups.add(researcher.active_group)
    project.claim_pseudonym("OTHER-1", "S1")
    page = _page(
        _post(logged_in, nodes, csv_bytes(["0012345", STUDY_A, "", "S1"]), project=project.pk)
    )
    assert "already given to another patient" in page or "S1" in page
    assert BatchTransferJob.objects.count() == 0


def test_options_for_folders_only_are_refused_for_a_server(logged_in, researcher, nodes):
    source, _ = nodes
    server = unreachable_server("Research PACS")
    grant(server, researcher.active_group, destination=True)
    page = _page(
        _post(
            logged_in,
            (source, server),
            csv_bytes(["0012345", STUDY_A, "", "S1"]),
            convert_to_nifti="on",
        )
    )
    assert "NIfTI conversion only works for folder destinations." in page
    assert BatchTransferJob.objects.count() == 0


def test_permission_matrix(client, nodes):
    member = UserFactory(username="carol", groups=[GroupFactory(name="Radiologie")])
    client.force_login(member)
    assert client.get(NEW).status_code == 403  # without add_batchtransferjob
    give(member, "add_batchtransferjob")
    page = _page(client.get(NEW))
    assert 'name="urgent"' not in page  # without can_process_urgently
    give(member, "can_process_urgently")
    assert 'name="urgent"' in _page(client.get(NEW))

    stranger = UserFactory(username="bob")
    job = BatchTransferJob.objects.create(owner=stranger, phase=Phase.CHECKED)
    source, folder = nodes
    BatchTransferTask.objects.create(
        job=job, source=source, destination=folder, study_uid=STUDY_A, lines=[2]
    )
    for name in ("job_detail", "job_outcome_xlsx", "job_outcome_csv", "job_pseudonyms"):
        assert client.get(reverse(f"batch_transfer:{name}", args=[job.pk])).status_code == 404
    for name in ("job_start", "job_replace", "job_delete"):
        assert client.post(reverse(f"batch_transfer:{name}", args=[job.pk])).status_code == 404
    assert BatchTransferJob.objects.get().phase == Phase.CHECKED


def _checked_job(owner, nodes) -> BatchTransferJob:
    source, folder = nodes
    job = BatchTransferJob.objects.create(owner=owner, phase=Phase.CHECKED)
    for study_uid, result, lines in (
        (STUDY_A, CheckResult.FOUND, [2, 3]),
        (STUDY_B, CheckResult.NOT_FOUND, [4]),
    ):
        BatchTransferTask.objects.create(
            job=job,
            source=source,
            destination=folder,
            patient_id="0012345",
            study_uid=study_uid,
            pseudonym="S1",
            lines=lines,
            line_series_uids=[""] * len(lines),
            check_result=result,
            check_message="Found." if result == CheckResult.FOUND else "No study found.",
            checked_instances=7 if result == CheckResult.FOUND else None,
        )
    return job


def test_the_checked_job_page_offers_the_start_and_a_corrected_file(
    logged_in, researcher, nodes, django_capture_on_commit_callbacks
):
    job = _checked_job(researcher, nodes)
    url = reverse("batch_transfer:job_detail", args=[job.pk])
    page = _page(logged_in.get(url))
    assert "2 studies:" in page and "1 found" in page and "1 not found" in page
    assert "Transfer the 1 study found" in page
    assert page.count('data-testid="check-result"') == 2
    only_missing = _page(logged_in.get(url, {"check_result": CheckResult.NOT_FOUND}))
    assert only_missing.count('data-testid="check-result"') == 1
    assert "Not found" in only_missing.split('data-testid="task-table"')[1]

    # A corrected file with a problem leaves the job as it was.
    bad = SimpleUploadedFile("fixed.csv", csv_bytes(["0012345", "1.2.x", "", "S1"]))
    response = logged_in.post(
        reverse("batch_transfer:job_replace", args=[job.pk]), {"batch_file": bad}
    )
    assert response.status_code == 400
    assert "The corrected file was not taken" in _page(response)
    assert job.tasks.count() == 2

    good = SimpleUploadedFile(
        "fixed.csv", csv_bytes(["0012345", STUDY_A, "", "S1"], ["0099", STUDY_B, "", "S2"])
    )
    with django_capture_on_commit_callbacks(execute=False):
        response = logged_in.post(
            reverse("batch_transfer:job_replace", args=[job.pk]), {"batch_file": good}, follow=True
        )
    assert "1 of them are checked now, the others were checked before." in _page(response)

    job.refresh_from_db()
    assert job.phase == Phase.CHECKING
    job.tasks.filter(study_uid=STUDY_B).update(check_result=CheckResult.NOT_FOUND)
    job.phase = Phase.CHECKED  # as the check of the corrected file would leave it
    job.save()
    response = logged_in.post(reverse("batch_transfer:job_start", args=[job.pk]), follow=True)
    assert "The transfer of 1 study was started." in _page(response)
    statuses = dict(job.tasks.values_list("study_uid", "status"))
    assert statuses == {STUDY_A: TaskStatus.PENDING, STUDY_B: TaskStatus.FAILURE}

    again = logged_in.post(reverse("batch_transfer:job_start", args=[job.pk]))
    assert again.status_code == 400 and "was started already" in _page(again)
    late = SimpleUploadedFile("late.csv", csv_bytes(["0012345", STUDY_A, "", "S1"]))
    response = logged_in.post(
        reverse("batch_transfer:job_replace", args=[job.pk]), {"batch_file": late}
    )
    assert response.status_code == 400 and "can no longer be replaced" in _page(response)


def test_the_export_has_a_row_per_line_with_its_outcome(logged_in, researcher, nodes):
    job = _checked_job(researcher, nodes)
    job.skipped_lines = [5]
    job.save()
    response = logged_in.get(reverse("batch_transfer:job_outcome_csv", args=[job.pk]))
    assert response["Cache-Control"].startswith("max-age=0")
    text = b"".join(response.streaming_content).decode("utf-8-sig")  # pyright: ignore[reportAttributeAccessIssue]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["Line"], r["StudyInstanceUID"], r["AtSource"], r["Status"]) for r in rows] == [
        ("2", STUDY_A, "Found", "Not started"),
        ("3", STUDY_A, "Found", "Not started"),
        ("4", STUDY_B, "Not found", "Not started"),
        ("5", "", "", "Skipped"),
    ]
    assert rows[0]["Instances"] == "7 at the source"
    assert rows[2]["Message"] == "No study found.", "before the start: what the check said"

    response = logged_in.get(reverse("batch_transfer:job_outcome_xlsx", args=[job.pk]))
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active  # pyright: ignore[reportAttributeAccessIssue]
    values = list(sheet.iter_rows(values_only=True))  # type: ignore[union-attr]
    assert values[0][:3] == ("Line", "PatientID", "StudyInstanceUID")
    assert [row[0] for row in values[1:]] == [2, 3, 4, 5]


def test_a_corrected_file_staff_upload_is_held_to_the_owners_rights(
    client, staff_user, researcher, nodes, django_capture_on_commit_callbacks
):
    job = _checked_job(researcher, nodes)
    give_permissions(staff_user, "batch_transfer", "add_batchtransferjob")
    give_permissions(staff_user, "batch_transfer", "can_transfer_unpseudonymized")
    client.force_login(staff_user)
    unpseudonymized = SimpleUploadedFile("fixed.csv", csv_bytes(["0012345", STUDY_A, "", ""]))
    response = client.post(
        reverse("batch_transfer:job_replace", args=[job.pk]), {"batch_file": unpseudonymized}
    )
    assert response.status_code == 400
    assert "You are only allowed to transfer pseudonymized." in _page(response)
    assert job.tasks.count() == 2


def test_the_destination_must_be_chosen(logged_in, nodes):
    page = _page(logged_in.get(NEW))
    assert "Choose a destination" in page, "no destination is preselected"
    source, _ = nodes
    response = logged_in.post(
        NEW,
        {
            "source": source.pk,
            "batch_file": SimpleUploadedFile("s.csv", csv_bytes(["0012345", STUDY_A, "", "S1"])),
        },
    )
    assert "Choose where the studies go." in _page(response)
    assert BatchTransferJob.objects.count() == 0


def test_with_staff_verification_the_start_waits_for_staff(
    logged_in, researcher, staff_user, nodes, settings, client
):
    settings.JOBS_NEED_STAFF_VERIFICATION = True
    job = _checked_job(researcher, nodes)
    response = logged_in.post(reverse("batch_transfer:job_start", args=[job.pk]), follow=True)
    assert "The transfer of 1 study starts once staff verify it." in _page(response)
    job.refresh_from_db()
    assert (job.phase, job.status) == (Phase.STARTED, JobStatus.UNVERIFIED)
    assert job.tasks.get(study_uid=STUDY_A).queued_job_id is None

    client.force_login(staff_user)
    client.post(reverse("batch_transfer:job_verify", args=[job.pk]))
    job.refresh_from_db()
    # In progress, not pending: the study the check did not find has ended already.
    assert job.status == JobStatus.IN_PROGRESS
    assert job.tasks.get(study_uid=STUDY_A).queued_job_id is not None
