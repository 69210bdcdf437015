"""Test-only views for tests of the web server (tests/test_web_server.py): what Django made of a
request body, and a long streaming response."""

from __future__ import annotations

import hashlib

from django.contrib.auth.decorators import login_not_required  # pyright: ignore
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

MIB = 1024 * 1024


def _digest(chunks) -> dict[str, object]:
    sha256 = hashlib.sha256()
    size = 0
    for chunk in chunks:
        sha256.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": sha256.hexdigest()}


@csrf_exempt
@login_not_required
def body_echo(request: HttpRequest) -> JsonResponse:
    """The form fields and uploaded files Django parsed, or the size and hash of a raw body."""
    content_type = request.content_type
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return JsonResponse(
            {
                "fields": dict(request.POST.lists()),
                "files": {
                    name: {"name": upload.name, **_digest(upload.chunks())}
                    for name, upload in request.FILES.items()
                },
            }
        )
    return JsonResponse(
        {"content_type": content_type, **_digest(iter(lambda: request.read(MIB), b""))}
    )


@login_not_required
def stream(request: HttpRequest, mib: int) -> StreamingHttpResponse:
    """``mib`` MiB of bytes, a MiB at a time, each made when the previous one was sent."""

    async def blocks():
        for number in range(mib):
            yield bytes([number % 256]) * MIB

    return StreamingHttpResponse(blocks(), content_type="application/octet-stream")
