"""The test suite itself: async code that calls the ORM directly must fail in tests, as in use.

Only browser tests allow it (root conftest.py), because Playwright's sync API runs an event loop
in the main thread; they run last, so no other test inherits that loop.
"""

import asyncio
import os

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection


def test_tests_without_a_browser_do_not_allow_async_unsafe_calls():
    assert "DJANGO_ALLOW_ASYNC_UNSAFE" not in os.environ


@pytest.mark.django_db(transaction=True)
def test_a_sync_orm_call_from_async_code_fails():
    async def count_directly() -> int:
        return get_user_model().objects.count()

    def count_and_disconnect() -> int:
        try:
            return get_user_model().objects.count()
        finally:
            # The connection belongs to asgiref's long-lived worker thread; left open, it would
            # keep the test database from being dropped at the end of the session.
            connection.close()

    async def count_in_a_thread() -> int:
        return await sync_to_async(count_and_disconnect)()

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(count_directly())
    assert asyncio.run(count_in_a_thread()) == 0
