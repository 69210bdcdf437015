from django import template

from adit.core.jobs.statuses import JobStatus
from adit.core.jobs.tables import app_url
from adit.core.study_pages import links_for

register = template.Library()

# Job and task statuses share their codes, so one map colours both.
_BADGE_CLASSES: dict[str, str] = {
    JobStatus.UNVERIFIED: "text-bg-light border",
    JobStatus.PENDING: "text-bg-secondary",
    JobStatus.IN_PROGRESS: "text-bg-info",
    JobStatus.CANCELING: "text-bg-dark",
    JobStatus.CANCELED: "text-bg-dark",
    JobStatus.SUCCESS: "text-bg-success",
    JobStatus.WARNING: "text-bg-warning",
    JobStatus.FAILURE: "text-bg-danger",
}


@register.filter
def status_badge_class(status: str) -> str:
    return _BADGE_CLASSES.get(status, "text-bg-secondary")


@register.simple_tag
def job_url(name: str, obj) -> str:
    """``{% job_url "job_detail" job %}``: a page of the generic job views of obj's app."""
    return app_url(name, obj)


@register.simple_tag(takes_context=True)
def study_pages(context, task) -> list[tuple[str, str]]:
    """``{% study_pages task as pages %}``: (label, URL) of other apps' pages about the task's
    study that the current user may open (see ``adit.core.study_pages``)."""
    return links_for(context["user"], task.source_id, task.patient_id, task.study_uid)
