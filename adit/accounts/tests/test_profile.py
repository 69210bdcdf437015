import pytest

from adit.accounts.tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_profile_shows_the_user_and_their_groups(client, member):
    client.force_login(member)
    page = client.get("/accounts/profile/").content.decode()
    assert "alice@example.org" in page
    assert "Thoraxklinik" in page and "Neuroradiologie" in page


def test_user_changes_password_and_logs_in_with_the_new_one(client, member):
    client.force_login(member)
    response = client.post(
        "/accounts/password-change/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
        follow=True,
    )
    assert "Your password was changed." in response.content.decode()
    client.logout()
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "a-new-long-passphrase"}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_wrong_old_password_is_refused_with_a_message(client, member):
    client.force_login(member)
    response = client.post(
        "/accounts/password-change/",
        {
            "old_password": "wrong",
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
    )
    assert "Your old password was entered incorrectly" in response.content.decode()
    member.refresh_from_db()
    assert member.check_password(PASSWORD)


def test_logout_needs_post_and_ends_the_session(client, member):
    client.force_login(member)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302
