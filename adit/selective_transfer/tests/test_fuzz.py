"""Arbitrary input from a client: every WebSocket message gets a readable answer and never ends
the socket with an internal error (1011); every download request gets a page that says what is
wrong, never a 500. Hypothesis makes up the input; the examples are few so that CI stays fast.
"""

from __future__ import annotations

import json
import logging
from html import unescape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adit.selective_transfer.forms import SelectiveTransferForm

from .conftest import give
from .test_consumer import Page

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Where the page shows an answer: one of these must be in every answer to a message.
ANSWER_MARKERS = ('data-testid="form-errors"', 'data-testid="search-message"',
                  'data-testid="transfer-message"', 'data-testid="results-table"',
                  "still searching")  # fmt: skip
HINT = "Choose a DICOM source and destination"

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=80),
    st.text(alphabet="0123456789.", max_size=70),
    st.sampled_from(["2024-07-24", "1.2.3", "P1\\1.2.3", "*", "1.2.3\n", "'\"<>\\", "\x00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from([*SelectiveTransferForm.base_fields, "HEADERS", "unknown"])


def _readable(html: str) -> bool:
    text = unescape(html)
    return any(marker in html for marker in ANSWER_MARKERS) and "Traceback" not in text


def _app_errors(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name.startswith(("adit", "django"))
    ]


@pytest.fixture
def socket(researcher, source_server, destination_server):
    page = Page(researcher)
    connected, _ = page.connect()
    assert connected
    yield page
    page.close()


@FUZZ
@given(
    action=st.one_of(st.sampled_from(["search", "transfer", "reset"]), json_values),
    fields=st.dictionaries(field_names, json_values, max_size=6),
    use_real_nodes=st.booleans(),
)
def test_every_message_gets_a_readable_answer_and_the_socket_stays_open(
    socket, source_server, destination_server, caplog, action, fields, use_real_nodes
):
    if use_real_nodes:
        fields = {"source": source_server.pk, "destination": destination_server.pk, **fields}
    socket.send_raw(json.dumps({"action": action, **fields}))
    first = socket.receive()
    assert _readable(first), first
    # A reset supersedes a search still running; nothing of it comes after the answer.
    socket.send("reset")
    answer = first
    while HINT not in answer:
        answer = socket.receive()
        assert _readable(answer), answer
    assert _app_errors(caplog) == []


@FUZZ
@given(frame=st.text(min_size=1, max_size=200) | st.binary(min_size=1, max_size=200))
def test_frames_that_are_no_json_object_are_answered(socket, caplog, frame):
    if isinstance(frame, bytes):
        socket._run(socket.communicator.send_to(bytes_data=frame))
    else:
        socket.send_raw(frame)
    answer = socket.receive()
    assert _readable(answer) or "unreadable" in answer, answer
    assert _app_errors(caplog) == []


@pytest.fixture
def downloader(client, researcher, source_server):
    give(researcher, "can_download_study")
    client.force_login(researcher)
    return client


@FUZZ
@given(
    row=st.one_of(
        st.text(max_size=100),
        st.dictionaries(
            st.sampled_from(["source", "study_uid", "patient_id", "other"]), json_values, max_size=4
        ).map(json.dumps),
        st.fixed_dictionaries(
            {
                "source": st.sampled_from([-1, 0, 1, 2**40, "1"]) | st.integers(),
                "study_uid": st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,4}", fullmatch=True)
                | st.text(max_size=70),
                "patient_id": st.text(max_size=70),
            }
        ).map(json.dumps),
    ),
    pseudonym=st.text(max_size=70),
    use_real_source=st.booleans(),
)
def test_every_download_request_gets_a_page_saying_what_is_wrong(
    downloader, source_server, caplog, row, pseudonym, use_real_source
):
    if use_real_source:
        try:
            fields = json.loads(row)
        except ValueError:  # the row is broken on purpose; it names no source either way
            fields = None
        if isinstance(fields, dict):
            row = json.dumps({**fields, "source": source_server.pk})
    response = downloader.post(
        "/selective-transfer/download/", {"study": row, "pseudonym": pseudonym}
    )

    assert response.status_code in (200, 400, 403, 404, 502), response.status_code
    if response.status_code == 200:
        assert response["Content-Type"] == "application/zip"
        b"".join(response.streaming_content)
    else:
        page = response.content.decode()
        assert 'data-testid="download-refused"' in page
        assert "Traceback" not in page
    assert _app_errors(caplog) == []


@FUZZ
@given(query=st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=4))
def test_a_get_of_the_download_is_a_405_page(downloader, query):
    response = downloader.get("/selective-transfer/download/", query)

    assert response.status_code == 405
    assert "download button of a study" in response.content.decode()
