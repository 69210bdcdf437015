"""The e-mail a job's owner gets when the job finished."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

if TYPE_CHECKING:
    from adit.core.jobs.models import DicomJob


def job_url(job: DicomJob) -> str:
    try:
        path = reverse(f"{job._meta.app_label}:job_detail", args=[job.pk])
    except NoReverseMatch:
        path = ""
    return f"{settings.SITE_URL.rstrip('/')}{path}" if path else ""


def send_job_finished_mail(job: DicomJob) -> None:
    owner = job.owner
    if not owner.email:
        return
    context = {"job": job, "job_url": job_url(job), "owner": owner}
    send_mail(
        subject=f"{settings.EMAIL_SUBJECT_PREFIX}Job {job.pk} finished: {job.get_status_display()}",  # pyright: ignore[reportAttributeAccessIssue]
        message=render_to_string("core/mail/job_finished.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[owner.email],
        fail_silently=True,
    )
