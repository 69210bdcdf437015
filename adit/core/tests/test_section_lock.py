import pytest

from adit.core.models import SectionLock

pytestmark = pytest.mark.django_db


def test_staff_locks_a_section_and_non_staff_are_kept_out(client, staff_user, member):
    client.force_login(staff_user)
    response = client.post(
        "/admin-section/section-lock/",
        {"namespace": "token_authentication", "reason": "Token rotation"},
        follow=True,
    )
    assert "API Tokens is locked for non-staff users." in response.content.decode()

    client.force_login(member)
    response = client.get("/token-authentication/")
    assert response.status_code == 503
    page = response.content.decode()
    assert "API Tokens is locked" in page
    assert "Token rotation" in page


def test_staff_still_use_a_locked_section_with_banner(client, staff_user):
    SectionLock.objects.create(namespace="token_authentication")
    client.force_login(staff_user)
    response = client.get("/token-authentication/")
    assert response.status_code == 200
    assert "API Tokens is locked for non-staff users." in response.content.decode()


def test_unlocking_opens_the_section_again(client, staff_user, member):
    SectionLock.objects.create(namespace="token_authentication")
    client.force_login(staff_user)
    client.post("/admin-section/section-lock/", {"namespace": "token_authentication"})
    assert not SectionLock.objects.exists()
    client.force_login(member)
    assert client.get("/token-authentication/").status_code == 200


def test_unknown_section_cannot_be_locked(client, staff_user):
    client.force_login(staff_user)
    response = client.post(
        "/admin-section/section-lock/", {"namespace": "no_such_app"}, follow=True
    )
    assert "There is no lockable section of that name." in response.content.decode()
    assert not SectionLock.objects.exists()


def test_admin_section_is_staff_only(client, member):
    client.force_login(member)
    assert client.get("/admin-section/").status_code == 302
