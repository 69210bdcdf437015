"""STOW-RS through ADIT into a real Orthanc, reached over DIMSE and over DICOMweb: what ends up
in the PACS, the store response a client gets (PS3.18 10.5.3 and Annex I), and the status of
each kind of failure. Requests go through Django's test client and, where the HTTP transport
matters (dicomweb-client, a chunked body), through daphne."""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.uid import MRImageStorage
from pynetdicom import evt

from adit.core.demo.synthetic import generate_ct_series
from adit.core.dicom.dimse import SOP_CLASS_NOT_SUPPORTED
from adit.core.dicom.files import encode_instance
from adit.core.models import DicomServer, Project
from adit.core.tests.factories import grant, server_for, unreachable_server
from adit.core.tests.fake_pacs import FakePacs
from adit.dicom_web import stow
from adit.dicom_web.stow import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, STUDY_MISMATCH
from adit.token_authentication.models import Token

from .conftest import ApiUser, adit_client, api_root

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

BOUNDARY = "adit-stow-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
_seeds = itertools.count(1000)


def ct_series(count: int) -> list[Dataset]:
    """A CT series of ``count`` 8x8 slices, with UIDs no other call gives."""
    return list(generate_ct_series(count, rows=8, columns=8, seed=next(_seeds)))


def part(data: bytes, content_type: str = "application/dicom") -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"


def body(parts: Iterable[bytes]) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def instance_parts(datasets: Iterable[Dataset]) -> list[bytes]:
    return [part(encode_instance(dataset)) for dataset in datasets]


def uids(datasets: Iterable[Dataset]) -> set[str]:
    return {str(dataset.SOPInstanceUID) for dataset in datasets}


@pytest.fixture(params=["dimse", "dicomweb"])
def destination(request, api_user: ApiUser, empty_orthanc2) -> DicomServer:
    """The empty ORTHANC2 behind ADIT as a destination, reached by C-STORE or by STOW-RS."""
    if request.param == "dimse":
        server = server_for(empty_orthanc2, name="Archive (DIMSE)")
    else:
        server = server_for(
            empty_orthanc2,
            name="Archive (DICOMweb)",
            kind="dicomweb",
            ae_title="ORTHANC2WEB",
            store_scp_support=False,
            dicomweb_stow_support=True,
        )
    grant(server, api_user.user.active_group, destination=True)  # pyright: ignore[reportAttributeAccessIssue]
    return server


def post(
    client,
    api_user: ApiUser,
    server: DicomServer,
    path: str,
    data: bytes,
    content_type: str = CONTENT_TYPE,
):
    return client.post(
        f"/api/dicom-web/{server.ae_title}/{path}",
        data=data,
        content_type=content_type,
        headers=api_user.headers,
    )


def store_response(response, expected_status: int) -> Dataset:
    assert response.status_code == expected_status, response.content
    assert response["Content-Type"] == "application/dicom+json"
    return Dataset.from_json(response.json())


def referenced(answer: Dataset) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence", [])}


def failed(answer: Dataset) -> dict[str, int]:
    return {
        str(item.get("ReferencedSOPInstanceUID", "")): int(item.FailureReason)
        for item in answer.get("FailedSOPSequence", [])
    }


def in_orthanc(orthanc, study_uid: str) -> set[str]:
    return set(orthanc.study_instance_uids(study_uid))


