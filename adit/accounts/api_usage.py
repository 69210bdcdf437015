"""Counting the API's requests and the bytes of its answers per user.

A request only adds to counters in this process's memory; they are written to ``ApiUsage``
together at most every ``FLUSH_SECONDS`` (by the next request after that, or when the
process ends), so the API's hot path makes no query for statistics. The bytes of a streamed
answer count as they leave, so a retrieve that the client breaks off counts what it got.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from adit.core.api import is_api_path

from .models import ApiUsage

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0


@dataclass
class _Counts:
    requests: int = 0
    transferred_bytes: int = 0
    last_access: datetime | None = None


class UsageCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, _Counts] = {}
        self._last_flush = time.monotonic()

    def add(self, user_id: int, *, requests: int = 0, transferred_bytes: int = 0) -> None:
        with self._lock:
            counts = self._pending.setdefault(user_id, _Counts())
            counts.requests += requests
            counts.transferred_bytes += transferred_bytes
            counts.last_access = timezone.now()

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Writes what was counted since the last flush: one UPDATE per user (an INSERT for
        a user's first request)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        for user_id, counts in pending.items():
            try:
                _write(user_id, counts)
            except Exception:  # statistics never fail a request; the counts are lost
                logger.exception("API usage of user %s could not be written", user_id)

    def discard(self) -> None:
        with self._lock:
            self._pending.clear()


def _write(user_id: int, counts: _Counts) -> None:
    changes = {
        "requests": F("requests") + counts.requests,
        "transferred_bytes": F("transferred_bytes") + counts.transferred_bytes,
        "last_access": Greatest(F("last_access"), counts.last_access),
    }
    if ApiUsage.objects.filter(owner_id=user_id).update(**changes):
        return
    try:
        with transaction.atomic():
            ApiUsage.objects.create(
                owner_id=user_id,
                requests=counts.requests,
                transferred_bytes=counts.transferred_bytes,
                last_access=counts.last_access,
            )
    except IntegrityError:  # another process wrote this user's first counts meanwhile
        ApiUsage.objects.filter(owner_id=user_id).update(**changes)


counter = UsageCounter()
atexit.register(counter.flush)


def api_usage_middleware(get_response):
    """Counts each request to the API by the user it authenticated as (a token's owner, set
    on the request by the API's authentication)."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if not is_api_path(request.path):
            return response
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            _count(response, user.pk)
        counter.flush_if_due()
        return response

    return middleware


def _count(response: HttpResponseBase, user_id: int) -> None:
    if not isinstance(response, StreamingHttpResponse):
        size = len(getattr(response, "content", b""))
        counter.add(user_id, requests=1, transferred_bytes=size)
        return
    counter.add(user_id, requests=1)
    if response.is_async:  # pyright: ignore[reportAttributeAccessIssue]
        response.streaming_content = _counted_async(response.streaming_content, user_id)  # pyright: ignore[reportArgumentType]
    else:
        response.streaming_content = _counted(response.streaming_content, user_id)  # pyright: ignore[reportArgumentType]


def _counted(chunks: Iterator[bytes], user_id: int) -> Iterator[bytes]:
    for chunk in chunks:
        counter.add(user_id, transferred_bytes=len(chunk))
        yield chunk


async def _counted_async(chunks: AsyncIterator[bytes], user_id: int) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        counter.add(user_id, transferred_bytes=len(chunk))
        yield chunk
