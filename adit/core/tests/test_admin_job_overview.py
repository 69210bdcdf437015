"""The admin section's job overview: jobs per app and status, linked to the filtered lists."""

import re

import pytest
from django.urls import reverse

from adit.core.jobs.statuses import JobStatus
from adit.core.tests.job_pages import listed_job_ids, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def other(db):
    from adit.accounts.tests.factories import UserFactory

    return UserFactory(username="bob")


def test_admin_section_counts_jobs_per_app_and_status(client, member, other, staff_user):
    make_job(member, JobStatus.FAILURE)
    make_job(other, JobStatus.FAILURE)
    make_job(member, JobStatus.SUCCESS)
    client.force_login(staff_user)

    content = client.get(reverse("admin_section:index")).content.decode()

    table = content[content.index('data-testid="job-overview"') :]
    table = table[: table.index("</table>")]
    assert "Example" in table
    assert '<a href="/example/jobs/?all=1&amp;status=FA">2</a>' in table
    assert '<a href="/example/jobs/?all=1&amp;status=SU">1</a>' in table
    assert "status=PE" not in table
    example_row = next(row for row in table.split("<tr") if "Example" in row)
    counts = re.findall(r"<td>\s*(?:<a [^>]*>)?(?:<span [^>]*>)?(\d+)", example_row)
    assert counts == ["0", "0", "0", "0", "0", "1", "0", "2"]
    assert "Selective Transfer" in table  # every job app has its row


def test_admin_overview_link_lists_the_jobs_of_all_users(client, member, other, staff_user):
    failed = [make_job(member, JobStatus.FAILURE), make_job(other, JobStatus.FAILURE)]
    make_job(member, JobStatus.SUCCESS)
    client.force_login(staff_user)

    response = client.get("/example/jobs/?all=1&status=FA")

    assert sorted(listed_job_ids(response)) == sorted(job.pk for job in failed)
