"""What AditClient does with answers a live ADIT gives only by chance (a 503 that goes away
on its own, a connection cut mid-answer): a tiny HTTP server of the test plays ADIT, answering
each request with the next answer of its script and keeping what it was sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pytest
from adit_client import AditClient, AditServerError, __version__
from adit_client.client import MAX_RETRY_WAIT, retry_wait
from pydicom import dcmwrite

from adit.core.demo.synthetic import generate_ct_series


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedAdit:
    """Answers request after request with the answers of ``script``, in order."""

    def __init__(self, script: list[Answer]):
        self.script = list(script)
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._answer(b"")

            def do_POST(self):
                self._answer(self._read_chunked())

            def _read_chunked(self) -> bytes:
                body = bytearray()
                while size := int(self.rfile.readline().strip(), 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return bytes(body)

            def _answer(self, body: bytes) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                outer.received.append(Received(self.command, self.path, headers, body))
                answer = outer.script.pop(0)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Answer]], ScriptedAdit]]:
    servers: list[ScriptedAdit] = []

    def start(script: list[Answer]) -> ScriptedAdit:
        server = ScriptedAdit(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def unavailable(retry_after: str) -> Answer:
    detail = {"detail": "ORTHANC1 cannot be reached: connection refused."}
    return Answer(503, json.dumps(detail).encode(), {"Retry-After": retry_after})


JSON = {"Content-Type": "application/dicom+json"}


def test_a_503_is_tried_again_after_the_wait_it_asks_for(scripted):
    adit = scripted([unavailable("1"), Answer(200, b"[]", JSON)])
    client = AditClient(adit.url, "secret-token")

    started = time.monotonic()
    answers = client.search_for_studies("ORTHANC1", {"PatientID": "42"})

    assert answers == []
    assert time.monotonic() - started >= 1
    assert len(adit.received) == 2
    for request in adit.received:
        assert request.path == "/api/dicom-web/ORTHANC1/qidors/studies?PatientID=42"
        assert request.headers["authorization"] == "Token secret-token"
        assert request.headers["user-agent"] == f"python-adit_client/{__version__}"


@pytest.mark.parametrize("retries", [0, 2])
def test_a_503_that_stays_raises_after_the_retries(scripted, retries):
    adit = scripted([unavailable("0")] * (retries + 1))
    client = AditClient(adit.url, "secret-token", retries=retries)

    with pytest.raises(AditServerError) as caught:
        client.search_for_studies("ORTHANC1")

    assert caught.value.status_code == 503
    assert caught.value.message == "ORTHANC1 cannot be reached: connection refused."
    assert len(adit.received) == retries + 1


def test_a_retried_store_sends_every_image_again(scripted):
    images = list(generate_ct_series(2, rows=8, columns=8, seed=77))
    stored = {
        "00081199": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [str(i.SOPInstanceUID)]}} for i in images],
        }
    }
    adit = scripted([unavailable("0"), Answer(200, json.dumps(stored).encode(), JSON)])
    client = AditClient(adit.url, "secret-token")

    answer = client.store_images("ORTHANC2", images)

    assert len(answer.ReferencedSOPSequence) == 2
    first, second = adit.received
    assert first.body == second.body
    for image in images:
        encoded = BytesIO()
        dcmwrite(encoded, image, enforce_file_format=True)
        assert encoded.getvalue() in second.body


def test_an_answer_cut_short_raises_after_the_instances_that_came(scripted):
    images = list(generate_ct_series(2, rows=8, columns=8, seed=78))
    parts = []
    for image in images:
        encoded = BytesIO()
        dcmwrite(encoded, image, enforce_file_format=True)
        parts.append(b"--b0\r\nContent-Type: application/dicom\r\n\r\n" + encoded.getvalue())
    body = b"\r\n".join(parts)  # no delimiter after the second instance, no closing one
    content_type = 'multipart/related; type="application/dicom"; boundary=b0'
    adit = scripted([Answer(200, body, {"Content-Type": content_type})])
    client = AditClient(adit.url, "secret-token")

    received = client.iter_study("ORTHANC1", str(images[0].StudyInstanceUID))

    assert next(received).SOPInstanceUID == images[0].SOPInstanceUID
    with pytest.raises(AditServerError, match="cut short"):
        next(received)


def test_the_wait_is_what_retry_after_says_up_to_a_minute():
    in_ten_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)

    assert retry_wait("5") == 5
    assert 8 < retry_wait(in_ten_seconds) <= 10
    assert retry_wait("3600") == MAX_RETRY_WAIT == 60


def test_a_store_that_stored_nothing_raises_with_adits_reasons(scripted):
    images = list(generate_ct_series(1, rows=8, columns=8, seed=79))
    failed = {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [272]}}]}}
    warning = '299 ADIT "The store stopped: ORTHANC2 refused the association"'
    adit = scripted([Answer(409, json.dumps(failed).encode(), {**JSON, "Warning": warning})])
    client = AditClient(adit.url, "secret-token")

    with pytest.raises(AditServerError) as caught:
        client.store_images("ORTHANC2", images)

    assert caught.value.status_code == 409
    assert caught.value.message == "The store stopped: ORTHANC2 refused the association"
