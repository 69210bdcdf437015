"""The job pages every job kind shares: job list and detail, task detail, the job and task
actions, and the links a kind adds (e.g. the pseudonym mapping of transfer jobs).

An app registers its kind in ``AppConfig.ready`` (see ``registry``) and plugs the pages in with
one call in its urls.py (whose ``app_name`` must be the app label)::

    app_name = "selective_transfer"
    urlpatterns = [..., *job_urlpatterns(SelectiveTransferJob)]

What differs between kinds (task columns, job and task fields, links) comes from the kind;
nothing here knows what a transfer is. A page looks for ``<app_label>/<template>`` before
``core/jobs/<template>``, so an app can also fill a page's blocks (e.g. a "New job" button on its
list) without copying it.

Visibility: users see their own jobs and tasks, staff everybody's; anything else is a 404, so
nobody learns which IDs exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import select_template
from django.urls import URLPattern, path, reverse
from django.views import View
from django.views.generic import TemplateView

from adit.core.jobs import registry
from adit.core.jobs.filters import PAGE_SIZES, StatusFilterForm, page_size
from adit.core.jobs.models import ActionNotAllowed, DicomJob, DicomTask
from adit.core.jobs.registry import JobKind, task_progress
from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.jobs.tables import JobTable, app_url, paginate, task_table_for


@dataclass(frozen=True)
class Action:
    """A button of a job's or task's control panel and what pressing it does."""

    name: str  # the URL name is "<job|task>_<name>"
    label: str
    method: str  # called on the model instance
    allowed_if: str  # a property of the instance: may the action run in the current state?
    message: str  # flashed on success, with the ID for %d
    confirm: str
    icon: str
    style: str = "btn-outline-secondary"
    staff_only: bool = False

    def is_offered(self, obj, user) -> bool:
        return (user.is_staff or not self.staff_only) and bool(getattr(obj, self.allowed_if))


JOB_ACTIONS = (
    Action(
        name="verify",
        label="Verify job",
        method="verify",
        allowed_if="is_verifiable",
        message="Job with ID %d was verified",
        confirm="Verify this job? Its tasks will be queued for processing.",
        icon="bi-check2-circle",
        style="btn-outline-success",
        staff_only=True,
    ),
    Action(
        name="delete",
        label="Delete job",
        method="delete_untouched",
        allowed_if="is_deletable",
        message="Job with ID %d was deleted",
        confirm="Delete this job and all of its tasks?",
        icon="bi-trash",
        style="btn-outline-danger",
    ),
    Action(
        name="cancel",
        label="Cancel job",
        method="cancel",
        allowed_if="is_cancelable",
        message="Job with ID %d was canceled",
        confirm="Cancel this job? Pending tasks will not be processed.",
        icon="bi-x-circle",
        style="btn-outline-danger",
    ),
    Action(
        name="resume",
        label="Resume job",
        method="resume",
        allowed_if="is_resumable",
        message="Job with ID %d will be resumed",
        confirm="Resume this job? Its canceled tasks will be processed.",
        icon="bi-play-circle",
        style="btn-outline-primary",
    ),
    Action(
        name="retry",
        label="Retry failed tasks",
        method="retry_failed",
        allowed_if="is_retriable",
        message="Job with ID %d will be retried",
        confirm="Retry the failed tasks of this job?",
        icon="bi-arrow-repeat",
        style="btn-outline-primary",
    ),
    Action(
        name="restart",
        label="Restart entire job",
        method="restart",
        allowed_if="is_restartable",
        message="Job with ID %d will be restarted",
        confirm="Restart the entire job? All of its tasks will be processed again.",
        icon="bi-arrow-counterclockwise",
        style="btn-outline-primary",
        staff_only=True,
    ),
)

TASK_ACTIONS = (
    Action(
        name="delete",
        label="Delete task",
        method="delete_pending",
        allowed_if="is_deletable",
        message="Task with ID %d was deleted",
        confirm="Delete this task?",
        icon="bi-trash",
        style="btn-outline-danger",
    ),
    Action(
        name="reset",
        label="Reset task",
        method="reset",
        allowed_if="is_resettable",
        message="Task with ID %d was reset",
        confirm="Reset this task? It will be processed again.",
        icon="bi-arrow-repeat",
        style="btn-outline-primary",
    ),
    Action(
        name="kill",
        label="Kill task",
        method="kill",
        allowed_if="is_killable",
        message="Task with ID %d will be killed",
        confirm="Kill this task? The worker stops it after the current instance.",
        icon="bi-x-octagon",
        style="btn-outline-danger",
        staff_only=True,
    ),
)


def _offered_actions(obj, actions: tuple[Action, ...], prefix: str, user) -> list[dict]:
    return [
        {"action": action, "url": app_url(f"{prefix}_{action.name}", obj)}
        for action in actions
        if action.is_offered(obj, user)
    ]


class JobKindView(View):
    """A page of one job kind; the base of the views a kind's links route to."""

    kind: JobKind | None = None  # given to as_view() by job_urlpatterns

    @property
    def app(self) -> JobKind:
        assert self.kind is not None, "use job_urlpatterns() to route to the job views"
        return self.kind

    def app_template(self, name: str) -> list[str]:
        return [f"{self.app.namespace}/{name}", f"core/jobs/{name}"]

    def get_job(self) -> DicomJob:
        return get_object_or_404(self.app.visible_jobs(self.request.user), pk=self.kwargs["pk"])

    def get_task(self) -> DicomTask:
        return get_object_or_404(self.app.visible_tasks(self.request.user), pk=self.kwargs["pk"])

    def base_context(self) -> dict:
        return {
            "app_label": self.app.label,
            "job_list_url": reverse(f"{self.app.namespace}:job_list"),
        }


