"""The registry of job kinds: every app's jobs, described once.

An app registers its kind in ``AppConfig.ready`` with one call::

    registry.register(JobKind(job_model=…, task_model=…, processor=…, section=Section(…),
                              task_columns=…, job_fields_template=…, links=…))

which is all the engine (which processor runs a task), the main menu (the app's section), the
generic job pages (columns, fields, links), the admin overview and the cleanup of stuck tasks
need to know about it. An app has at most one kind; its URL namespace is its app label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet

from adit.core import sections
from adit.core.jobs.filters import ExtraFilter
from adit.core.jobs.models import DicomJob, DicomTask
from adit.core.jobs.statuses import FINAL_TASK_STATUSES

if TYPE_CHECKING:
    from django.views import View

    from adit.core.jobs.processing import TaskProcessor


def _always(job: DicomJob) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class JobLink:
    """A link beside a job's actions (a download, say), served by a view of the kind's own.

    The view gets the kind as ``kind`` (subclass ``jobs.views.JobKindView``) and the job's
    primary key as ``pk``; it is routed at ``jobs/<pk>/<path>`` under the URL name
    ``job_<name>``, and the link carries ``data-testid="<name>-link"``.
    """

    name: str
    path: str
    label: str
    view: type[View]
    icon: str = "bi-download"
    shown_if: Callable[[DicomJob], bool] = _always


@dataclass(frozen=True, eq=False)
class JobApi:
    """How a kind's jobs appear in the REST API (see ``adit.core.api.jobs``).

    Attributes:
        name: The endpoint below ``/api/``, e.g. "transfer-jobs".
        create_serializer: Validates a new job's body and creates the job with its tasks
            (``save()`` returns the job); without one, jobs are only read and acted on.
        job_fields, task_fields: The kind's own model fields shown beside the generic ones.
        viewset_mixin: The kind's own routes of a job (DRF ``@action`` methods), put before
            the generic viewset in its bases; subclass ``adit.core.api.jobs.JobViewSet`` to
            have its attributes typed.
    """

    name: str
    create_serializer: type | None = None
    job_fields: tuple[str, ...] = ()
    task_fields: tuple[str, ...] = ()
    viewset_mixin: type | None = None


@dataclass(frozen=True, eq=False)
class JobKind:
    """How one app's jobs are processed and shown.

    Attributes:
        task_columns: (name, django-tables2 column) pairs the task table shows after the
            status, before the generic progress, message and end columns.
        job_fields_template, task_fields_template: templates of ``<dt>/<dd>`` pairs added to
            the fields of the job page and the task page (the job or task is in the context
            as ``job`` or ``task``).
        links: links beside the job's actions.
        task_context: Adds to the context of the task page (which the app's own
            ``<app>/task_detail.html`` can show in the block ``task_extra``).
        task_filter: A select of the kind's own beside the status filter of the job page.
        api: The kind's endpoint in the REST API, if it has one.
    """

    job_model: type[DicomJob]
    task_model: type[DicomTask]
    processor: type[TaskProcessor]
    section: sections.Section | None = None
    task_columns: tuple[tuple[str, Any], ...] = ()
    job_fields_template: str | None = None
    task_fields_template: str | None = None
    links: tuple[JobLink, ...] = field(default=())
    task_context: Callable[[DicomTask], dict] | None = None
    task_filter: ExtraFilter | None = None
    api: JobApi | None = None

    @property
    def namespace(self) -> str:
        return self.job_model._meta.app_label

    @property
    def label(self) -> str:
        if self.section is not None:
            return self.section.label
        return str(self.job_model._meta.app_config.verbose_name)  # pyright: ignore[reportOptionalMemberAccess]

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


_kinds: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Adds an app's job kind, and its section to the main menu (call from AppConfig.ready)."""
    related = kind.task_model._meta.get_field("job").related_model
    if related is not kind.job_model:
        raise ValueError(f"{kind.task_model.__name__}.job must point to {kind.job_model.__name__}.")
    if kind.namespace in _kinds:
        raise ValueError(f"The app {kind.namespace} registered a job kind already.")
    if kind.section is not None:
        if kind.section.namespace != kind.namespace:
            raise ValueError(
                f"The section of {kind.namespace} must have the namespace {kind.namespace}."
            )
        sections.register(kind.section)
    _kinds[kind.namespace] = kind
    return kind


def kind_of(model: type[DicomJob] | type[DicomTask]) -> JobKind:
    """The kind of a job or task model; LookupError if its app registered none."""
    kind = _kinds.get(model._meta.app_label)
    if kind is None or model not in (kind.job_model, kind.task_model):
        raise LookupError(f"No job kind is registered for {model._meta.label}.")
    return kind


def all_kinds() -> list[JobKind]:
    return sorted(_kinds.values(), key=lambda kind: kind.label)
