"""API usage per user: requests and the bytes of the answers, written in batches, shown to
staff in the admin section."""

from __future__ import annotations

import pytest
from django.http import StreamingHttpResponse
from django.test import RequestFactory

from adit.accounts import api_usage
from adit.accounts.api_usage import api_usage_middleware, counter
from adit.accounts.models import ApiUsage
from adit.accounts.tests.factories import UserFactory
from adit.token_authentication.models import Token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counter():
    counter.flush()
    yield
    counter.flush()


def test_requests_and_bytes_are_counted_per_user_and_written_together(client):
    alice = UserFactory(username="alice")
    _, token = Token.objects.create_token(alice)
    headers = {"Authorization": f"Token {token}"}

    sizes = [len(client.get("/api/me/", headers=headers).content) for _ in range(5)]

    # Within the flush interval nothing is written: no query per request for statistics.
    assert not ApiUsage.objects.exists()
    counter.flush()
    usage = ApiUsage.objects.get(owner=alice)
    assert usage.requests == 5
    assert usage.transferred_bytes == sum(sizes)
    assert usage.last_access is not None

    client.get("/api/me/", headers=headers)
    counter.flush()
    assert ApiUsage.objects.get(owner=alice).requests == 6


def test_counts_are_written_by_the_next_request_after_the_interval(client, monkeypatch):
    alice = UserFactory(username="alice")
    _, token = Token.objects.create_token(alice)
    monkeypatch.setattr(api_usage, "FLUSH_SECONDS", 0)

    client.get("/api/me/", headers={"Authorization": f"Token {token}"})

    assert ApiUsage.objects.get(owner=alice).requests == 1


def test_anonymous_requests_and_pages_outside_the_api_are_not_counted(client):
    client.get("/api/me/")
    client.force_login(UserFactory(username="bob"))
    client.get("/")
    counter.flush()

    assert not ApiUsage.objects.exists()


def test_a_streamed_answer_counts_the_bytes_that_left():
    bob = UserFactory(username="bob")
    request = RequestFactory().get("/api/dicom-web/PACS/studies/1.2")
    request.user = bob
    response = api_usage_middleware(lambda request: StreamingHttpResponse([b"abc", b"defgh"]))(
        request
    )
    assert isinstance(response, StreamingHttpResponse)
    assert b"".join(response.streaming_content) == b"abcdefgh"  # pyright: ignore[reportArgumentType]
    counter.flush()

    usage = ApiUsage.objects.get(owner=bob)
    assert (usage.requests, usage.transferred_bytes) == (1, 8)


def test_staff_see_the_usage_in_the_admin_section(client):
    alice = UserFactory(username="alice")
    _, token = Token.objects.create_token(alice)
    for _ in range(3):
        client.get("/api/me/", headers={"Authorization": f"Token {token}"})
    client.force_login(UserFactory(username="admin", is_staff=True))

    page = client.get("/admin-section/").content.decode()

    table = page[page.index('data-testid="api-usage"') :]
    row = table[table.index("alice") : table.index("</tr>", table.index("alice"))]
    assert ">3<" in row.replace(" ", "").replace("\n", "")
