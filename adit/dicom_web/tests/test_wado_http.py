"""WADO-RS through ADIT served by daphne, as clients meet it over HTTP.

Conformance: dicomweb-client (the library scripts use) retrieves studies, series, instances
and their metadata through ADIT — in both URL layouts, from a C-GET, a C-MOVE and a WADO-RS
source — and gets what it gets from the Orthanc behind ADIT directly: the same instances and
byte-identical pixel data.

Streaming: the first instance reaches the client while the PACS still sends, and a PACS that
fails after the first instance gives a body ending in an error part. Both need a PACS a real
Orthanc cannot be made into (slow, failing on purpose): a pynetdicom SCP of the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt

from adit.core.dicom.multipart import boundary_of, iter_parts
from adit.core.models import DicomServer
from adit.core.tests.asgi_server import AsgiServer
from adit.core.tests.factories import grant, server_for
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

from .conftest import adit_client, api_root, orthanc_client

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def adit_http(django_db_setup, django_db_blocker, receiver) -> Iterator[AsgiServer]:
    """ADIT served by daphne, its C-MOVEs received by the test's receiver."""
    host, port = receiver.channel_address
    server = AsgiServer(env={"FILE_CHANNEL_HOST": host, "FILE_CHANNEL_PORT": str(port)})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["c-get", "c-move", "dicomweb"])
def source(request, api_user, orthanc1) -> DicomServer:
    """ORTHANC1 behind ADIT, fetched from by C-GET, by C-MOVE or by WADO-RS."""
    kind = request.param
    ae_title = "ORTHANC1WEB" if kind == "dicomweb" else orthanc1.ae_title
    server = server_for(orthanc1, name=f"PACS ({kind})", kind=kind, ae_title=ae_title)
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    return server


def by_uid(datasets) -> dict[str, Dataset]:
    return {str(dataset.SOPInstanceUID): dataset for dataset in datasets}


def assert_same_instances(through_adit, from_orthanc) -> None:
    ours, theirs = by_uid(through_adit), by_uid(from_orthanc)
    assert set(ours) == set(theirs)
    for uid, instance in ours.items():
        original = theirs[uid]
        assert instance.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert instance.get("PixelData") == original.get("PixelData")
        assert instance.PatientID == original.PatientID


def assert_same_metadata(through_adit: list[dict], from_orthanc: list[dict]) -> None:
    ours = {item["00080018"]["Value"][0]: item for item in through_adit}
    theirs = {item["00080018"]["Value"][0]: item for item in from_orthanc}
    assert set(ours) == set(theirs)
    for uid, item in ours.items():
        original = theirs[uid]
        assert "7FE00010" not in item  # no bulk data
        for tag in ("00100010", "00100020", "0020000D", "0020000E", "00080016", "00200013"):
            assert item.get(tag) == original.get(tag), tag


@pytest.mark.parametrize("prefixed", [False, True], ids=["root", "prefixed"])
def test_dicomweb_client_gets_what_orthanc_gives(
    adit_http, api_user, source, orthanc1, orthanc1_studies, prefixed
):
    adit = adit_client(adit_http.url, source, api_user, prefixed=prefixed)
    orthanc = orthanc_client(orthanc1)
    study = orthanc1_studies[0]
    study_uid = study.study_instance_uid
    series_uid = study.series[0].series_instance_uid
    sop_uid = study.series[0].sop_instance_uids[2]

    assert_same_instances(adit.retrieve_study(study_uid), orthanc.retrieve_study(study_uid))
    assert_same_instances(
        adit.retrieve_series(study_uid, series_uid), orthanc.retrieve_series(study_uid, series_uid)
    )
    assert_same_instances(
        [adit.retrieve_instance(study_uid, series_uid, sop_uid)],
        [orthanc.retrieve_instance(study_uid, series_uid, sop_uid)],
    )
    assert_same_metadata(
        adit.retrieve_study_metadata(study_uid), orthanc.retrieve_study_metadata(study_uid)
    )
    assert_same_metadata(
        adit.retrieve_series_metadata(study_uid, series_uid),
        orthanc.retrieve_series_metadata(study_uid, series_uid),
    )
    assert_same_metadata(
        [adit.retrieve_instance_metadata(study_uid, series_uid, sop_uid)],
        [orthanc.retrieve_instance_metadata(study_uid, series_uid, sop_uid)],
    )


