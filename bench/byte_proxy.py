"""The floor under target (a) of ``cli bench dicomweb``: an ASGI app that passes Orthanc's
WADO-RS answer through ADIT's web server (adit.web_server) as it comes, with no DICOM handling
at all: no parts parsed, no instance read, checked or pseudonymized.

It reads the source as ADIT's DICOMweb connector does (``requests`` on a thread, the body in
1 MiB pieces) and sends each piece on as ADIT's WADO-RS view sends a response (ASGI messages
through daphne and Twisted). No DICOMweb proxy in this stack can be faster, so its ratio to
Orthanc's own WADO-RS is the most that target (a) can reach on the machine.

Served by ``python -m adit.web_server bench.byte_proxy:application`` with
``BENCH_PROXY_TARGET`` set to the source's DICOMweb root; answers ``/health/`` for the bench's
readiness check and proxies any other GET path below that root.
"""

from __future__ import annotations

import asyncio
import os

import requests

TARGET_ENV = "BENCH_PROXY_TARGET"
PIECE_BYTES = 1024 * 1024
TIMEOUT = (10, 600)  # connect, read (seconds)


async def application(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/health/":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    accept = [value.decode() for name, value in scope["headers"] if name.lower() == b"accept"]
    response = await asyncio.to_thread(
        requests.get,
        os.environ[TARGET_ENV] + scope["path"],
        headers={"Accept": accept[0]} if accept else {},
        stream=True,
        timeout=TIMEOUT,
    )
    try:
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", content_type.encode("latin-1"))],
            }
        )
        pieces = response.iter_content(PIECE_BYTES)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body"})
    finally:
        response.close()
