"""The generic job pages, through the test apps' URLs: the transfer app (/example/…) and, for
everything that is not about transfers, the query app (/queries/…) too."""

import csv
import io
import re

import pytest

from adit.accounts.tests.factories import UserFactory
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.templatetags.job_tags import status_badge_class
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.job_pages import (
    JOB_APPS,
    MODELS,
    column_headers,
    flashes,
    listed_job_ids,
    make_job,
    url,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def other(db):
    return UserFactory(username="bob")


@pytest.fixture(params=JOB_APPS)
def app(request) -> str:
    """Each test app: a test asking for it runs for a transfer and a non-transfer job kind."""
    return request.param


# -- job list ------------------------------------------------------------------------------------


def test_list_shows_own_jobs_newest_first(client, member, other):
    older, newer = make_job(member), make_job(member)
    make_job(other)
    client.force_login(member)

    response = client.get(url("job_list"))

    assert response.status_code == 200
    assert listed_job_ids(response) == [newer.pk, older.pk]
    assert column_headers(response) == ["Job ID", "Status", "Message", "Created"]
    assert "Show jobs of all users" not in response.content.decode()


def test_only_staff_can_show_jobs_of_all_users(client, member, other, staff_user):
    own = make_job(staff_user)
    alices = make_job(member)
    client.force_login(staff_user)

    response = client.get(url("job_list"))
    assert listed_job_ids(response) == [own.pk]
    assert "Show jobs of all users" in response.content.decode()

    response = client.get(url("job_list", query="?all=1"))
    assert listed_job_ids(response) == [alices.pk, own.pk]
    assert column_headers(response) == ["Job ID", "Status", "Message", "Created", "Owner"]
    assert "alice" in response.content.decode()
    assert "Show only my jobs" in response.content.decode()

    client.force_login(member)
    response = client.get(url("job_list", query="?all=1"))
    assert listed_job_ids(response) == [alices.pk]
    assert "Owner" not in column_headers(response)


def test_status_filter(client, member):
    make_job(member, JobStatus.SUCCESS)
    failed = make_job(member, JobStatus.FAILURE)
    client.force_login(member)

    response = client.get(url("job_list", query="?status=FA"))
    assert listed_job_ids(response) == [failed.pk]
    # A status that does not exist shows everything instead of an error.
    assert len(listed_job_ids(client.get(url("job_list", query="?status=XX")))) == 2


@pytest.mark.parametrize(
    ("query", "rows"), [("", 50), ("?per_page=25", 25), ("?per_page=500", 100), ("?per_page=x", 50)]
)
def test_page_size_is_capped(client, member, query, rows):
    ExampleJob.objects.bulk_create([ExampleJob(owner=member) for _ in range(120)])
    client.force_login(member)

    assert len(listed_job_ids(client.get(url("job_list", query=query)))) == rows


# -- job detail ----------------------------------------------------------------------------------


def test_detail_shows_job_progress_and_tasks(client, member):
    job = make_job(
        member,
        JobStatus.IN_PROGRESS,
        [TaskStatus.SUCCESS, TaskStatus.IN_PROGRESS],
        trial_protocol_id="TRIAL-7",
    )
    running = job.tasks.get(status=TaskStatus.IN_PROGRESS)
    ExampleTask.objects.filter(pk=running.pk).update(progress_done=3, progress_total=10)
    client.force_login(member)

    response = client.get(url("job_detail", job))

    content = response.content.decode()
    assert "Processed tasks: 1 of 2" in content
    assert "TRIAL-7" in content
    assert "3 of 10" in content
    assert f'href="/example/tasks/{running.pk}/"' in content
    assert 'data-testid="job-owner"' not in content


def test_task_status_filter_on_detail(client, app, member):
    job = make_job(member, JobStatus.FAILURE, [TaskStatus.SUCCESS, TaskStatus.FAILURE], app=app)
    failed = job.tasks.get(status=TaskStatus.FAILURE)
    client.force_login(member)

    content = client.get(url("job_detail", job, "?status=FA")).content.decode()

    assert re.findall(r'href="/(?:example|queries)/tasks/(\d+)/"', content) == [str(failed.pk)]
    assert "Processed tasks: 2 of 2" in content


def test_foreign_job_and_task_are_not_found(client, app, member, other, staff_user):
    job = make_job(other, tasks=[TaskStatus.PENDING], app=app)
    task = job.tasks.get()
    client.force_login(member)
    assert client.get(url("job_detail", job)).status_code == 404
    assert client.get(url("job_progress", job)).status_code == 404
    assert client.get(url("task_detail", task)).status_code == 404

    client.force_login(staff_user)
    response = client.get(url("job_detail", job))
    assert response.status_code == 200
    assert 'data-testid="job-owner"' in response.content.decode()
    assert client.get(url("task_detail", task)).status_code == 200


def test_control_panel_offers_only_allowed_actions(client, app, member, staff_user):
    pending = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], app=app)
    finished = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS], app=app)

    def buttons(user, job):
        client.force_login(user)
        content = client.get(url("job_detail", job)).content.decode()
        return set(re.findall(r'data-testid="action-(\w+)"', content))

    assert buttons(member, pending) == {"delete", "cancel"}
    assert buttons(member, finished) == set()
    assert buttons(staff_user, finished) == {"restart"}
    unverified = make_job(member, JobStatus.UNVERIFIED, [TaskStatus.PENDING], app=app)
    assert buttons(staff_user, unverified) == {"verify", "delete"}
    assert buttons(member, unverified) == {"delete"}


