"""Helpers for tests of the generic job pages, through the example app (/example/…)."""

import re

from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse

from adit.core.jobs.statuses import JobStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import DicomServerFactory


def make_job(owner, status=JobStatus.PENDING, tasks=(), **fields):
    job = ExampleJob.objects.create(owner=owner, status=status, **fields)
    source = DicomServerFactory()
    for task_status in tasks:
        ExampleTask.objects.create(
            job=job, source=source, destination=source, study_uid="1.2.3", status=task_status
        )
    return job


def stored_row(job: ExampleJob) -> str:
    """The job's row as the database holds it, every column as text."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ExampleJob._meta.db_table} WHERE id = %s", [job.pk])
        return repr(cursor.fetchone())


def url(name, obj=None, query=""):
    args = [obj.pk] if obj is not None else []
    return reverse(f"example_app:{name}", args=args) + query


def flashes(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def listed_job_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/example/jobs/(\d+)/"', response.content.decode())]


def column_headers(response) -> list[str]:
    table = response.content.decode().split('data-testid="job-table"', 1)[1]
    return re.findall(r"<th(?:\s[^>]*)?>\s*(.*?)\s*</th>", table, re.S)
