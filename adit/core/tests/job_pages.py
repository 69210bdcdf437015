"""Helpers for tests of the generic job pages, through the test-only job apps: the transfer
app ``example_app`` (/example/…) and the query app ``example_queries`` (/queries/…)."""

import re

from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse

from adit.core.jobs.statuses import JobStatus
from adit.core.tests.example_app.models import ExampleJob, ExampleTask
from adit.core.tests.factories import DicomServerFactory
from adit.core.tests.query_app.models import QueryJob, QueryTask

TRANSFER_APP = "example_app"
QUERY_APP = "example_queries"
JOB_APPS = (TRANSFER_APP, QUERY_APP)
MODELS = {TRANSFER_APP: (ExampleJob, ExampleTask), QUERY_APP: (QueryJob, QueryTask)}


def make_job(owner, status=JobStatus.PENDING, tasks=(), app=TRANSFER_APP, **fields):
    job_model, task_model = MODELS[app]
    job = job_model.objects.create(owner=owner, status=status, **fields)
    source = DicomServerFactory()
    task_fields = (
        {"destination": source, "study_uid": "1.2.3"}
        if app == TRANSFER_APP
        else {"patient_id": "P1"}
    )
    for task_status in tasks:
        task_model.objects.create(job=job, source=source, status=task_status, **task_fields)
    return job


def stored_row(job: ExampleJob) -> str:
    """The job's row as the database holds it, every column as text."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ExampleJob._meta.db_table} WHERE id = %s", [job.pk])
        return repr(cursor.fetchone())


def url(name, obj=None, query="", app=TRANSFER_APP):
    """A job page's URL: of ``obj``'s app, else of ``app``."""
    args = [obj.pk] if obj is not None else []
    namespace = obj._meta.app_label if obj is not None else app
    return reverse(f"{namespace}:{name}", args=args) + query


def flashes(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def listed_job_ids(response) -> list[int]:
    content = response.content.decode()
    return [int(pk) for pk in re.findall(r'href="/(?:example|queries)/jobs/(\d+)/"', content)]


def column_headers(response, table="job-table") -> list[str]:
    content = response.content.decode().split(f'data-testid="{table}"', 1)[1]
    content = content.split("</thead>", 1)[0]
    return re.findall(r"<th(?:\s[^>]*)?>\s*(.*?)\s*</th>", content, re.S)