class JobListView(JobKindView, TemplateView):
    def get_template_names(self) -> list[str]:
        return self.app_template("job_list.html")

    def get_context_data(self, **kwargs) -> dict:
        request = self.request
        show_all = request.user.is_staff and request.GET.get("all") in ("1", "true", "on")
        jobs = self.app.jobs_for(request.user, all_users=show_all).order_by("-created", "-pk")
        filter_form = StatusFilterForm(request, JobStatus.choices)
        table = JobTable(filter_form.filter(jobs), exclude=() if show_all else ("owner",))
        per_page = page_size(request)
        paginate(table, request, per_page)

        toggled = request.GET.copy()
        toggled.pop("page", None)
        if show_all:
            toggled.pop("all", None)
        else:
            toggled["all"] = "1"
        return {
            **super().get_context_data(**kwargs),
            **self.base_context(),
            "table": table,
            "filter_form": filter_form,
            "per_page": per_page,
            "page_sizes": PAGE_SIZES,
            "show_all": show_all,
            "toggle_all_url": f"{request.path}?{toggled.urlencode()}",
        }


class JobDetailView(JobKindView, TemplateView):
    """The job page. Its changing part is one template (``_job_live.html``, the app's own if
    it has one) that the page includes and JobProgressView renders alone for htmx to poll, so
    the first render and every refresh look the same."""

    def get_template_names(self) -> list[str]:
        return self.app_template("job_detail.html")

    def get_context_data(self, **kwargs) -> dict:
        request = self.request
        job = self.get_job()
        processed, total = task_progress(job)
        filter_form = StatusFilterForm(request, TaskStatus.choices, self.app.task_filter)
        tasks = filter_form.filter(job.tasks.all())
        table = task_table_for(self.app)(tasks)
        per_page = page_size(request)
        paginate(table, request, per_page)

        progress_url = app_url("job_progress", job)
        if request.GET:
            progress_url += f"?{request.GET.urlencode()}"
        links = [
            {"link": link, "url": app_url(f"job_{link.name}", job)}
            for link in self.app.links
            if link.shown_if(job)
        ]
        return {
            **super().get_context_data(**kwargs),
            **self.base_context(),
            "job": job,
            "processed": processed,
            "total": total,
            "percent": round(100 * processed / total) if total else 0,
            "task_table": table,
            "filter_form": filter_form,
            "per_page": per_page,
            "page_sizes": PAGE_SIZES,
            "actions": _offered_actions(job, JOB_ACTIONS, "job", request.user),
            # A finished job changes no more: the fragment stops polling by leaving out its
            # trigger.
            "live": not job.is_finished,
            "progress_url": progress_url,
            "links": links,
            "job_fields_template": self.app.job_fields_template,
            "live_template": select_template(self.app_template("_job_live.html")),
        }


