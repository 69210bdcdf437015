"""A user follows and cancels a job in a real Chromium; screenshots for a look at the layout."""

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.tests.factories import PASSWORD
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.tests.example_app.models import ExampleTask
from adit.core.tests.job_pages import make_job

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 800)}


def _screenshots(page: Page, url: str, name: str, tmp_path) -> None:
    for device, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.goto(url)
        page.screenshot(path=tmp_path / f"{name}-{device}.png", full_page=True)
        # Wide tables scroll inside their .table-responsive; the page itself never does.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_user_watches_a_job_progress_and_cancels_it(page: Page, live_server, member, tmp_path):
    make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS])
    failed = make_job(member, JobStatus.FAILURE, [TaskStatus.FAILURE])
    failed.message = "All tasks failed."
    failed.save()
    job = make_job(member, JobStatus.PENDING, [TaskStatus.PENDING] * 3, trial_protocol_id="T-7")
    first, second, _ = job.tasks.order_by("pk")

    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    job_url = f"{live_server.url}/example/jobs/{job.pk}/"
    _screenshots(page, f"{live_server.url}/example/jobs/", "job-list", tmp_path)
    _screenshots(page, job_url, "job-detail", tmp_path)

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(job_url)
    expect(page.get_by_test_id("task-progress")).to_contain_text("Processed tasks: 0 of 3")

    # A worker gets on with the job: the page follows without being reloaded.
    ExampleTask.objects.filter(pk=first.pk).update(status=TaskStatus.SUCCESS, progress_done=5)
    ExampleTask.objects.filter(pk=second.pk).update(
        status=TaskStatus.IN_PROGRESS, progress_done=3, progress_total=10
    )
    job.refresh_status()
    expect(page.get_by_test_id("task-progress")).to_contain_text("Processed tasks: 1 of 3")
    expect(page.get_by_test_id("task-table")).to_contain_text("3 of 10")
    page.screenshot(path=tmp_path / "job-detail-running.png", full_page=True)
    ExampleTask.objects.filter(pk=second.pk).update(status=TaskStatus.SUCCESS, progress_done=10)
    job.refresh_status()
    expect(page.get_by_test_id("task-progress")).to_contain_text("Processed tasks: 2 of 3")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()

    expect(page.get_by_role("alert")).to_contain_text(f"Job with ID {job.pk} was canceled")
    expect(page.get_by_test_id("job-fields").get_by_test_id("status")).to_have_text("Canceled")
    expect(page.get_by_test_id("control-panel")).not_to_contain_text("Cancel job")
    page.screenshot(path=tmp_path / "job-detail-canceled.png", full_page=True)
