"""Login, active group and logout as a user does them, in a real Chromium."""

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.tests.factories import PASSWORD

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def _log_in(page: Page, live_server, username: str, password: str = PASSWORD) -> None:
    page.goto(live_server.url + "/")
    expect(page).to_have_url(live_server.url + "/accounts/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_user_logs_in_switches_group_and_logs_out(page: Page, live_server, member):
    _log_in(page, live_server, "alice")
    expect(page.get_by_test_id("active-group")).to_contain_text("Active group: Thoraxklinik")

    page.get_by_test_id("user-menu").click()
    page.get_by_role("link", name="Profile").click()
    page.get_by_label("Active group").select_option(label="Neuroradiologie")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_role("alert")).to_contain_text("Active group changed to Neuroradiologie.")

    page.goto(live_server.url + "/")
    expect(page.get_by_test_id("active-group")).to_contain_text("Active group: Neuroradiologie")

    page.get_by_test_id("user-menu").click()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(live_server.url + "/accounts/login/")
    page.goto(live_server.url + "/accounts/profile/")
    expect(page).to_have_url(live_server.url + "/accounts/login/?next=/accounts/profile/")


def test_wrong_password_is_refused_with_a_message(page: Page, live_server, member):
    _log_in(page, live_server, "alice", "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    expect(page).to_have_url(live_server.url + "/accounts/login/?next=/")