class JobProgressView(JobDetailView):
    """The part of the job page that changes while the job runs, polled by htmx."""

    def get_template_names(self) -> list[str]:
        return self.app_template("_job_live.html")


class TaskDetailView(JobKindView, TemplateView):
    def get_template_names(self) -> list[str]:
        return self.app_template("task_detail.html")

    def get_context_data(self, **kwargs) -> dict:
        task = self.get_task()
        return {
            **super().get_context_data(**kwargs),
            **self.base_context(),
            "task": task,
            "job": task.job,
            "task_fields_template": self.app.task_fields_template,
            "actions": _offered_actions(task, TASK_ACTIONS, "task", self.request.user),
            **(self.app.task_context(task) if self.app.task_context else {}),
        }


class _ActionView(JobKindView):
    http_method_names = ["post"]
    action: Action | None = None  # given to as_view() by job_urlpatterns

    def perform(self, obj, success_url: str, back_url: str) -> HttpResponse:
        action = self.action
        assert action is not None
        if action.staff_only and not self.request.user.is_staff:
            raise PermissionDenied(f"Only staff may {action.label.lower()}.")
        pk = obj.pk
        try:
            getattr(obj, action.method)()
        except ActionNotAllowed as err:
            context = {"message": str(err), "back_url": back_url}
            return render(self.request, "core/jobs/action_not_allowed.html", context, status=400)
        messages.success(self.request, action.message % pk)
        return redirect(success_url)


class JobActionView(_ActionView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = self.get_job()
        detail_url = app_url("job_detail", job)
        assert self.action is not None
        deleted = self.action.name == "delete"
        success_url = reverse(f"{self.app.namespace}:job_list") if deleted else detail_url
        return self.perform(job, success_url, detail_url)


class TaskActionView(_ActionView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        task = self.get_task()
        detail_url = app_url("task_detail", task)
        assert self.action is not None
        deleted = self.action.name == "delete"
        success_url = app_url("job_detail", task.job) if deleted else detail_url
        return self.perform(task, success_url, detail_url)


def job_urlpatterns(job_model: type[DicomJob]) -> list[URLPattern]:
    """The URL patterns of the job pages of the kind of ``job_model`` (registered in its
    app's ``AppConfig.ready``).

    Names (in the app's namespace): job_list, job_detail, job_progress, job_verify, job_delete,
    job_cancel, job_resume, job_retry, job_restart, task_detail, task_delete, task_reset,
    task_kill, and job_<name> for each of the kind's links.
    """
    kind = registry.kind_of(job_model)
    app = {"kind": kind}
    return [
        path("jobs/", JobListView.as_view(**app), name="job_list"),
        path("jobs/<int:pk>/", JobDetailView.as_view(**app), name="job_detail"),
        path("jobs/<int:pk>/progress/", JobProgressView.as_view(**app), name="job_progress"),
        *(
            path(
                f"jobs/<int:pk>/{action.name}/",
                JobActionView.as_view(action=action, **app),
                name=f"job_{action.name}",
            )
            for action in JOB_ACTIONS
        ),
        *(
            path(f"jobs/<int:pk>/{link.path}", link.view.as_view(**app), name=f"job_{link.name}")
            for link in kind.links
        ),
        path("tasks/<int:pk>/", TaskDetailView.as_view(**app), name="task_detail"),
        *(
            path(
                f"tasks/<int:pk>/{action.name}/",
                TaskActionView.as_view(action=action, **app),
                name=f"task_{action.name}",
            )
            for action in TASK_ACTIONS
        ),
    ]
