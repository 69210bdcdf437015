"""Job kinds: each app describes its jobs once, and the pages, the admin overview and the cleanup
serve a kind that is not a transfer (the query app, /queries/…) as well as a transfer (the
example app, /example/…). The actions of both are tested in test_job_views.py."""

import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from adit.core.jobs import registry
from adit.core.jobs.processing import processor_for
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.sections import Section
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import DicomServerFactory
from adit.core.tests.job_pages import QUERY_APP, column_headers, listed_job_ids, make_job, url
from adit.core.tests.query_app.models import QueryJob, QueryProcessor, QueryTask
from adit.core.transfer.models import modality_codes, printable_text, study_date_from_dicom
from adit.core.transfer.pipeline import TransferProcessor

pytestmark = pytest.mark.django_db

TRANSFER_WORDS = ("Pseudonym", "Destination", "Source → destination", "Study UID", "instances")


def _query_job(owner, status=JobStatus.IN_PROGRESS, **fields) -> QueryJob:
    job = make_job(owner, status, [TaskStatus.SUCCESS, TaskStatus.IN_PROGRESS], app=QUERY_APP)
    QueryJob.objects.filter(pk=job.pk).update(**fields)
    job.refresh_from_db()
    done, running = job.tasks.order_by("pk")
    QueryTask.objects.filter(pk=done.pk).update(
        patient_id="P-DONE", result_count=7, progress_done=1, progress_total=1
    )
    QueryTask.objects.filter(pk=running.pk).update(patient_id="P-RUNNING", progress_total=1)
    return job


# -- the registry --------------------------------------------------------------------------------


def test_each_app_registered_its_kind_once_with_its_processor():
    kinds = {kind.namespace: kind for kind in registry.all_kinds()}

    assert {"example_app", "example_queries", "selective_transfer"} <= set(kinds)
    assert kinds["example_queries"].processor is QueryProcessor
    assert kinds["example_app"].processor is TransferProcessor
    assert registry.kind_of(QueryTask) is registry.kind_of(QueryJob) is kinds["example_queries"]
    assert processor_for(QueryTask()) is QueryProcessor
    assert processor_for(ExampleTask()) is TransferProcessor
    assert kinds["selective_transfer"].section is not None  # in the main menu, from the kind
    with pytest.raises(ValueError, match="registered a job kind already"):
        registry.register(kinds["example_queries"])


def test_a_kind_whose_section_names_another_app_is_refused():
    kind = registry.kind_of(QueryJob)
    stray = registry.JobKind(
        job_model=QueryJob,
        task_model=QueryTask,
        processor=QueryProcessor,
        section=Section(namespace="elsewhere", label="Elsewhere", url_name="home"),
    )
    registry._kinds.pop(kind.namespace)
    try:
        with pytest.raises(ValueError, match="must have the namespace example_queries"):
            registry.register(stray)
    finally:
        registry._kinds[kind.namespace] = kind


# -- the pages of a kind that is not a transfer -------------------------------------------------


def test_query_job_list(client, member):
    older, newer = _query_job(member), _query_job(member)
    client.force_login(member)

    response = client.get(url("job_list", app=QUERY_APP))

    assert response.status_code == 200
    assert "Study Queries Jobs" in response.content.decode()
    assert listed_job_ids(response) == [newer.pk, older.pk]


def test_query_job_page_shows_its_own_fields_and_columns_and_no_transfer_ones(client, member):
    job = _query_job(member, purpose="Count <b>priors</b>")
    client.force_login(member)

    response = client.get(url("job_detail", job))

    content = response.content.decode()
    assert column_headers(response, "task-table") == [
        "Task ID", "Status", "Query", "Studies found", "Progress", "Message", "Finished"
    ]  # fmt: skip
    rows = content.split('data-testid="task-table"', 1)[1].split("<tbody", 1)[1]
    assert re.search(r"P-DONE.*?>\s*7\s*<.*?1 of 1 queries", rows, re.S)
    assert re.search(r"P-RUNNING.*?—.*?0 of 1 queries", rows, re.S)
    assert "Count &lt;b&gt;priors&lt;/b&gt;" in content  # escaped
    assert "Processed tasks: 1 of 2" in content
    assert not [word for word in TRANSFER_WORDS if word in content]
    assert 'data-testid="pseudonyms-link"' not in content