def test_the_stored_syntax_when_the_client_accepts_any(adit_http, api_user, source, orthanc1):
    adit = adit_client(adit_http.url, source, api_user, prefixed=False)
    orthanc = orthanc_client(orthanc1)
    study_uid = orthanc1.list_study_uids()[0]
    any_syntax = (("application/dicom", "*"),)

    assert_same_instances(
        adit.retrieve_study(study_uid, media_types=any_syntax),
        orthanc.retrieve_study(study_uid, media_types=any_syntax),
    )


# -- a PACS that sends slowly, or fails after the first instance ----------------------------

PAUSE = 2.0  # seconds between two instances of the slow study


@dataclass(frozen=True)
class FakeStudy:
    uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    fails_after: int | None = None  # instances sent before the C-GET fails


SLOW = FakeStudy(generate_uid(), generate_uid(), tuple(generate_uid() for _ in range(4)))
BROKEN = FakeStudy(generate_uid(), generate_uid(), tuple(generate_uid() for _ in range(3)), 1)
FAKE_STUDIES = {study.uid: study for study in (SLOW, BROKEN)}


def _instance(study: FakeStudy, number: int) -> Dataset:
    return fake_ct_instance(
        study.uid,
        study.series_uid,
        number + 1,
        sop_uid=study.sop_uids[number],
        pixel_bytes=64 * 64 * 2,
    )


def _answer_find(event):
    level = str(event.identifier.get("QueryRetrieveLevel", ""))
    study = FAKE_STUDIES.get(str(event.identifier.get("StudyInstanceUID", "")))
    if study is None:
        return
    answer = Dataset()
    answer.QueryRetrieveLevel = level
    answer.PatientID = "FAKE1"
    answer.StudyInstanceUID = study.uid
    if level == "STUDY":
        answer.ModalitiesInStudy = "CT"
        answer.SOPClassesInStudy = CTImageStorage
        answer.NumberOfStudyRelatedInstances = len(study.sop_uids)
    elif level == "SERIES":
        answer.SeriesInstanceUID = study.series_uid
        answer.Modality = "CT"
        answer.NumberOfSeriesRelatedInstances = len(study.sop_uids)
    yield 0xFF00, answer


def _answer_get(event):
    study = FAKE_STUDIES[str(event.identifier.StudyInstanceUID)]
    yield len(study.sop_uids)
    for number in range(len(study.sop_uids)):
        if number == study.fails_after:
            yield 0xC001, None  # "unable to process": the PACS gives up
            return
        if number:
            time.sleep(PAUSE)
        yield 0xFF00, _instance(study, number)