# -- live progress -------------------------------------------------------------------------------


def test_fragment_polls_while_the_job_runs_and_stops_when_finished(client, app, member):
    job = make_job(member, JobStatus.IN_PROGRESS, [TaskStatus.IN_PROGRESS], app=app)
    client.force_login(member)

    page = client.get(url("job_detail", job, "?status=IP")).content.decode()
    assert 'hx-trigger="every 2s"' in page
    assert f'hx-get="{url("job_progress", job, "?status=IP")}"' in page

    fragment = client.get(url("job_progress", job)).content.decode()
    assert fragment.lstrip().startswith("<div") and "<html" not in fragment
    assert 'hx-trigger="every 2s"' in fragment

    MODELS[app][1].objects.filter(job=job).update(status=TaskStatus.SUCCESS, progress_done=4)
    job.refresh_status()
    fragment = client.get(url("job_progress", job)).content.decode()
    assert "hx-trigger" not in fragment and "hx-get" not in fragment
    assert "Success" in fragment and "Processed tasks: 1 of 1" in fragment


# -- job actions ---------------------------------------------------------------------------------


def test_owner_cancels_a_pending_job(client, app, member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING, TaskStatus.PENDING], app=app)
    client.force_login(member)

    response = client.post(url("job_cancel", job))

    assert response.status_code == 302 and response.url == url("job_detail", job)
    assert flashes(response) == [f"Job with ID {job.pk} was canceled"]
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    assert set(job.tasks.values_list("status", "message")) == {
        (TaskStatus.CANCELED, "Task manually canceled.")
    }


def test_staff_verifies_a_job_and_its_tasks_are_queued(client, app, member, staff_user):
    job = make_job(member, JobStatus.UNVERIFIED, [TaskStatus.PENDING], app=app)
    client.force_login(member)
    assert client.post(url("job_verify", job)).status_code == 403

    client.force_login(staff_user)
    response = client.post(url("job_verify", job))

    assert flashes(response) == [f"Job with ID {job.pk} was verified"]
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert job.tasks.get().queued_job_id is not None


def test_owner_deletes_an_untouched_job(client, app, member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], app=app)
    client.force_login(member)

    response = client.post(url("job_delete", job))

    assert response.url == url("job_list", app=app)
    assert flashes(response) == [f"Job with ID {job.pk} was deleted"]
    assert not MODELS[app][0].objects.filter(pk=job.pk).exists()
    assert not MODELS[app][1].objects.filter(job_id=job.pk).exists()