def test_query_job_live_fragment_is_the_same_part_of_the_page(client, member):
    job = _query_job(member, purpose="Priors")
    client.force_login(member)

    page = client.get(url("job_detail", job)).content.decode()
    fragment = client.get(url("job_progress", job)).content.decode()

    live = page[page.index('<div id="job-live"') :]
    assert fragment.strip().startswith('<div id="job-live"')
    for text in ("Priors", "P-DONE", "1 of 1 queries", "Studies found", 'hx-trigger="every 2s"'):
        assert text in fragment and text in live
    assert not [word for word in TRANSFER_WORDS if word in fragment]


def test_query_task_page_shows_its_own_fields(client, member):
    job = _query_job(member)
    task = job.tasks.get(patient_id="P-DONE")
    client.force_login(member)

    content = client.get(url("task_detail", task)).content.decode()

    assert re.search(r'data-testid="result-count">\s*7\s*<', content)
    assert re.search(r'data-testid="progress">\s*1 of 1 queries\s*<', content)
    assert "Patient ID queried" in content and "P-DONE" in content
    assert not [word for word in TRANSFER_WORDS if word in content]


def test_admin_overview_lists_the_query_kind(client, member, staff_user):
    make_job(member, JobStatus.FAILURE, app=QUERY_APP)
    client.force_login(staff_user)

    content = client.get(reverse("admin_section:index")).content.decode()

    table = content[content.index('data-testid="job-overview"') :]
    table = table[: table.index("</table>")]
    assert "Study Queries" in table
    assert '<a href="/queries/jobs/?all=1&amp;status=FA">1</a>' in table


def test_cleanup_ends_a_stuck_query_task(member, capsys):
    job = QueryJob.objects.create(owner=member, status=JobStatus.IN_PROGRESS)
    stuck = QueryTask.objects.create(
        job=job,
        source=DicomServerFactory(),
        patient_id="P1",
        status=TaskStatus.IN_PROGRESS,
        queued_job_id=987654,  # a queue entry that no longer exists
    )

    call_command("cleanup_jobs")

    stuck.refresh_from_db()
    assert stuck.status == TaskStatus.FAILURE and "interrupted" in stuck.message
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE
    assert "1 stuck task(s) or job(s) cleaned up." in capsys.readouterr().out


# -- the pages of a transfer kind ----------------------------------------------------------------


def test_transfer_job_page_shows_route_study_pseudonym_and_progress(client, member):
    source = DicomServerFactory(name="PACS A")
    destination = DicomServerFactory(name="PACS B")
    job = ExampleJob.objects.create(
        owner=member, status=JobStatus.IN_PROGRESS, trial_protocol_id="TRIAL-7"
    )
    ExampleTask.objects.create(
        job=job,
        source=source,
        destination=destination,
        patient_id="PAT-1",
        study_uid="1.2.3",
        pseudonym="PSEUDO-1",
        study_date=study_date_from_dicom("20240131"),
        study_description="CT <script>alert(1)</script>",
        modalities=["CT", "SR"],
        progress_done=12,
        progress_total=40,
        status=TaskStatus.IN_PROGRESS,
    )
    client.force_login(member)

    response = client.get(url("job_detail", job))

    content = response.content.decode()
    assert column_headers(response, "task-table") == [
        "Task ID", "Status", "Patient ID", "Study", "Pseudonym", "Progress", "Message", "Finished"
    ]  # fmt: skip
    assert re.search(r'data-testid="job-routes">\s*<div>PACS A → PACS B</div>', content)
    assert "Pseudonymized" in content and "TRIAL-7" in content
    assert "Project" not in content  # not set, so not shown
    rows = content.split("<tbody", 1)[1]
    assert re.search(r"PAT-1.*?2024-01-31 CT, SR.*?CT &lt;script&gt;.*?PSEUDO-1", rows, re.S)
    assert "12 of 40 instances" in rows
    assert "<script>alert" not in content
    assert 'data-testid="pseudonyms-link"' in content


# -- what a transfer keeps of the study, from the PACS -----------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240131", "2024-01-31"),
        ("20241331", None),
        ("2024-01-31", None),
        ("", None),
        (None, None),
    ],
)
def test_study_date_from_the_pacs_is_read_strictly(value, expected):
    date = study_date_from_dicom(value)
    assert (date.isoformat() if date else None) == expected


def test_study_text_from_the_pacs_is_cleaned_and_cut():
    assert printable_text("Thorax\x00\r\n  CT\u200b", 64) == "Thorax CT"
    assert printable_text("x" * 100, 64) == "x" * 64
    assert printable_text(None, 64) == ""
    assert modality_codes(["SR", "CT", "CT", "", "ct", "<b>", "X" * 17]) == ["CT", "SR"]
