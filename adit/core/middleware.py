from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.log import log_response

from adit.core import sections
from adit.core.api import is_api_path
from adit.core.models import ProjectSettings, SectionLock


class ContentSecurityPolicyMiddleware:
    """Sends settings.CONTENT_SECURITY_POLICY with every response that has none of its own.

    The policy lets the browser run scripts from ADIT's static files only: should a value from
    a PACS, a file or a user ever end up as markup in a page, it cannot run as a script there.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


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
        if is_api_path(request.path):
            response = JsonResponse(
                {"detail": "ADIT is in maintenance mode. Please try again later."}, status=503
            )
            return _logged_as_expected(response, request, "Maintenance mode")
        if request.user.is_staff:
            return self.get_response(request)
        response = render(request, "core/maintenance.html", status=503)
        return _logged_as_expected(response, request, "Maintenance mode")

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
        response = render(request, "core/section_locked.html", context, status=503)
        return _logged_as_expected(response, request, "Section locked")


def _logged_as_expected(response: HttpResponse, request: HttpRequest, reason: str) -> HttpResponse:
    """Logs a 503 that staff chose (maintenance, a locked section) at INFO: Django would log it
    as an ERROR, the level that pages whoever watches the logs."""
    log_response("%s: %s", reason, request.path, response=response, request=request, level="info")
    return response
