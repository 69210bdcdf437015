import pytest

from adit.core.models import ProjectSettings

pytestmark = pytest.mark.django_db


@pytest.fixture
def maintenance():
    project_settings = ProjectSettings.get()
    project_settings.maintenance = True
    project_settings.save()


def test_staff_turns_maintenance_on_in_admin_section(client, staff_user, member):
    client.force_login(staff_user)
    response = client.post("/admin-section/maintenance/", follow=True)
    assert "Maintenance mode is now on." in response.content.decode()
    assert ProjectSettings.get().maintenance

    client.force_login(member)
    assert client.get("/").status_code == 503


def test_non_staff_get_maintenance_page(client, member, maintenance):
    client.force_login(member)
    response = client.get("/")
    assert response.status_code == 503
    assert "is in maintenance" in response.content.decode()


def test_staff_browse_with_banner(client, staff_user, maintenance):
    client.force_login(staff_user)
    response = client.get("/")
    assert response.status_code == 200
    assert "Site is in maintenance mode!" in response.content.decode()


def test_api_answers_503_even_for_staff(client, staff_user, maintenance):
    client.force_login(staff_user)
    response = client.get("/api/me/")
    assert response.status_code == 503
    assert "maintenance" in response.json()["detail"]


def test_login_and_health_keep_working(client, maintenance):
    assert client.get("/health/").status_code == 200
    assert client.get("/accounts/login/").status_code == 200


def test_anonymous_users_see_maintenance_page_not_login_redirect(client, maintenance):
    assert client.get("/").status_code == 503


def test_non_staff_cannot_toggle_maintenance(client, member):
    client.force_login(member)
    response = client.post("/admin-section/maintenance/")
    assert response.status_code == 302
    assert "/django-admin/login/" in response.url
    assert not ProjectSettings.get().maintenance


def test_announcement_is_shown_on_home_page(client, member):
    project_settings = ProjectSettings.get()
    project_settings.announcement = "<b>PACS downtime on Friday</b>"
    project_settings.save()
    client.force_login(member)
    assert "<b>PACS downtime on Friday</b>" in client.get("/").content.decode()
