"""The job and task tables of the generic job pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import django_tables2 as tables
from django.core.paginator import EmptyPage
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

if TYPE_CHECKING:
    from adit.core.jobs.registry import JobKind

DATETIME_FORMAT = "Y-m-d H:i"
STATUS_BADGE_TEMPLATE = "core/jobs/_status_badge.html"
# Long error messages would stretch the table; the detail page shows them in full.
MESSAGE_LENGTH = 100


def app_url(name: str, obj) -> str:
    """The URL of a job page of ``obj``'s app: the namespace of an app's job pages is its label."""
    return reverse(f"{obj._meta.app_label}:{name}", args=[obj.pk])


def paginate(table: tables.Table, request: HttpRequest, per_page: int) -> tables.Table:
    """Like django-tables2's RequestConfig, but keeps our own cap on the page size (RequestConfig
    would take ``per_page`` from the query string unchecked)."""
    tables.RequestConfig(request, paginate=False).configure(table)
    try:
        page = int(request.GET.get("page", 1))
    except ValueError:
        page = 1
    try:
        table.paginate(page=page, per_page=per_page)
    except EmptyPage:
        table.page = table.paginator.page(table.paginator.num_pages)
    return table


class _BaseTable(tables.Table):
    status = tables.TemplateColumn(template_name=STATUS_BADGE_TEMPLATE)
    message = tables.Column(default="")

    class Meta:
        orderable = False
        template_name = "django_tables2/bootstrap5-responsive.html"
        # Headers and dates stay on one line; on a phone the table scrolls sideways instead.
        attrs = {"class": "table table-sm table-hover align-middle", "th": {"class": "text-nowrap"}}

    def render_message(self, value: str) -> str:
        return Truncator(value).chars(MESSAGE_LENGTH)

    def _link(self, name: str, record) -> SafeString:
        return format_html('<a href="{}">{}</a>', app_url(name, record), record.pk)


class JobTable(_BaseTable):
    id = tables.Column(verbose_name="Job ID")
    created = tables.DateTimeColumn(format=DATETIME_FORMAT, attrs={"td": {"class": "text-nowrap"}})
    owner = tables.Column(accessor="owner__username", verbose_name="Owner")

    class Meta(_BaseTable.Meta):
        sequence = ("id", "status", "message", "created", "owner")
        empty_text = "No jobs."
        attrs = {**_BaseTable.Meta.attrs, "data-testid": "job-table"}

    def render_id(self, record) -> SafeString:
        return self._link("job_detail", record)


class TaskTable(_BaseTable):
    """The columns every task has; ``task_table_for`` adds a kind's own."""

    id = tables.Column(verbose_name="Task ID")
    progress = tables.Column(verbose_name="Progress", accessor="pk", default="")
    end = tables.DateTimeColumn(
        verbose_name="Finished", format=DATETIME_FORMAT, attrs={"td": {"class": "text-nowrap"}}
    )

    class Meta(_BaseTable.Meta):
        sequence = ("id", "status", "...", "progress", "message", "end")
        empty_text = "No tasks."
        attrs = {**_BaseTable.Meta.attrs, "data-testid": "task-table"}

    def render_id(self, record) -> SafeString:
        return self._link("task_detail", record)

    def render_progress(self, record) -> str:
        return record.progress_text


_task_tables: dict[str, type[TaskTable]] = {}


def task_table_for(kind: JobKind) -> type[TaskTable]:
    """The task table of a kind: the generic columns plus the kind's ``task_columns``."""
    table = _task_tables.get(kind.namespace)
    if table is None:
        name = f"{kind.task_model.__name__}Table"
        # django-tables2 reads the options of a table class from its own Meta only.
        meta = type("Meta", (TaskTable.Meta,), {})
        members = {**dict(kind.task_columns), "Meta": meta}
        table = cast("type[TaskTable]", type(name, (TaskTable,), members))
        _task_tables[kind.namespace] = table
    return table
