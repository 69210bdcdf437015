"""Direct study downloads from the real ``orthanc1``: what the archive holds, who may download,
and how failures before and after the first byte end."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.urls import reverse_lazy
from pydicom import dcmread

from adit.core.demo.orthanc import free_ports
from adit.core.demo.synthetic import StudySummary
from adit.core.dicom.instance_stream import InstanceStream
from adit.core.models import DicomServer
from adit.core.tests.factories import grant, server_for
from adit.selective_transfer import download
from adit.selective_transfer.download import DownloadForm

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PSEUDONYM = "SUBJ-007"
URL = reverse_lazy("selective_transfer:download_study")


def _server(orthanc) -> DicomServer:
    server, _ = DicomServer.objects.update_or_create(
        ae_title=orthanc.ae_title,
        defaults={
            "name": orthanc.ae_title,
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "study_root_find_support": True,
            "study_root_get_support": True,
        },
    )
    return server


def _allow(user, *codenames: str) -> None:
    for codename in codenames:
        user.active_group.permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="selective_transfer")
        )


@pytest.fixture
def source(orthanc1, member) -> DicomServer:
    server = _server(orthanc1)
    grant(server, member.active_group, source=True)
    return server


@pytest.fixture
def study(orthanc1_studies: list[StudySummary]) -> StudySummary:
    """A study with CT, SR and PR series, so exclusion has something to leave out."""
    return next(item for item in orthanc1_studies if {"SR", "PR"} <= set(item.modalities))


@pytest.fixture
def downloader(client, member):
    """The member logged in, allowed to download, also without a pseudonym."""
    _allow(member, "can_download_study", "can_transfer_unpseudonymized")
    client.force_login(member)
    return client


def _post(
    client, server: DicomServer, study: StudySummary, study_uid: str = "", pseudonym: str = ""
):
    """What the download button of the study's results row sends."""
    row = {
        "source": server.pk,
        "patient_id": study.patient_id,
        "study_uid": study_uid or study.study_instance_uid,
    }
    return client.post(URL, {"study": json.dumps(row), "pseudonym": pseudonym})


def _archive(response) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    return archive


def _expected_names(study: StudySummary, patient: str, modalities: str, excluded=()) -> set[str]:
    study_folder = f"{study.study_date}-{study.study_time}-{modalities}"
    return {
        f"{patient}/{study_folder}/{series.series_number}-{series.series_description}/{uid}.dcm"
        for series in study.series
        if series.modality not in excluded
        for uid in series.sop_instance_uids
    }


def test_unpseudonymized_download_holds_the_study_at_the_documented_paths(
    downloader, source, study
):
    response = _post(downloader, source, study)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == (
        f'attachment; filename="study_{study.patient_id}_{study.study_date}.zip"'
    )
    archive = _archive(response)
    names = archive.namelist()
    assert len(names) == len(set(names))
    assert set(names) == _expected_names(study, study.patient_id, "CT,PR,SR")
    for name in names:
        dataset = dcmread(io.BytesIO(archive.read(name)))
        assert dataset.PatientID == study.patient_id
        assert f"{dataset.SOPInstanceUID}.dcm" == name.rsplit("/", 1)[1]
        assert dataset.file_meta.TransferSyntaxUID


def test_pseudonymized_download_leaves_out_excluded_modalities(
    client, member, source, study, settings
):
    settings.EXCLUDE_MODALITIES = ["SR", "PR"]
    _allow(member, "can_download_study")  # a pseudonym needs no further permission
    client.force_login(member)

    response = _post(client, source, study, pseudonym=PSEUDONYM)

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="study_{PSEUDONYM}_{study.study_date}.zip"'
    )
    archive = _archive(response)
    names = archive.namelist()
    kept = [series for series in study.series if series.modality not in ("SR", "PR")]
    assert len(names) == sum(series.instance_count for series in kept)
    original_uids = {uid for series in study.series for uid in series.sop_instance_uids}
    study_uids = set()
    for name in names:
        assert name.split("/")[:2] == [PSEUDONYM, f"{study.study_date}-{study.study_time}-CT"]
        assert study.patient_id not in name
        dataset = dcmread(io.BytesIO(archive.read(name)))
        assert dataset.PatientID == PSEUDONYM
        assert dataset.Modality == "CT"
        assert str(dataset.SOPInstanceUID) not in original_uids
        assert f"{dataset.SOPInstanceUID}.dcm" == name.rsplit("/", 1)[1]
        study_uids.add(str(dataset.StudyInstanceUID))
    # One secret per download: the study keeps one (replaced) UID throughout the archive.
    assert len(study_uids) == 1
    assert study.study_instance_uid not in study_uids


def test_download_needs_the_download_permission(client, member, source, study):
    _allow(member, "can_transfer_unpseudonymized")
    client.force_login(member)

    response = _post(client, source, study, pseudonym=PSEUDONYM)

    assert response.status_code == 403


