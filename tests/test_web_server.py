"""ADIT's web server (adit.web_server) in a process of its own, serving the app on the test
database, with real requests: large bodies and slow clients cost the web process little memory,
Django still gets every body whole, and clients that go away leave nothing behind.

Memory is the web process's high-water mark (VmHWM), reset to its current size just before the
request. Plain daphne 4.2.3 raised it by 307 MiB for the 300 MiB body (it queues all of a body
for the application at once), by 2.3 GiB for the 200 MiB upload (Twisted parses a form upload
in memory as well) and by 398 MiB for the 200 MiB response to a slow reader (it writes all of a
response to Twisted's buffer at once); the bound here is a small fraction of either.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from adit.core.tests.asgi_server import AsgiServer

# The web process works on the test database, which exists only for tests that ask for it.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
BOUND = 50 * MIB
ECHO = "/test-web-server/body-echo/"


@pytest.fixture(scope="module")
def web(django_db_setup) -> Iterator[AsgiServer]:
    """One web process for the module (each takes seconds to start). Memory a request made it
    take stays taken after it is freed and would hide what a later test's request takes; but
    no request here makes a working server take much, and the first that does fails its test.
    """
    server = AsgiServer()
    try:
        # Imports, Django's first request, a body large enough to be spooled to a file.
        requests.post(server.url + ECHO, data=os.urandom(MIB), timeout=30).raise_for_status()
        requests.get(f"{server.url}/test-web-server/stream/2/", timeout=30).raise_for_status()
        yield server
    finally:
        server.stop()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def _reset_peak(pid: int) -> int:
    """Makes the high-water mark the current resident size (Linux 4.0+); returns that size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib(pid, "VmRSS") * 1024


