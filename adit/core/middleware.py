from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from . import sections
from .models import ProjectSettings, SectionLock


class MaintenanceMiddleware:
    """While maintenance mode is on, only staff can use the site.

    Login, logout, the health check and static files keep working for everybody, so staff can
    still sign in and monitoring keeps seeing the service alive.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._always_open(request.path):
            # Checked before any query, so /health/ can report a database outage itself.
            return self.get_response(request)
        project_settings = ProjectSettings.get()
        request.maintenance_mode = project_settings.maintenance  # type: ignore[attr-defined]
        if not project_settings.maintenance:
            return self.get_response(request)
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"detail": "ADIT is in maintenance mode. Please try again later."}, status=503
            )
        if request.user.is_staff:
            return self.get_response(request)
        return render(request, "core/maintenance.html", status=503)

    @staticmethod
    def _always_open(path: str) -> bool:
        open_paths = (reverse("login"), reverse("logout"), reverse("health"), "/static/")
        return path.startswith(open_paths)


class SectionLockMiddleware:
    """Non-staff users get a 'section locked' page for every view of a locked app section."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        match = request.resolver_match
        section = sections.get(match.namespace) if match else None
        if section is None or not section.lockable:
            return None
        lock = SectionLock.objects.filter(namespace=section.namespace).first()
        if lock is None:
            return None
        if request.user.is_staff:
            request.locked_section = section  # type: ignore[attr-defined]
            return None
        context = {"section": section, "lock": lock}
        return render(request, "core/section_locked.html", context, status=503)
