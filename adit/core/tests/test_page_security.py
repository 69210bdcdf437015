"""Every HTML page carries the Content-Security-Policy, and error pages are ADIT pages that say
what is wrong."""

from __future__ import annotations

import logging

import pytest
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver

from adit.core.jobs.statuses import JobStatus, TaskStatus
from adit.core.models import ProjectSettings
from adit.core.tests.job_pages import make_job, url

pytestmark = pytest.mark.django_db


def _paths(patterns, prefix: str = "") -> list[str]:
    """Every route of the URL configuration that takes no argument."""
    found = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if "<" in route or "(" in route or "^" in route.lstrip("^") or "[" in route:
            continue  # needs an argument
        if isinstance(pattern, URLResolver):
            found += _paths(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.append("/" + route.lstrip("^").rstrip("$"))
    return found


def _script_sources(policy: str) -> list[str]:
    directives = dict(
        (part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip()
    )
    return directives["script-src"]


@pytest.fixture
def superuser(staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    return staff_user


def test_every_html_page_forbids_inline_and_foreign_scripts(client, superuser, member):
    job = make_job(member, JobStatus.SUCCESS, [TaskStatus.SUCCESS])
    client.force_login(superuser)
    paths = [
        *_paths(get_resolver().url_patterns),
        url("job_detail", job),
        url("task_detail", job.tasks.get()),
        "/no/such/page/",
        "/django-admin/accounts/user/",
    ]
    html_pages = 0
    for path in paths:
        response = client.get(path)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        html_pages += 1
        policy = response.get("Content-Security-Policy", "")
        assert _script_sources(policy) == ["'self'"], f"{path}: {policy!r}"
        assert "'unsafe-inline'" not in _script_sources(policy)
        assert "<script>" not in response.content.decode(), f"{path} has an inline script"
    assert html_pages > 10


def test_the_login_page_and_the_maintenance_page_carry_it_too(client, member, caplog):
    response = Client().get("/accounts/login/")
    assert "script-src 'self'" in response["Content-Security-Policy"]

    project_settings = ProjectSettings.get()
    project_settings.maintenance = True
    project_settings.save()
    client.force_login(member)
    response = client.get("/")
    assert response.status_code == 503
    assert "script-src 'self'" in response["Content-Security-Policy"]
    # Maintenance is staff's choice, not a failure: nothing at ERROR in the log.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert client.get("/api/").status_code == 503
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_staff_only_action_by_a_non_staff_user_is_an_adit_page_naming_it(client, member):
    job = make_job(member, JobStatus.UNVERIFIED, [TaskStatus.PENDING])
    client.force_login(member)

    response = client.post(url("job_verify", job))

    assert response.status_code == 403
    page = response.content.decode()
    assert 'data-testid="user-menu"' in page  # the app's navigation: an ADIT page
    assert "Only staff may verify job." in page


def test_not_found_is_an_adit_page(client, member):
    client.force_login(member)

    response = client.get("/selective-transfer/jobs/999999/")

    assert response.status_code == 404
    page = response.content.decode()
    assert 'data-testid="error-page"' in page and 'data-testid="user-menu"' in page
    assert "/selective-transfer/jobs/999999/" in page


@override_settings(ALLOWED_HOSTS=["testserver"])
def test_bad_request_is_an_adit_page(client):
    response = client.get("/accounts/login/", HTTP_HOST="evil.example.org")

    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="error-page"' in page
    assert "malformed or missing" in page


def test_an_expired_form_says_to_reload(member):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member)

    response = browser.post("/token-authentication/", {"expiry": "", "description": "x"})

    assert response.status_code == 403
    page = response.content.decode()
    assert 'data-testid="error-page"' in page
    assert "Reload the page and send the form again." in page