@pytest.fixture
def fake_pacs(api_user) -> Iterator[DicomServer]:
    with FakePacs("FAKEPACS", find=_answer_find, get=_answer_get) as pacs:
        row = pacs.server("Fake PACS", study_root_find_support=True, study_root_get_support=True)
        grant(row, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
        yield row


def _parts_as_they_arrive(response: requests.Response):
    """(seconds since the request, part) for every part, as soon as it is complete."""
    started = time.monotonic()
    chunks = response.iter_content(chunk_size=None)
    for part in iter_parts(chunks, boundary_of(response.headers["Content-Type"])):
        yield time.monotonic() - started, part


def test_the_first_instance_arrives_while_the_pacs_still_sends(adit_http, api_user, fake_pacs):
    response = requests.get(
        f"{api_root(adit_http.url, fake_pacs)}/studies/{SLOW.uid}",
        headers=api_user.headers,
        stream=True,
        timeout=60,
    )
    assert response.status_code == 200, response.text

    arrivals = list(_parts_as_they_arrive(response))

    assert [part.content_type for _, part in arrivals] == [
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    ] * len(SLOW.sop_uids)
    times = [seconds for seconds, _ in arrivals]
    # The PACS pauses before each instance after the first (pynetdicom sends each sub-operation
    # once it has the next one: the last two come together): the first is with the client
    # while it still holds back the others.
    assert times[0] < times[-1] - 1.5 * PAUSE
    assert "Traceback" not in adit_http.log()


def test_a_pacs_failing_after_the_first_instance_gives_an_error_part(
    adit_http, api_user, fake_pacs
):
    response = requests.get(
        f"{api_root(adit_http.url, fake_pacs)}/studies/{BROKEN.uid}",
        headers=api_user.headers,
        stream=True,
        timeout=60,
    )
    assert response.status_code == 200, response.text

    parts = [part for _, part in _parts_as_they_arrive(response)]  # to the closing boundary

    first, last = parts
    assert first.content_type.startswith("application/dicom;")
    assert last.content_type == "text/plain; charset=utf-8"
    assert last.body.startswith(b"Error: C-GET on Fake PACS failed")
    assert b"Only 1 of the 3 instance(s)" in last.body
    assert "WADO-RS of study" in adit_http.log()


def test_a_pacs_failing_mid_metadata_leaves_no_valid_json(adit_http, api_user, fake_pacs):
    response = requests.get(
        f"{api_root(adit_http.url, fake_pacs)}/studies/{BROKEN.uid}/metadata",
        headers=api_user.headers,
        timeout=60,
    )

    assert response.status_code == 200
    assert response.text.startswith('[{"')
    assert "\nError: C-GET on Fake PACS failed" in response.text
    with pytest.raises(ValueError):
        response.json()


# -- a client that leaves before the first instance -----------------------------------------

FIRST_DELAY = 2.0  # seconds before the PACS sends the first instance of the late study
LATE = FakeStudy(generate_uid(), generate_uid(), tuple(generate_uid() for _ in range(30)))


def test_a_client_leaving_before_the_first_instance_ends_the_fetch(adit_http, api_user):
    """The view still waits for the PACS when the client gives up; the fetch must end once
    the view returns, not keep the PACS's association (and instances in memory) forever."""
    FAKE_STUDIES[LATE.uid] = LATE
    sent: list[int] = []
    get_associations = []
    closed = threading.Event()

    def answer_get_late(event):
        if str(event.identifier.StudyInstanceUID) != LATE.uid:
            yield from _answer_get(event)
            return
        get_associations.append(event.assoc)
        yield len(LATE.sop_uids)
        time.sleep(FIRST_DELAY)
        for number in range(len(LATE.sop_uids)):
            sent.append(number)
            yield 0xFF00, _instance(LATE, number)
            time.sleep(0.05)

    def on_close(event):
        if event.assoc in get_associations:
            closed.set()

    handlers = [(evt.EVT_CONN_CLOSE, on_close)]
    with FakePacs(
        "LATEPACS", find=_answer_find, get=answer_get_late, more_handlers=handlers
    ) as pacs:
        row = pacs.server("Late PACS", study_root_find_support=True, study_root_get_support=True)
        grant(row, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            requests.get(
                f"{api_root(adit_http.url, row)}/studies/{LATE.uid}",
                headers=api_user.headers,
                timeout=(5, FIRST_DELAY / 4),  # gives up long before the first instance
            )

        # The C-GET's association ends soon after the first instance reached the view, not
        # after the PACS's own timeout (pynetdicom's 30 s) or never.
        assert closed.wait(FIRST_DELAY + 8), (
            f"the C-GET still runs {time.monotonic() - started:.0f} s after the request, "
            f"{len(sent)} of {len(LATE.sop_uids)} instances sent"
        )
        assert len(sent) < len(LATE.sop_uids)
    assert "Traceback" not in adit_http.log()