def test_download_without_pseudonym_needs_the_unpseudonymized_permission(
    client, member, source, study
):
    _allow(member, "can_download_study")
    client.force_login(member)

    response = _post(client, source, study)

    assert response.status_code == 403
    assert "pseudonym is required" in response.content.decode()


def test_download_from_a_server_without_source_access_is_not_found(downloader, orthanc1, study):
    server = _server(orthanc1)  # no access granted to the member's group

    response = _post(downloader, server, study)

    assert response.status_code == 404


def test_malformed_study_uid_is_rejected(downloader, source, study):
    response = _post(downloader, source, study, study_uid="1.2.abc")

    assert response.status_code == 400
    assert "digits and dots" in response.content.decode()


@pytest.mark.parametrize("pseudonym", ["", PSEUDONYM], ids=["unpseudonymized", "pseudonymized"])
def test_unknown_study_is_not_found_with_a_message(downloader, source, study, pseudonym, caplog):
    response = _post(downloader, source, study, "1.2.3.4.5.6.7.8.9", pseudonym=pseudonym)

    assert response.status_code == 404
    assert not response.streaming
    message = response.content.decode()
    assert "No study found" in message
    assert "1.2.3.4.5.6.7.8.9" in message
    assert 'data-testid="download-refused"' in message  # an ADIT page, not bare text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_unreachable_server_is_a_bad_gateway(downloader, member, study, caplog):
    (closed_port,) = free_ports(1)
    server = DicomServer.objects.create(
        name="GONE",
        ae_title="GONE",
        host="127.0.0.1",
        port=closed_port,
        study_root_find_support=True,
        study_root_get_support=True,
    )
    grant(server, member.active_group, source=True)

    response = _post(downloader, server, study)

    assert response.status_code == 502
    assert "GONE" in response.content.decode()
    # The PACS failed, not ADIT: a warning, not the error Django logs for a 5xx.
    (logged,) = [record for record in caplog.records if record.name == "django.request"]
    assert logged.levelno == logging.WARNING


def test_error_after_streaming_started_ends_in_error_entry(downloader, source, study, monkeypatch):
    # A real PACS cannot be made to fail at exactly the third instance; encoding can.
    encode = download.encode_instance
    calls = []

    def fail_on_third(dataset):
        calls.append(dataset)
        if len(calls) == 3:
            raise ValueError("disk on fire")
        return encode(dataset)

    monkeypatch.setattr(download, "encode_instance", fail_on_third)

    response = _post(downloader, source, study)

    assert response.status_code == 200
    archive = _archive(response)  # a complete archive: central directory included
    names = archive.namelist()
    assert len(names) == 3
    assert names[-1] == download.ERROR_ENTRY
    assert archive.read(download.ERROR_ENTRY).decode().strip() == (
        "Error during study download: disk on fire"
    )
    assert all(name.endswith(".dcm") for name in names[:2])


def test_the_archive_is_streamed_while_the_study_is_fetched(downloader, source, study, monkeypatch):
    monkeypatch.setattr(download, "QUEUE_SIZE", 1)
    fetched = _count_fetched(monkeypatch)
    total = sum(series.instance_count for series in study.series)

    response = _post(downloader, source, study)
    chunks = iter(response.streaming_content)
    first = next(chunks)

    assert first.startswith(b"PK\x03\x04")  # a local file header: the first entry itself
    # One instance was taken, one waits in the queue, one may be blocked handing over.
    assert len(fetched) <= 3 < total
    rest = list(chunks)
    assert len(rest) >= total  # a chunk per further entry, then the central directory
    archive = zipfile.ZipFile(io.BytesIO(first + b"".join(rest)))
    assert len(archive.namelist()) == total


def test_client_going_away_stops_the_fetch(downloader, source, study, monkeypatch):
    monkeypatch.setattr(download, "QUEUE_SIZE", 1)
    fetched = _count_fetched(monkeypatch)
    fetchers = _record_fetchers(monkeypatch)
    total = sum(series.instance_count for series in study.series)

    response = _post(downloader, source, study)
    next(iter(response.streaming_content))
    response.close()  # what the server does when the client disconnects

    (fetcher,) = fetchers
    fetcher.thread.join(timeout=10)
    assert not fetcher.thread.is_alive()
    assert len(fetched) < total


def test_asgi_requests_get_an_asynchronous_stream(async_client, member, source, study, monkeypatch):
    _allow(member, "can_download_study", "can_transfer_unpseudonymized")
    async_client.force_login(member)
    fetchers = _record_fetchers(monkeypatch)

    async def get():
        response = await _post(async_client, source, study)
        chunks = [chunk async for chunk in response.streaming_content]
        return response, chunks

    # Thread-sensitive code (the view, the ORM) runs on this thread, in the test transaction.
    response, chunks = async_to_sync(get)()

    assert response.status_code == 200
    assert response.is_async
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert set(archive.namelist()) == _expected_names(study, study.patient_id, "CT,PR,SR")
    assert len(chunks) > 1
    assert fetchers[0].stopped  # ending the stream let go of the fetch


