"""The registry of job apps: every app whose jobs the generic job pages show.

An app lands here when its urls.py calls ``job_urlpatterns`` (see ``job_views``), so the admin
section's overview knows every app a user can reach, without a second place to list them. The
URL namespace of an app's job pages is its app label.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.urls import get_resolver

from adit.core import sections
from adit.core.jobs.models import DicomJob, DicomTask
from adit.core.jobs.statuses import FINAL_TASK_STATUSES
from adit.core.transfer.models import TransferJob, TransferTask


@dataclass(frozen=True)
class JobApp:
    job_model: type[DicomJob]
    task_model: type[DicomTask]

    @property
    def namespace(self) -> str:
        return self.job_model._meta.app_label

    @property
    def label(self) -> str:
        section = sections.get(self.namespace)
        if section is not None:
            return section.label
        return str(self.job_model._meta.app_config.verbose_name)  # pyright: ignore[reportOptionalMemberAccess]

    @property
    def is_transfer(self) -> bool:
        return issubclass(self.job_model, TransferJob) and issubclass(self.task_model, TransferTask)

    def jobs_for(self, user, *, all_users: bool = False) -> QuerySet:
        """The jobs the user may see: their own; with ``all_users`` (staff only) everybody's."""
        jobs = self.job_model.objects.select_related("owner")
        if user.is_staff and all_users:
            return jobs
        return jobs.filter(owner=user)

    def visible_jobs(self, user) -> QuerySet:
        """Every job the user may open: staff may open anybody's job by its ID."""
        return self.jobs_for(user, all_users=True)

    def visible_tasks(self, user) -> QuerySet:
        tasks = self.task_model.objects.select_related("job", "job__owner", "source")
        if user.is_staff:
            return tasks
        return tasks.filter(job__owner=user)

    def status_counts(self) -> dict[str, int]:
        """How many jobs (of all users) have each status."""
        rows = self.job_model.objects.values_list("status").annotate(count=Count("pk"))
        return dict(rows.order_by())


def task_progress(job: DicomJob) -> tuple[int, int]:
    """(processed, total): how many of the job's tasks reached a final status, of how many."""
    counts = job.tasks.aggregate(
        total=Count("pk"), processed=Count("pk", filter=Q(status__in=FINAL_TASK_STATUSES))
    )
    return counts["processed"], counts["total"]


_apps: dict[str, JobApp] = {}


def register(job_model: type[DicomJob], task_model: type[DicomTask]) -> JobApp:
    """Adds an app's job and task model; registering the same pair again changes nothing."""
    related = task_model._meta.get_field("job").related_model
    if related is not job_model:
        raise ValueError(f"{task_model.__name__}.job must point to {job_model.__name__}.")
    job_app = JobApp(job_model, task_model)
    known = _apps.get(job_app.namespace)
    if known is not None and known != job_app:
        raise ValueError(f"Another job model is already registered for {job_app.namespace}.")
    _apps[job_app.namespace] = job_app
    return job_app


def all_job_apps() -> list[JobApp]:
    # The apps register while the URLconf is imported, which a request does first thing;
    # elsewhere (a command, the shell) importing it here makes the registry complete.
    get_resolver().url_patterns  # noqa: B018
    return sorted(_apps.values(), key=lambda job_app: job_app.label)