# -- storing ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["studies", "stowrs/studies"])
def test_instances_are_stored_and_the_response_references_each(
    client, api_user, destination, empty_orthanc2, layout
):
    datasets = ct_series(3)
    study_uid = str(datasets[0].StudyInstanceUID)

    answer = store_response(
        post(client, api_user, destination, layout, body(instance_parts(datasets))), 200
    )

    assert in_orthanc(empty_orthanc2, study_uid) == uids(datasets)
    assert referenced(answer) == uids(datasets)
    assert "FailedSOPSequence" not in answer
    root = f"http://testserver/api/dicom-web/{destination.ae_title}/studies"
    assert answer.RetrieveURL == f"{root}/{study_uid}"
    first = datasets[0]
    (item,) = [
        item
        for item in answer.ReferencedSOPSequence
        if item.ReferencedSOPInstanceUID == first.SOPInstanceUID
    ]
    assert item.ReferencedSOPClassUID == first.SOPClassUID
    assert item.RetrieveURL == (
        f"{root}/{study_uid}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    )


def test_large_parts_wait_on_disk_and_the_body_is_never_read_whole(
    client, api_user, destination, empty_orthanc2, settings, monkeypatch
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # Django refuses request.body above it
    monkeypatch.setattr(stow, "SPOOL_ABOVE", 1000)
    datasets = list(generate_ct_series(3, rows=32, columns=32, seed=next(_seeds)))
    without_preamble = BytesIO()
    dcmwrite(without_preamble, datasets[2])  # as dicomweb-client sends: no preamble, no DICM
    parts = [*instance_parts(datasets[:2]), part(without_preamble.getvalue())]
    assert all(len(data) > 2000 for data in parts)

    response = post(client, api_user, destination, "studies", body(parts))

    assert referenced(store_response(response, 200)) == uids(datasets)
    assert in_orthanc(empty_orthanc2, str(datasets[0].StudyInstanceUID)) == uids(datasets)


@pytest.mark.parametrize("layout", ["studies", "stowrs/studies"])
def test_a_store_into_a_study_takes_its_instances_and_fails_those_of_another(
    client, api_user, destination, empty_orthanc2, layout
):
    ours, foreign = ct_series(2), ct_series(1)
    study_uid = str(ours[0].StudyInstanceUID)

    response = post(
        client,
        api_user,
        destination,
        f"{layout}/{study_uid}",
        body(instance_parts([ours[0], *foreign, ours[1]])),
    )

    answer = store_response(response, 202)
    assert referenced(answer) == uids(ours)
    assert failed(answer) == {str(foreign[0].SOPInstanceUID): STUDY_MISMATCH}
    assert empty_orthanc2.list_study_uids() == [study_uid]
    assert "belongs to study" in response["Warning"]


def test_a_part_that_is_no_dicom_fails_alone(client, api_user, destination, empty_orthanc2):
    datasets = ct_series(2)
    parts = instance_parts(datasets)
    parts.insert(1, part(b"this is no DICOM file"))

    response = post(client, api_user, destination, "studies", body(parts))

    answer = store_response(response, 202)
    assert referenced(answer) == uids(datasets)
    assert failed(answer) == {"": CANNOT_UNDERSTAND}
    assert "part 2 is no readable DICOM file" in response["Warning"]
    assert in_orthanc(empty_orthanc2, str(datasets[0].StudyInstanceUID)) == uids(datasets)


def test_nothing_stored_is_a_409_listing_every_failure(
    client, api_user, destination, empty_orthanc2
):
    foreign = ct_series(1)
    parts = [part(b"garbage"), part(b"{}", "application/json"), *instance_parts(foreign)]

    response = post(client, api_user, destination, "studies/1.2.3", body(parts))

    answer = store_response(response, 409)
    assert "ReferencedSOPSequence" not in answer
    assert [int(item.FailureReason) for item in answer.FailedSOPSequence] == [
        CANNOT_UNDERSTAND,
        CANNOT_UNDERSTAND,
        STUDY_MISMATCH,
    ]
    assert empty_orthanc2.count_instances() == 0


# -- pseudonymization ---------------------------------------------------------------------


def test_instances_are_pseudonymized_before_they_are_stored(
    client, api_user, destination, empty_orthanc2
):
    datasets = ct_series(2)

    response = post(
        client,
        api_user,
        destination,
        "studies?pseudonym=SUBJ-1&trial_protocol_id=TRIAL-7",
        body(instance_parts(datasets)),
    )

    answer = store_response(response, 200)
    new_uids = referenced(answer)
    assert len(new_uids) == 2 and not new_uids & uids(datasets)
    (study_uid,) = empty_orthanc2.list_study_uids()
    assert study_uid != datasets[0].StudyInstanceUID
    assert in_orthanc(empty_orthanc2, study_uid) == new_uids
    files = empty_orthanc2.study_files(study_uid)
    assert len(files) == 2
    for data in files:
        stored = dcmread(BytesIO(data))
        assert (stored.PatientID, stored.PatientName) == ("SUBJ-1", "SUBJ-1")
        assert stored.ClinicalTrialProtocolID == "TRIAL-7"
        assert stored.PatientIdentityRemoved == "YES"
    # Each stored instance names the UIDs the client sent, so it can match them up.
    originals = {
        str(item.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].SOPInstanceUID)
        for item in answer.ReferencedSOPSequence
    }
    assert originals == uids(datasets)


def test_a_project_keys_the_uids_the_same_in_every_upload(
    client, api_user, destination, empty_orthanc2
):
    project = Project.objects.create(name="Lung study")
    project.groups.add(api_user.user.active_group)  # pyright: ignore[reportAttributeAccessIssue]
    datasets = ct_series(2)

    def stored_as(query: str) -> set[str]:
        data = body(instance_parts(datasets))
        return referenced(store_response(post(client, api_user, destination, query, data), 200))

    first = stored_as("studies?pseudonym=SUBJ-2&project=Lung%20study")
    again = stored_as("studies?pseudonym=SUBJ-2&project=Lung%20study")
    without_project = stored_as("studies?pseudonym=SUBJ-2")

    assert first == again
    assert not first & without_project


def test_one_pseudonym_stands_for_one_patient(client, api_user, destination, empty_orthanc2):
    project = Project.objects.create(name="Heart study")
    project.groups.add(api_user.user.active_group)  # pyright: ignore[reportAttributeAccessIssue]
    patient_a, patient_b = ct_series(1), ct_series(1)
    patient_b[0].PatientID = "SOMEONE-ELSE"

    for query in ("pseudonym=SUBJ-3", "pseudonym=SUBJ-3&project=Heart%20study"):
        empty_orthanc2.clear()
        response = post(
            client,
            api_user,
            destination,
            f"studies?{query}",
            body(instance_parts([*patient_a, *patient_b])),
        )

        answer = store_response(response, 202)
        assert len(referenced(answer)) == 1
        assert failed(answer) == {str(patient_b[0].SOPInstanceUID): 0x0110}
        assert "SUBJ-3" in response["Warning"]
        assert empty_orthanc2.count_instances() == 1


@pytest.mark.parametrize(
    "query, named",
    [
        ("pseudonym=A%5CB", "pseudonym"),
        ("pseudonym=%20A", "pseudonym"),
        (f"pseudonym=A&trial_protocol_id={'x' * 65}", "trial_protocol_id"),
        ("pseudonym=A&trial_protocol_name=%01", "trial_protocol_name"),
        ("pseudonym=A&project=Nobody%27s", "project"),
        ("pseudonim=A", "pseudonim"),
        ("project=P", "project"),
    ],
)
def test_a_pseudonymization_parameter_adit_cannot_use_is_a_400_naming_it(
    client, api_user, destination, empty_orthanc2, query, named
):
    Project.objects.create(name="Nobody's")  # of no group of the user

    response = post(
        client, api_user, destination, f"studies?{query}", body(instance_parts(ct_series(1)))
    )

    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"Invalid parameter {named}:")
    assert empty_orthanc2.count_instances() == 0