@pytest.mark.parametrize(
    "field, value",
    [("study_uid", "1.2.3\n"), ("study_uid", "1.2.3 "), ("study_uid", "1" * 65),
     ("patient_id", "x" * 65), ("patient_id", "P\x85Q"), ("source", "one"), ("source", "0"),
     ("pseudonym", "a\\b"), ("pseudonym", "SUBJ*"), ("pseudonym", "SUBJ?"),
     ("pseudonym", "SUBJ\n"), ("pseudonym", " SUBJ")],
)  # fmt: skip
def test_form_rejects_malformed_fields(field, value):
    form = DownloadForm({"source": "1", "study_uid": "1.2.3", field: value})

    assert not form.is_valid()
    assert field in form.errors


@pytest.mark.parametrize(
    "study",
    ["", "not json", "[1, 2]", '"1.2.3"', "null", '{"source": true, "study_uid": false}',
     '{"source": [1], "study_uid": {"uid": "1.2.3"}}'],
)  # fmt: skip
def test_a_study_field_that_is_no_row_names_what_is_missing(downloader, study):
    response = downloader.post(URL, {"study": study, "pseudonym": ""})

    assert response.status_code == 400
    page = response.content.decode()
    assert "The download cannot start" in page
    assert "DICOM server:</strong> This field is required." in page
    assert "Study Instance UID:</strong>" in page


def test_a_get_is_not_allowed_and_says_where_downloads_start(downloader, source, study):
    response = downloader.get(URL, {"study": "{}"})

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "download button of a study in the search results" in response.content.decode()


def test_the_refusal_is_an_adit_page_saying_what_is_missing(client, member, source, study):
    _allow(member, "can_download_study")
    client.force_login(member)

    response = _post(client, source, study)

    page = response.content.decode()
    assert response["Content-Type"].startswith("text/html")
    assert 'data-testid="user-menu"' in page  # the app around it, not a bare text
    assert "Type a pseudonym in the Transfer part of the page" in page


def test_neither_patient_id_nor_pseudonym_is_in_the_url(downloader, source, study):
    response = _post(downloader, source, study, pseudonym=PSEUDONYM)

    assert response.status_code == 200
    assert response.request["PATH_INFO"] == str(URL)
    assert not response.request.get("QUERY_STRING")


def test_attachment_names_outside_ascii_are_encoded():
    header = download._attachment("study_Müller_20240101.zip")

    assert header.startswith('attachment; filename="study_M_ller_20240101.zip"')
    assert "filename*=UTF-8''study_M%C3%BCller_20240101.zip" in header


def _count_fetched(monkeypatch) -> list[object]:
    """Records every instance the fetch thread hands over (or tries to)."""
    handed_over: list[object] = []
    deliver = InstanceStream._deliver

    def counting_deliver(self, dataset):
        handed_over.append(dataset)
        deliver(self, dataset)

    monkeypatch.setattr(InstanceStream, "_deliver", counting_deliver)
    return handed_over


def _record_fetchers(monkeypatch) -> list[InstanceStream]:
    fetchers: list[InstanceStream] = []
    start = InstanceStream.start

    def recording_start(self):
        fetchers.append(self)
        start(self)

    monkeypatch.setattr(InstanceStream, "start", recording_start)
    return fetchers


@pytest.mark.parametrize("kind", ["dicomweb", "c-get", "c-move"])
def test_a_source_killed_mid_download_ends_the_archive_with_the_missing_count(
    kind, downloader, member, fragile_pacs, fragile_study, receiving
):
    """The user gets a readable archive that says how much is missing, never a silently short
    one; once the PACS is back, the same download is complete."""
    server = server_for(fragile_pacs, kind=kind)
    grant(server, member.active_group, source=True)
    total = fragile_study.instance_count

    response = _post(downloader, server, fragile_study)
    assert response.status_code == 200
    received = bytearray()
    chunks = iter(response.streaming_content)
    try:
        for number, chunk in enumerate(chunks):  # one chunk per entry
            received += chunk
            if number == total // 3:
                fragile_pacs.kill()
                break
        for chunk in chunks:
            received += chunk
    finally:
        fragile_pacs.start()

    archive = zipfile.ZipFile(io.BytesIO(bytes(received)))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[-1] == download.ERROR_ENTRY
    instances = len(names) - 1
    assert instances < total
    error = archive.read(download.ERROR_ENTRY).decode()
    assert f"nly {instances} of the {total} instance(s) it holds arrived" in error
    assert f"{total - instances} missing" in error

    complete = _archive(_post(downloader, server, fragile_study))
    assert download.ERROR_ENTRY not in complete.namelist()
    assert len(complete.namelist()) == total