def test_owner_resumes_a_canceled_job(client, app, member):
    job = make_job(member, JobStatus.CANCELED, [TaskStatus.SUCCESS, TaskStatus.CANCELED], app=app)
    client.force_login(member)

    response = client.post(url("job_resume", job))

    assert flashes(response) == [f"Job with ID {job.pk} will be resumed"]
    job.refresh_from_db()
    assert job.status == JobStatus.IN_PROGRESS
    assert sorted(job.tasks.values_list("status", flat=True)) == ["PE", "SU"]


def test_owner_retries_failed_tasks(client, app, member):
    job = make_job(member, JobStatus.FAILURE, [TaskStatus.SUCCESS, TaskStatus.FAILURE], app=app)
    client.force_login(member)

    response = client.post(url("job_retry", job))

    assert flashes(response) == [f"Job with ID {job.pk} will be retried"]
    job.refresh_from_db()
    assert job.status != JobStatus.FAILURE
    assert sorted(job.tasks.values_list("status", flat=True)) == ["PE", "SU"]


def test_only_staff_restart_a_finished_job(client, app, member, staff_user):
    job = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS, TaskStatus.WARNING], app=app)
    client.force_login(member)
    assert client.post(url("job_restart", job)).status_code == 403

    client.force_login(staff_user)
    response = client.post(url("job_restart", job))

    assert flashes(response) == [f"Job with ID {job.pk} will be restarted"]
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert set(job.tasks.values_list("status", flat=True)) == {TaskStatus.PENDING}


@pytest.mark.parametrize("action", ["verify", "delete", "cancel", "resume", "retry", "restart"])
def test_job_actions_on_foreign_jobs_are_not_found_and_need_post(
    client, app, member, other, action
):
    foreign = make_job(other, JobStatus.UNVERIFIED, [TaskStatus.PENDING], app=app)
    own = make_job(member, JobStatus.UNVERIFIED, [TaskStatus.PENDING], app=app)
    client.force_login(member)

    assert client.post(url(f"job_{action}", foreign)).status_code == 404
    assert client.get(url(f"job_{action}", own)).status_code == 405
    foreign.refresh_from_db()
    assert foreign.status == JobStatus.UNVERIFIED


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("cancel", "cannot be canceled while it is success"),
        ("resume", "cannot be resumed while it is success"),
        ("retry", "cannot be retried while it is success"),
        ("delete", "only jobs whose tasks have not started yet can be deleted"),
        ("verify", "cannot be verified while it is success"),
    ],
)
def test_job_action_in_the_wrong_state_is_a_bad_request(client, app, staff_user, action, message):
    job = make_job(staff_user, JobStatus.SUCCESS, [TaskStatus.SUCCESS], app=app)
    client.force_login(staff_user)

    response = client.post(url(f"job_{action}", job))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert flashes(response) == []


# -- task detail and actions ---------------------------------------------------------------------


def test_task_detail_shows_the_log_to_staff_only(client, member, staff_user):
    job = make_job(member, JobStatus.FAILURE, [TaskStatus.FAILURE])
    task = job.tasks.get()
    task.patient_id, task.pseudonym, task.series_uids = "PAT-1", "PSEUDO-1", ["1.2.3.4"]
    task.log, task.message = "Traceback: secret details", "Connection refused."
    task.save()
    client.force_login(member)

    content = client.get(url("task_detail", task)).content.decode()
    assert all(text in content for text in ("PAT-1", "PSEUDO-1", "1.2.3.4", "Connection refused."))
    assert "secret details" not in content

    client.force_login(staff_user)
    content = client.get(url("task_detail", task)).content.decode()
    assert re.search(r"<pre[^>]*>Traceback: secret details</pre>", content)


def test_owner_deletes_a_pending_task(client, app, member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING, TaskStatus.PENDING], app=app)
    task = job.tasks.earliest("pk")
    client.force_login(member)

    response = client.post(url("task_delete", task))

    assert response.url == url("job_detail", job)
    assert flashes(response) == [f"Task with ID {task.pk} was deleted"]
    assert job.tasks.count() == 1


