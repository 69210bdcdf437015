"""The token page in a real Chromium under the Content-Security-Policy: the copy button (an
Alpine component of a static file) and the confirmation before a delete (a data attribute)."""

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.tests.factories import PASSWORD
from adit.token_authentication.models import Token

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_copy_a_new_token_and_delete_it_after_confirming(page: Page, live_server, member):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(live_server.url + "/token-authentication/")

    page.get_by_role("button", name="Generate token").click()
    token = page.get_by_test_id("new-token-value").inner_text().strip()
    page.get_by_test_id("copy-token").click()
    expect(page.get_by_test_id("copy-token")).to_have_text("Copied")
    expect(page.get_by_test_id("copy-token").locator("i")).to_have_class("bi bi-check2")
    assert page.evaluate("navigator.clipboard.readText()") == token

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_test_id("token-table")).to_be_visible()
    assert Token.objects.filter(owner=member).count() == 1

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_test_id("no-tokens")).to_be_visible()
    assert not Token.objects.filter(owner=member).exists()
    assert errors == []
