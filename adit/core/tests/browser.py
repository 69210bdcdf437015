"""Helpers for tests in a real Chromium."""

from playwright.sync_api import Page, expect

from adit.accounts.tests.factories import PASSWORD


def log_in(page: Page, url: str, username: str = "alice") -> None:
    """Logs in through the login page of the app at ``url``, as a person does."""
    page.goto(url + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("active-group")).to_be_visible()