def test_owner_resets_a_failed_task(client, app, member):
    job = make_job(member, JobStatus.FAILURE, [TaskStatus.FAILURE], app=app)
    task = job.tasks.get()
    client.force_login(member)

    response = client.post(url("task_reset", task))

    assert response.url == url("task_detail", task)
    assert flashes(response) == [f"Task with ID {task.pk} was reset"]
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING and task.queued_job_id is not None
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def test_only_staff_kill_a_running_task(client, app, member, staff_user):
    job = make_job(member, JobStatus.IN_PROGRESS, [TaskStatus.IN_PROGRESS], app=app)
    task = job.tasks.get()
    client.force_login(member)
    assert client.post(url("task_kill", task)).status_code == 403

    client.force_login(staff_user)
    response = client.post(url("task_kill", task))
    assert flashes(response) == [f"Task with ID {task.pk} will be killed"]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("delete", "cannot be deleted while it is success"),
        ("kill", "cannot be killed while it is success"),
    ],
)
def test_task_action_in_the_wrong_state_is_a_bad_request(client, app, staff_user, action, message):
    job = make_job(staff_user, JobStatus.SUCCESS, [TaskStatus.SUCCESS], app=app)
    client.force_login(staff_user)

    response = client.post(url(f"task_{action}", job.tasks.get()))

    assert response.status_code == 400 and message in response.content.decode()


def test_reset_of_a_pending_task_is_a_bad_request(client, app, member):
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], app=app)
    client.force_login(member)

    response = client.post(url("task_reset", job.tasks.get()))

    assert response.status_code == 400 and "cannot be reset while it is pending" in (
        response.content.decode()
    )


@pytest.mark.parametrize("action", ["delete", "reset", "kill"])
def test_task_actions_on_foreign_tasks_are_not_found_and_need_post(
    client, app, member, other, action
):
    foreign = make_job(other, JobStatus.PENDING, [TaskStatus.PENDING], app=app).tasks.get()
    own = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING], app=app).tasks.get()
    client.force_login(member)

    assert client.post(url(f"task_{action}", foreign)).status_code == 404
    assert client.get(url(f"task_{action}", own)).status_code == 405
    assert MODELS[app][1].objects.filter(pk=foreign.pk).exists()


# -- pseudonym mapping ---------------------------------------------------------------------------


def test_pseudonym_mapping_csv(client, member, other, staff_user):
    job = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS] * 3)
    first, second, third = job.tasks.order_by("pk")
    ExampleTask.objects.filter(pk=first.pk).update(
        patient_id="P1", pseudonym="A", pseudonymized_study_uid="2.25.1"
    )
    ExampleTask.objects.filter(pk=third.pk).update(patient_id="P3", pseudonym="C")
    client.force_login(member)

    assert 'data-testid="pseudonyms-link"' in client.get(url("job_detail", job)).content.decode()
    response = client.get(url("job_pseudonyms", job))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    assert "no-store" in response["Cache-Control"].split(", ")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["patient_id", "pseudonym", "study_uid", "pseudonymized_study_uid"],
        ["P1", "A", "1.2.3", "2.25.1"],
        ["P3", "C", "1.2.3", ""],
    ]

    client.force_login(staff_user)
    assert client.get(url("job_pseudonyms", job)).status_code == 200
    client.force_login(other)
    assert client.get(url("job_pseudonyms", job)).status_code == 404


def test_pseudonym_mapping_csv_evaluates_no_formula(client, member):
    hostile = ["=1+1", "+1", "-1", "@SUM(1)", "\t=1+1", "\r=1+1"]
    job = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS] * len(hostile))
    for task, value in zip(job.tasks.order_by("pk"), hostile, strict=True):
        ExampleTask.objects.filter(pk=task.pk).update(patient_id=value, pseudonym=f"={value}")
    client.force_login(member)

    response = client.get(url("job_pseudonyms", job))

    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    assert [row[:2] for row in rows[1:]] == [[f"'{value}", f"'={value}"] for value in hostile]


def test_no_pseudonym_link_without_pseudonymized_tasks(client, member):
    job = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS])
    client.force_login(member)

    assert "pseudonyms-link" not in client.get(url("job_detail", job)).content.decode()


def test_every_status_has_its_own_badge_colour():
    assert status_badge_class("XX") == "text-bg-secondary"
    statuses = {*JobStatus, *TaskStatus}
    assert all(status_badge_class(status) != "text-bg-secondary" for status in statuses - {"PE"})