# -- malformed requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "application/json",
        f"multipart/form-data; boundary={BOUNDARY}",
        f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
    ],
)
def test_another_media_type_is_a_415(client, api_user, destination, content_type):
    data = body(instance_parts(ct_series(1)))

    response = post(client, api_user, destination, "studies", data, content_type=content_type)

    assert response.status_code == 415
    assert 'type="application/dicom"' in response.json()["detail"]


def test_a_request_without_boundary_is_a_400_naming_it(client, api_user, destination):
    data = body(instance_parts(ct_series(1)))
    content_type = 'multipart/related; type="application/dicom"'

    response = post(client, api_user, destination, "studies", data, content_type=content_type)

    assert response.status_code == 400
    assert "boundary" in response.json()["detail"]


def test_a_body_cut_short_or_without_instances_is_a_400(
    client, api_user, destination, empty_orthanc2
):
    whole = body(instance_parts(ct_series(2)))

    cut = post(client, api_user, destination, "studies", whole[: len(whole) // 3])
    empty = post(client, api_user, destination, "studies", body([]))
    bad_path = post(client, api_user, destination, "studies/1.2.x", whole)

    assert cut.status_code == 400 and "cut short" in cut.json()["detail"]
    assert empty.status_code == 400 and "no instance" in empty.json()["detail"]
    assert bad_path.status_code == 400 and "StudyInstanceUID" in bad_path.json()["detail"]
    assert empty_orthanc2.count_instances() == 0


def test_the_store_path_serves_no_get(client, api_user, destination):
    response = client.get(
        f"/api/dicom-web/{destination.ae_title}/stowrs/studies", headers=api_user.headers
    )

    assert response.status_code == 405


# -- who may store where, and a PACS that fails ---------------------------------------------


def test_storing_needs_the_store_permission(client, api_user, destination, empty_orthanc2):
    group = api_user.user.active_group  # pyright: ignore[reportAttributeAccessIssue]
    group.permissions.remove(*group.permissions.filter(codename="can_store"))
    user = type(api_user.user).objects.get(pk=api_user.user.pk)  # pyright: ignore[reportAttributeAccessIssue]
    _, token = Token.objects.create_token(user, "no store")

    response = post(
        client,
        ApiUser(user, token),
        destination,
        "studies",
        body(instance_parts(ct_series(1))),
    )

    assert response.status_code == 403
    assert "dicom_web.can_store" in response.json()["detail"]
    assert empty_orthanc2.count_instances() == 0


def test_a_server_the_group_may_only_search_is_no_destination(client, api_user, orthanc2):
    source = server_for(orthanc2, name="Only a source")
    grant(source, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]

    response = post(client, api_user, source, "studies", body(instance_parts(ct_series(1))))

    assert response.status_code == 404


def test_a_pacs_that_cannot_be_reached_is_a_503_with_retry_after(client, api_user):
    closed = unreachable_server()
    grant(closed, api_user.user.active_group, destination=True)  # pyright: ignore[reportAttributeAccessIssue]
    closed.store_scp_support = True
    closed.save()

    response = post(client, api_user, closed, "studies", body(instance_parts(ct_series(2))))

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert "connection refused" in response.json()["detail"]


def test_a_server_that_receives_nothing_is_a_502_saying_what_to_enable(client, api_user, orthanc2):
    server = server_for(orthanc2, name="Query only", store_scp_support=False)
    grant(server, api_user.user.active_group, destination=True)  # pyright: ignore[reportAttributeAccessIssue]

    response = post(client, api_user, server, "studies", body(instance_parts(ct_series(1))))

    assert response.status_code == 502
    assert "enable C-STORE or STOW-RS" in response.json()["detail"]


# -- over HTTP, as clients send ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("prefixed", [False, True])
def test_dicomweb_client_stores_through_adit(
    adit_http, api_user, destination, empty_orthanc2, prefixed
):
    client = adit_client(adit_http.url, destination, api_user, prefixed=prefixed)
    series, more = ct_series(2), ct_series(2)

    answer = client.store_instances(series)
    into_study = client.store_instances(more, study_instance_uid=str(more[0].StudyInstanceUID))

    assert referenced(answer) == uids(series)
    assert referenced(into_study) == uids(more)
    assert in_orthanc(empty_orthanc2, str(series[0].StudyInstanceUID)) == uids(series)
    assert in_orthanc(empty_orthanc2, str(more[0].StudyInstanceUID)) == uids(more)


@pytest.mark.django_db(transaction=True)
def test_200_instances_in_one_chunked_request(adit_http, api_user, destination, empty_orthanc2):
    datasets = ct_series(200)

    def chunks() -> Iterator[bytes]:  # a generator: requests sends it chunked
        for dataset in datasets:
            yield part(encode_instance(dataset))
        yield f"--{BOUNDARY}--\r\n".encode()

    response = requests.post(
        f"{api_root(adit_http.url, destination)}/studies",
        data=chunks(),
        headers={**api_user.headers, "Content-Type": CONTENT_TYPE},
        timeout=120,
    )

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200, response.text
    answer = Dataset.from_json(response.json())
    assert referenced(answer) == uids(datasets)
    assert in_orthanc(empty_orthanc2, str(datasets[0].StudyInstanceUID)) == uids(datasets)


class FakeArchive:
    """A C-STORE SCP for CT images only, which takes ``take`` instances and then answers
    "out of resources": a real Orthanc cannot be made to fail one C-STORE in the middle of an
    association, and takes every SOP class."""

    def __init__(self, take: int):
        self.take = take
        self.received: list[str] = []
        self.associations = 0

    def handle_accepted(self, event) -> None:
        self.associations += 1

    def handle_store(self, event) -> int:
        if len(self.received) >= self.take:
            return 0xA700
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000


@pytest.fixture
def fake_archive(api_user) -> Iterator[tuple[FakeArchive, DicomServer]]:
    archive = FakeArchive(take=2)
    with FakePacs(
        "FAKE",
        store=archive.handle_store,
        more_handlers=[(evt.EVT_ACCEPTED, archive.handle_accepted)],
    ) as pacs:
        server = pacs.server("Fake archive", store_scp_support=True)
        grant(server, api_user.user.active_group, destination=True)  # pyright: ignore[reportAttributeAccessIssue]
        yield archive, server


def test_a_store_that_stops_midway_names_what_was_stored_and_what_not(
    client, api_user, fake_archive
):
    archive, server = fake_archive
    datasets = ct_series(5)

    response = post(client, api_user, server, "studies", body(instance_parts(datasets)))

    answer = store_response(response, 202)
    assert referenced(answer) == set(archive.received) == uids(datasets[:2])
    # The instance it refused and the two ADIT had not sent yet.
    assert failed(answer) == {uid: OUT_OF_RESOURCES for uid in uids(datasets[2:])}
    assert "The store stopped" in response["Warning"]
    assert archive.associations == 1


def _files_gone_from_disk() -> int:
    """How many files this process holds open that have no name any more (temporary files)."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd).endswith(" (deleted)")
        except OSError:  # closed meanwhile (the directory's own descriptor, say)
            pass
    return count


def test_a_store_that_stops_midway_leaves_no_part_on_disk(
    client, api_user, fake_archive, monkeypatch
):
    archive, server = fake_archive
    monkeypatch.setattr(stow, "SPOOL_ABOVE", 1000)  # every part waits in a temporary file
    datasets = list(generate_ct_series(8, rows=32, columns=32, seed=next(_seeds)))
    gc.collect()
    before = _files_gone_from_disk()

    response = post(client, api_user, server, "studies", body(instance_parts(datasets)))

    answer = store_response(response, 202)
    assert referenced(answer) == uids(datasets[:2])
    assert failed(answer) == {uid: OUT_OF_RESOURCES for uid in uids(datasets[2:])}
    gc.collect()
    assert _files_gone_from_disk() == before


def test_a_store_that_fails_before_anything_was_stored_is_an_error(client, api_user, fake_archive):
    archive, server = fake_archive
    archive.take = 0

    response = post(client, api_user, server, "studies", body(instance_parts(ct_series(2))))

    assert response.status_code == 503
    assert "Retry-After" in response
    assert "C-STORE" in response.json()["detail"]


def test_an_instance_the_destination_does_not_take_fails_alone(client, api_user, fake_archive):
    archive, server = fake_archive
    archive.take = 10
    ct, mr = ct_series(2), ct_series(1)
    mr[0].SOPClassUID = mr[0].file_meta.MediaStorageSOPClassUID = MRImageStorage

    response = post(client, api_user, server, "studies", body(instance_parts([ct[0], *mr, ct[1]])))

    answer = store_response(response, 202)
    assert referenced(answer) == set(archive.received) == uids(ct)
    assert failed(answer) == {str(mr[0].SOPInstanceUID): SOP_CLASS_NOT_SUPPORTED}
    assert "does not accept" in response["Warning"]