def _peak(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


def _open_deleted_files(pid: int) -> int:
    """Files the process holds open that have no name any more: spooled bodies."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).endswith("(deleted)")
        except FileNotFoundError:
            pass
    return count


class Body:
    """``mib`` MiB of random-looking bytes, made a MiB at a time as they are sent."""

    def __init__(self, mib: int):
        self.size = mib * MIB
        self._mib = mib
        self._block = os.urandom(MIB)
        self.sha256 = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for number in range(self._mib):
            block = number.to_bytes(4, "big") + self._block[4:]
            self.sha256.update(block)
            yield block


def _address(web: AsgiServer) -> tuple[str, int]:
    return "127.0.0.1", web.port


def test_a_300_mib_body_sent_chunked_reaches_django_whole_without_being_held(web):
    """As a STOW-RS request of a large study comes."""
    body = Body(300)
    before = _reset_peak(web.process.pid)

    response = requests.post(
        web.url + ECHO,
        data=iter(body),  # a generator: requests sends it chunked
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
        timeout=120,
    )
    grown = _peak(web.process.pid) - before

    assert response.status_code == 200, response.text[:500]
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.json() == {
        "content_type": "multipart/related",
        "size": body.size,
        "sha256": body.sha256.hexdigest(),
    }
    print(f"the web process's peak grew by {grown / MIB:.1f} MiB for a 300 MiB body")
    assert grown < BOUND, f"the web process's peak grew by {grown / MIB:.0f} MiB"


def test_a_200_mib_file_upload_reaches_django_whole_without_being_held(web):
    """Twisted would also parse a form upload in memory, besides daphne queueing it. (Django
    parses no form sent chunked: an upload comes with its length.)"""
    file = Body(200)
    boundary = "adit-test-boundary"
    start = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="comment"\r\n\r\n'
        "a big one\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="upload"; filename="study.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    end = f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection(*_address(web), timeout=120)
    before = _reset_peak(web.process.pid)
    try:
        connection.putrequest("POST", ECHO)
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(start) + file.size + len(end)))
        connection.endheaders()
        for block in (start, *file, end):
            connection.send(block)
        response = connection.getresponse()
        status, echoed = response.status, response.read()
    finally:
        connection.close()
    grown = _peak(web.process.pid) - before

    assert status == 200, echoed[:500]
    assert json.loads(echoed) == {
        "fields": {"comment": ["a big one"]},
        "files": {
            "upload": {
                "name": "study.zip",
                "size": file.size,
                "sha256": file.sha256.hexdigest(),
            }
        },
    }
    print(f"the web process's peak grew by {grown / MIB:.1f} MiB for a 200 MiB upload")
    assert grown < BOUND, f"the web process's peak grew by {grown / MIB:.0f} MiB"


def test_forms_json_and_uploads_reach_django_as_sent(web):
    form = requests.post(
        web.url + ECHO,
        data={"name": "Müller^Jürgen", "modality": ["CT", "MR"], "empty": ""},
        timeout=30,
    )
    assert form.json() == {
        "fields": {"name": ["Müller^Jürgen"], "modality": ["CT", "MR"], "empty": [""]},
        "files": {},
    }

    document = b'{"study": "1.2.3", "pseudonym": "X\\u00e9"}'
    json_post = requests.post(
        web.url + ECHO,
        data=document,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert json_post.json() == {
        "content_type": "application/json",
        "size": len(document),
        "sha256": hashlib.sha256(document).hexdigest(),
    }

    # Larger than Twisted keeps in memory (100 kB) and than one chunk of the body (256 KiB).
    sheet = os.urandom(3 * MIB + 17)
    upload = requests.post(
        web.url + ECHO,
        data={"urgent": "yes"},
        files={"sheet": ("batch.xlsx", sheet, "application/octet-stream")},
        timeout=30,
    )
    assert upload.json() == {
        "fields": {"urgent": ["yes"]},
        "files": {
            "sheet": {
                "name": "batch.xlsx",
                "size": len(sheet),
                "sha256": hashlib.sha256(sheet).hexdigest(),
            }
        },
    }


def test_a_slow_reader_of_a_200_mib_response_gets_it_all_without_it_being_held(web):
    connection = http.client.HTTPConnection(*_address(web), timeout=60)
    connection.connect()
    assert connection.sock is not None
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    before = _reset_peak(web.process.pid)
    try:
        connection.request("GET", "/test-web-server/stream/200/")
        response = connection.getresponse()
        assert response.status == 200
        time.sleep(2)  # reads nothing: the app would have made all of it by now
        stalled = _peak(web.process.pid) - before
        received = 0
        while block := response.read(MIB):
            # Each MiB of the stream is one byte value, its number.
            assert block == bytes([received // MIB % 256]) * len(block)
            received += len(block)
    finally:
        connection.close()
    grown = _peak(web.process.pid) - before

    assert received == 200 * MIB
    print(f"the peak grew by {stalled / MIB:.1f} MiB while stalled, {grown / MIB:.1f} in all")
    assert grown < BOUND, f"the web process's peak grew by {grown / MIB:.0f} MiB"


def test_clients_that_go_away_mid_body_leave_no_errors_and_no_open_files(web):
    pid = web.process.pid
    files_before = _open_deleted_files(pid)
    log_before = len(web.log())
    head = f"POST {ECHO} HTTP/1.1\r\nHost: x\r\nContent-Length: {50 * MIB}\r\n\r\n".encode()

    # Gone halfway through sending the body: the application never starts.
    with socket.create_connection(_address(web)) as client:
        client.sendall(head + bytes(25 * MIB))
    # Gone right after the body, while Django reads it: Django hears of it (http.disconnect)
    # instead of reading the rest.
    with socket.create_connection(_address(web)) as client:
        client.sendall(head + bytes(50 * MIB))
    # Gone in the middle of a response it was reading slowly, while the app waits to send more.
    reader = http.client.HTTPConnection(*_address(web), timeout=30)
    reader.request("GET", "/test-web-server/stream/200/")
    assert len(reader.getresponse().read(MIB)) == MIB
    reader.close()

    deadline = time.monotonic() + 10
    while _open_deleted_files(pid) > files_before:
        assert time.monotonic() < deadline, "the spooled bodies were not closed"
        time.sleep(0.1)
    echoed = requests.post(web.url + ECHO, data=b"still there", timeout=30).json()
    assert echoed["size"] == len(b"still there")
    new_output = web.log()[log_before:]
    for sign_of_trouble in ("Traceback", "ERROR", "WARNING", "Exception"):
        assert sign_of_trouble not in new_output, new_output
