"""Eight downloads from a slow PACS in one daphne process, and a search on the same process
still answers while they stream.

Streamed downloads wait for the PACS in the event loop, not on threads of its default
executor, which the WebSocket search runs on. The slow PACS is a pynetdicom SCP of the test
that pauses between the instances of its C-GET (a real Orthanc cannot be made to answer
slowly); the search goes to a real Orthanc.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
import zipfile
from collections.abc import Iterator

import pytest
import requests
from django.test import Client
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from websockets.sync.client import connect

from adit.core.models import DicomServer
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.factories import grant
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

from .conftest import give

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DOWNLOADS = 8  # more than the 6 threads of the default executor on 2 cores (cpu_count + 4)
INSTANCES = 3
PAUSE = 4.0  # seconds between two instances, after the first
PATIENT_ID = "SLOW1"
STUDY_UID = generate_uid()
SERIES_UID = generate_uid()
SOP_UIDS = [generate_uid() for _ in range(INSTANCES)]


def _instance(number: int) -> Dataset:
    dataset = fake_ct_instance(
        STUDY_UID, SERIES_UID, number + 1, sop_uid=SOP_UIDS[number], patient_id=PATIENT_ID
    )
    dataset.PatientName = "Slow^Patient"
    dataset.StudyDate = "20240101"
    dataset.StudyTime = "120000"
    dataset.SeriesNumber = 1
    return dataset


def _answer_find(event):
    level = str(event.identifier.get("QueryRetrieveLevel", ""))
    answer = Dataset()
    answer.QueryRetrieveLevel = level
    answer.PatientID = PATIENT_ID
    answer.StudyInstanceUID = STUDY_UID
    if level == "STUDY":
        answer.StudyDate = "20240101"
        answer.StudyTime = "120000"
        answer.ModalitiesInStudy = "CT"
        answer.SOPClassesInStudy = CTImageStorage
        answer.NumberOfStudyRelatedInstances = INSTANCES
        yield 0xFF00, answer
    elif level == "SERIES":
        answer.SeriesInstanceUID = SERIES_UID
        answer.Modality = "CT"
        answer.SeriesNumber = 1
        answer.NumberOfSeriesRelatedInstances = INSTANCES
        yield 0xFF00, answer
    elif level == "IMAGE":
        for sop_uid in SOP_UIDS:
            image = Dataset()
            image.QueryRetrieveLevel = level
            image.PatientID = PATIENT_ID
            image.StudyInstanceUID = STUDY_UID
            image.SeriesInstanceUID = SERIES_UID
            image.SOPInstanceUID = sop_uid
            image.SOPClassUID = CTImageStorage
            yield 0xFF00, image


def _answer_get_slowly(event):
    yield INSTANCES
    for number in range(INSTANCES):
        if number:
            time.sleep(PAUSE)
        yield 0xFF00, _instance(number)


@pytest.fixture
def slow_pacs(researcher) -> Iterator[DicomServer]:
    with FakePacs(
        "SLOWPACS",
        find=_answer_find,
        get=_answer_get_slowly,
        max_associations=DOWNLOADS * 4,
    ) as pacs:
        row = pacs.server(
            "Slow PACS",
            study_root_find_support=True,
            study_root_get_support=True,
            # Every download streams on an association of its own, all at once.
            max_associations=DOWNLOADS * 2,
        )
        grant(row, researcher.active_group, source=True)
        yield row


def test_a_search_answers_while_eight_slow_downloads_stream(
    researcher, slow_pacs, source_server, orthanc1_studies
):
    give(researcher, "can_download_study")
    browser = Client()
    browser.force_login(researcher)
    session = browser.cookies["sessionid"].value
    csrf = secrets.token_hex(16)  # an unmasked CSRF secret, as the cookie holds it
    server = AsgiServer()
    try:
        started = threading.Barrier(DOWNLOADS + 1, timeout=60)
        archives: list[bytes] = []
        arrivals: list[float] = []  # when a piece of any download came after the first
        finished: list[float] = []
        failures: list[BaseException] = []

        def download() -> None:
            try:
                response = requests.post(
                    f"{server.url}/selective-transfer/download/",
                    data={
                        "study": json.dumps(
                            {
                                "source": slow_pacs.pk,
                                "patient_id": PATIENT_ID,
                                "study_uid": STUDY_UID,
                            }
                        ),
                        "pseudonym": "SLOW-SUBJ",
                    },
                    cookies={"sessionid": session, "csrftoken": csrf},
                    headers={"X-CSRFToken": csrf, "Origin": server.url},
                    stream=True,
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                pieces = response.iter_content(chunk_size=None)
                received = [next(pieces)]  # the first instance's entry
                started.wait()
                for piece in pieces:
                    arrivals.append(time.monotonic())
                    received.append(piece)
                archives.append(b"".join(received))
                finished.append(time.monotonic())
            except BaseException as error:  # reported by the main thread
                failures.append(error)
                started.abort()

        threads = [threading.Thread(target=download) for _ in range(DOWNLOADS)]
        for thread in threads:
            thread.start()
        started.wait()  # every download has its first instance and streams the rest

        patient_id = orthanc1_studies[0].patient_id
        socket_url = f"ws://127.0.0.1:{server.port}/ws/selective-transfer"
        with connect(
            socket_url,
            origin=server.url,  # pyright: ignore[reportArgumentType]
            additional_headers={"Cookie": f"sessionid={session}"},
        ) as socket:
            asked = time.monotonic()
            socket.send(
                json.dumps(
                    {
                        "action": "search",
                        "source": source_server.pk,
                        "patient_id": patient_id,
                        "HEADERS": {"HX-Request": "true"},
                    }
                )
            )
            while "results-table" not in (html := str(socket.recv(timeout=30))):
                pass
            answered = time.monotonic()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.stop()

    assert failures == []
    assert 'data-testid="study-row"' in html
    # The search answered while every download was waiting for the slow PACS: no instance of
    # any of them came in between. (Were the downloads waiting on the executor's threads, the
    # search would get one only once an instance had come and freed it.)
    assert [when for when in arrivals if asked <= when <= answered] == []
    assert answered < min(finished)
    for archive in archives:
        names = zipfile.ZipFile(io.BytesIO(archive)).namelist()
        assert len(names) == INSTANCES and "error.txt" not in names
    log = server.log()
    assert "Traceback" not in log, log
