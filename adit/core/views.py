from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_not_required  # pyright: ignore
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from adit.core import admin_panels, sections
from adit.core.forms import SectionLockForm
from adit.core.jobs import registry
from adit.core.jobs.statuses import JobStatus
from adit.core.models import ProjectSettings, SectionLock


def home(request: HttpRequest) -> HttpResponse:
    context = {"announcement": ProjectSettings.get().announcement}
    return render(request, "core/home.html", context)


@login_not_required
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and monitoring: the web process answers and the DB too."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as err:
        return JsonResponse({"status": "error", "database": str(err)}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@staff_member_required
def admin_section(request: HttpRequest) -> HttpResponse:
    locks = {lock.namespace: lock for lock in SectionLock.objects.all()}
    lockable = [
        (section, locks.get(section.namespace))
        for section in sections.all_sections()
        if section.lockable
    ]
    context = {
        "project_settings": ProjectSettings.get(),
        "lockable_sections": lockable,
        "job_status_labels": JobStatus.labels,
        "job_overview": _job_overview(),
        "panels": [(panel, panel.context()) for panel in admin_panels.all_panels()],
    }
    return render(request, "core/admin_section.html", context)


def _job_overview() -> list[dict]:
    """One row per job kind: the number of jobs (of all users) in each status, each linked to
    the app's job list filtered to that status."""
    rows = []
    for kind in registry.all_kinds():
        counts = kind.status_counts()
        list_url = reverse(f"{kind.namespace}:job_list")
        cells = [
            {
                "count": counts.get(status, 0),
                "url": f"{list_url}?all=1&status={status}",
            }
            for status in JobStatus
        ]
        rows.append({"label": kind.label, "list_url": list_url, "cells": cells})
    return rows


@staff_member_required
@require_POST
def toggle_maintenance(request: HttpRequest) -> HttpResponse:
    project_settings = ProjectSettings.get()
    project_settings.maintenance = not project_settings.maintenance
    project_settings.save(update_fields=["maintenance"])
    state = "on" if project_settings.maintenance else "off"
    messages.success(request, f"Maintenance mode is now {state}.")
    return redirect("admin_section:index")


@staff_member_required
@require_POST
def toggle_section_lock(request: HttpRequest) -> HttpResponse:
    form = SectionLockForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.errors.as_text())
        return redirect("admin_section:index")
    section = form.cleaned_data["section"]
    deleted, _ = SectionLock.objects.filter(namespace=section.namespace).delete()
    if deleted:
        messages.success(request, f"{section.label} is unlocked.")
    else:
        SectionLock.objects.create(namespace=section.namespace, reason=form.cleaned_data["reason"])
        messages.success(request, f"{section.label} is locked for non-staff users.")
    return redirect("admin_section:index")
