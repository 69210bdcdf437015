"""Direct study downloads from the real ``orthanc1``: what the archive holds, who may download,
and how failures before and after the first byte end."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.urls import reverse
from pydicom import dcmread

from adit.core.dicom.instance_stream import InstanceStream
from adit.core.dicom.orthanc import free_ports
from adit.core.dicom.synthetic import StudySummary
from adit.core.models import DicomServer
from adit.core.tests.factories import grant
from adit.selective_transfer import download
from adit.selective_transfer.download import DownloadForm

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PSEUDONYM = "SUBJ-007"


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


def _url(server: DicomServer, study: StudySummary, study_uid: str = "", **params) -> str:
    query = {
        "patient_id": study.patient_id,
        "study_date": study.study_date,
        "study_time": study.study_time,
        "modalities": ", ".join(study.modalities),
        "pseudonym": "",
        **params,
    }
    path = reverse(
        "selective_transfer:download_study", args=[server.pk, study_uid or study.study_instance_uid]
    )
    return f"{path}?{urlencode(query)}"


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
    response = downloader.get(_url(source, study))

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

    response = client.get(_url(source, study, pseudonym=PSEUDONYM))

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

    response = client.get(_url(source, study, pseudonym=PSEUDONYM))

    assert response.status_code == 403


def test_download_without_pseudonym_needs_the_unpseudonymized_permission(
    client, member, source, study
):
    _allow(member, "can_download_study")
    client.force_login(member)

    response = client.get(_url(source, study))

    assert response.status_code == 403
    assert "pseudonym is required" in response.content.decode()


def test_download_from_a_server_without_source_access_is_not_found(downloader, orthanc1, study):
    server = _server(orthanc1)  # no access granted to the member's group

    response = downloader.get(_url(server, study))

    assert response.status_code == 404


def test_malformed_study_uid_is_rejected(downloader, source, study):
    response = downloader.get(_url(source, study, study_uid="1.2.abc"))

    assert response.status_code == 400
    assert "digits and dots" in response.content.decode()


@pytest.mark.parametrize("pseudonym", ["", PSEUDONYM], ids=["fetch", "series-query"])
def test_unknown_study_is_a_bad_gateway_with_a_message(downloader, source, study, pseudonym):
    response = downloader.get(
        _url(source, study, study_uid="1.2.3.4.5.6.7.8.9", pseudonym=pseudonym)
    )

    assert response.status_code == 502
    assert not response.streaming
    message = response.content.decode()
    assert "No study found" in message
    assert "1.2.3.4.5.6.7.8.9" in message


def test_unreachable_server_is_a_bad_gateway(downloader, member, study):
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

    response = downloader.get(_url(server, study))

    assert response.status_code == 502
    assert "GONE" in response.content.decode()


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

    response = downloader.get(_url(source, study))

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

    response = downloader.get(_url(source, study))
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

    response = downloader.get(_url(source, study))
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
        response = await async_client.get(_url(source, study))
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


def test_form_accepts_modalities_as_pacs_join_them():
    form = DownloadForm(
        {"study_uid": "1.2.3", "modalities": "CT\\SR, PR", "study_date": "20240101"}
    )

    assert form.is_valid(), form.errors
    assert form.cleaned_data["modalities"] == ["CT", "SR", "PR"]


@pytest.mark.parametrize(
    "field, value",
    [("study_date", "2024-01-01"), ("study_time", "12:00"), ("modalities", "CT;rm"),
     ("patient_id", "x" * 65), ("pseudonym", "a\\b")],
)  # fmt: skip
def test_form_rejects_malformed_parameters(field, value):
    form = DownloadForm({"study_uid": "1.2.3", field: value})

    assert not form.is_valid()
    assert field in form.errors


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
