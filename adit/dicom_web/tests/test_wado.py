"""WADO-RS through ADIT against a real Orthanc, reached over DIMSE (C-GET) and over DICOMweb:
what a client gets for studies, series and instances and their metadata, pseudonymized or
not, and every error it can be told, before the first part and in the middle of the stream."""

from __future__ import annotations

import gzip
import io
import json
import struct

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian

from adit.accounts.tests.factories import GroupFactory, UserFactory
from adit.core.dicom.multipart import Part, boundary_of, iter_parts
from adit.core.models import Project
from adit.core.tests.factories import give_permissions, grant, server_for, unreachable_server
from adit.token_authentication.models import Token

from .conftest import ApiUser

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

CT_ONLY = ("CT", "MR")  # what a pseudonymized copy keeps of the sample studies (no SR, PR)


def get(client, api_user: ApiUser, server, path: str, accept: str | None = None, **params):
    headers = {"Authorization": f"Token {api_user.token}"}
    if accept is not None:
        headers["Accept"] = accept
    return client.get(f"/api/dicom-web/{server.ae_title}/{path}", params, headers=headers)


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def parts_of(response) -> list[Part]:
    assert response.status_code == 200, getattr(response, "content", b"")
    content_type = response["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    return list(iter_parts([body_of(response)], boundary_of(content_type)))


def instances_of(response) -> list[Dataset]:
    parts = parts_of(response)
    for part in parts:
        assert part.content_type.startswith("application/dicom; transfer-syntax=")
        assert part.headers["content-length"] == str(len(part.body))
    return [dcmread(io.BytesIO(part.body)) for part in parts]


def metadata_of(response) -> list[Dataset]:
    assert response.status_code == 200, getattr(response, "content", b"")
    assert response["Content-Type"] == "application/dicom+json"
    return [Dataset.from_json(item) for item in json.loads(body_of(response))]


def study_path(study) -> str:
    return f"studies/{study.study_instance_uid}"


def stored_files(orthanc, study_uid: str) -> dict[str, Dataset]:
    """SOPInstanceUID -> the instance as the PACS stores it."""
    files = [dcmread(io.BytesIO(data)) for data in orthanc.study_files(study_uid)]
    return {str(dataset.SOPInstanceUID): dataset for dataset in files}


@pytest.mark.parametrize("prefix", ["", "wadors/"])
def test_a_study_arrives_whole_with_its_pixel_data(
    client, api_user, pacs, orthanc1, orthanc1_studies, prefix
):
    study = orthanc1_studies[0]
    stored = stored_files(orthanc1, study.study_instance_uid)

    instances = instances_of(get(client, api_user, pacs, prefix + study_path(study)))

    assert {str(i.SOPInstanceUID) for i in instances} == set(stored)
    for instance in instances:
        original = stored[str(instance.SOPInstanceUID)]
        assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert instance.PatientID == original.PatientID
        if "PixelData" in original:
            assert instance.PixelData == original.PixelData


def test_a_series_and_an_instance(client, api_user, pacs, orthanc1, orthanc1_studies):
    study = orthanc1_studies[1]
    series = study.series[0]
    stored = stored_files(orthanc1, study.study_instance_uid)
    series_path = f"{study_path(study)}/series/{series.series_instance_uid}"

    in_series = instances_of(get(client, api_user, pacs, series_path))
    assert {str(i.SOPInstanceUID) for i in in_series} == set(series.sop_instance_uids)

    sop_uid = series.sop_instance_uids[-1]
    (instance,) = instances_of(get(client, api_user, pacs, f"{series_path}/instances/{sop_uid}"))
    assert instance.SOPInstanceUID == sop_uid
    assert instance.PixelData == stored[sop_uid].PixelData


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_metadata_without_bulk_data(client, api_user, pacs, orthanc1, orthanc1_studies, level):
    study = orthanc1_studies[2]
    series = study.series[0]
    path = study_path(study)
    expected = {uid for s in study.series for uid in s.sop_instance_uids}
    if level != "study":
        path += f"/series/{series.series_instance_uid}"
        expected = set(series.sop_instance_uids)
    if level == "instance":
        path += f"/instances/{series.sop_instance_uids[0]}"
        expected = {series.sop_instance_uids[0]}
    stored = stored_files(orthanc1, study.study_instance_uid)

    metadata = metadata_of(get(client, api_user, pacs, f"{path}/metadata"))

    assert {str(m.SOPInstanceUID) for m in metadata} == expected
    for item in metadata:
        original = stored[str(item.SOPInstanceUID)]
        assert "PixelData" not in item
        assert item.PatientName == original.PatientName
        assert item.SeriesInstanceUID == original.SeriesInstanceUID
        assert item.get("Rows") == original.get("Rows")


def test_transfer_syntaxes_as_stored_or_explicit_little_endian(client, api_user, empty_orthanc2):
    from adit.core.demo.sample_studies import syntax_study

    instances = syntax_study()
    empty_orthanc2.upload(instances)
    study_uid = str(instances[0].StudyInstanceUID)
    stored = stored_files(empty_orthanc2, study_uid)
    assert len({str(d.file_meta.TransferSyntaxUID) for d in stored.values()}) > 3
    for kind, ae_title in (("c-get", "ORTHANC2"), ("dicomweb", "ORTHANC2WEB")):
        server = server_for(empty_orthanc2, name=kind, kind=kind, ae_title=ae_title)
        grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
        path = f"studies/{study_uid}"

        any_syntax = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        response = get(client, api_user, server, path, accept=any_syntax)
        for part in parts_of(response):
            instance = dcmread(io.BytesIO(part.body))
            original = stored[str(instance.SOPInstanceUID)]
            syntax = str(original.file_meta.TransferSyntaxUID)
            assert part.content_type == f"application/dicom; transfer-syntax={syntax}"
            assert instance.PixelData == original.PixelData

        explicit = f"{any_syntax[:-1]}{ExplicitVRLittleEndian}"
        for accept in (None, "*/*", explicit):
            converted = instances_of(get(client, api_user, server, path, accept=accept))
            assert len(converted) == len(stored)
            for instance in converted:
                original = stored[str(instance.SOPInstanceUID)]
                assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
                assert (instance.pixel_array == original.pixel_array).all()


@pytest.mark.parametrize(
    "path, accept",
    [
        ("", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'),
        ("", "application/dicom+json"),
        ("", 'multipart/related; type="image/jpeg"'),
        ("/metadata", 'multipart/related; type="application/dicom"'),
    ],
)
def test_what_adit_cannot_send_is_a_406(client, api_user, pacs, orthanc1_studies, path, accept):
    response = get(client, api_user, pacs, study_path(orthanc1_studies[0]) + path, accept=accept)

    assert response.status_code == 406
    assert response.json()["detail"]


# -- pseudonymization -----------------------------------------------------------------------


def test_a_pseudonymized_study(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    originals = {uid for s in study.series for uid in s.sop_instance_uids}
    kept = [s for s in study.series if s.modality in CT_ONLY]

    instances = instances_of(
        get(client, api_user, pacs, study_path(study), pseudonym="SUBJ-1", trial_protocol_id="T1")
    )

    assert len(instances) == sum(s.instance_count for s in kept)
    assert {i.Modality for i in instances} == {"CT"}
    for instance in instances:
        assert instance.PatientID == "SUBJ-1"
        assert str(instance.PatientName) == "SUBJ-1"
        assert instance.ClinicalTrialProtocolID == "T1"
        assert instance.PatientIdentityRemoved == "YES"
        assert str(instance.SOPInstanceUID) not in originals
        assert instance.StudyInstanceUID != study.study_instance_uid
    assert len({i.StudyInstanceUID for i in instances}) == 1

    metadata = metadata_of(
        get(client, api_user, pacs, f"{study_path(study)}/metadata", pseudonym="SUBJ-1")
    )
    assert {m.PatientID for m in metadata} == {"SUBJ-1"}
    assert not {str(m.SOPInstanceUID) for m in metadata} & originals


def test_uids_are_stable_within_a_project_and_fresh_without(
    client, api_user, pacs, orthanc1_studies
):
    study = orthanc1_studies[3]
    series = study.series[0]
    path = f"{study_path(study)}/series/{series.series_instance_uid}/metadata"
    project = Project.objects.create(name="Lung study")
    project.groups.add(api_user.user.groups.last())  # pyright: ignore[reportAttributeAccessIssue]

    def uids(**params) -> set[str]:
        items = metadata_of(get(client, api_user, pacs, path, pseudonym="SUBJ-2", **params))
        return {str(item.SOPInstanceUID) for item in items}

    in_project = uids(project="Lung study")
    assert in_project == uids(project="Lung study")
    assert len(in_project) == series.instance_count
    alone = uids()
    assert alone != uids()
    assert not alone & in_project
    # The project now knows the patient by this pseudonym, and no other.
    response = get(client, api_user, pacs, path, pseudonym="SUBJ-3", project="Lung study")
    assert response.status_code == 409
    assert "SUBJ-2" in response.json()["detail"]


def test_a_read_only_token_may_not_record_pseudonyms_in_a_project(
    client, api_user, pacs, orthanc1_studies
):
    project = Project.objects.create(name="Lung study")
    project.groups.add(api_user.user.groups.last())  # pyright: ignore[reportAttributeAccessIssue]
    _, plain = Token.objects.create_token(api_user.user, "reader", read_only=True)
    reader = ApiUser(api_user.user, plain)
    path = f"{study_path(orthanc1_studies[0])}/metadata"

    response = get(client, reader, pacs, path, pseudonym="SUBJ-9", project="Lung study")

    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]
    assert not project.pseudonyms.exists()
    assert get(client, reader, pacs, path, pseudonym="SUBJ-9").status_code == 200


def test_trial_attributes_without_pseudonym(client, api_user, pacs, orthanc1_studies):
    series = orthanc1_studies[0].series[1]
    path = f"{study_path(orthanc1_studies[0])}/series/{series.series_instance_uid}"

    instances = instances_of(
        get(client, api_user, pacs, path, trial_protocol_id="LUNG-1", trial_protocol_name="Lung")
    )

    assert {(i.ClinicalTrialProtocolID, i.ClinicalTrialProtocolName) for i in instances} == {
        ("LUNG-1", "Lung")
    }
    assert {str(i.SOPInstanceUID) for i in instances} == set(series.sop_instance_uids)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"pseudonym": "A*"}, "pseudonym"),
        ({"pseudonym": "A?"}, "pseudonym"),
        ({"pseudonym": "A\\B"}, "pseudonym"),
        ({"pseudonym": "A\nB"}, "pseudonym"),
        ({"pseudonym": "X" * 65}, "pseudonym"),
        ({"pseudonym": ""}, "pseudonym"),
        ({"pseudonym": "A", "trial_protocol_id": "T" * 65}, "trial_protocol_id"),
        ({"pseudonym": "A", "trial_protocol_name": "a\\b"}, "trial_protocol_name"),
        ({"pseudonym": "A", "trial_protocol_name": "a\x01"}, "trial_protocol_name"),
        ({"pseudonym": "A", "project": "Nobody's"}, "project"),
        ({"project": "Lung study"}, "project"),
        ({"pseudonyme": "A"}, "pseudonyme"),
        ({"pseudonym": ["A", "B"]}, "pseudonym"),
    ],
)
def test_a_parameter_adit_cannot_use_is_a_400_naming_it(
    client, api_user, pacs, orthanc1_studies, params, named
):
    Project.objects.create(name="Lung study").groups.add(api_user.user.active_group)  # pyright: ignore[reportAttributeAccessIssue]

    response = get(client, api_user, pacs, study_path(orthanc1_studies[0]), **params)

    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"Invalid parameter {named}: ")


def test_a_project_of_another_group_is_refused(client, api_user, pacs, orthanc1_studies):
    Project.objects.create(name="Theirs").groups.add(GroupFactory(name="Others"))

    response = get(
        client, api_user, pacs, study_path(orthanc1_studies[0]), pseudonym="A", project="Theirs"
    )

    assert response.status_code == 400
    assert "project" in response.json()["detail"]


# -- permissions ----------------------------------------------------------------------------


def _user_with(name: str, *codenames: str) -> ApiUser:
    user = UserFactory(username=name, groups=[GroupFactory(name=f"Group of {name}")])
    give_permissions(user, "dicom_web", *codenames)
    _, token = Token.objects.create_token(user, "tests")
    return ApiUser(user, token)


def test_unpseudonymized_data_needs_its_own_permission(client, pacs, orthanc1_studies):
    bob = _user_with("bob", "can_retrieve")
    grant(pacs, bob.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    path = study_path(orthanc1_studies[0])

    for suffix in ("", "/metadata"):
        refused = get(client, bob, pacs, path + suffix)
        assert refused.status_code == 403
        assert "dicom_web.can_retrieve_unpseudonymized" in refused.json()["detail"]
        with_trial_only = get(client, bob, pacs, path + suffix, trial_protocol_id="T")
        assert with_trial_only.status_code == 403

    instances = instances_of(get(client, bob, pacs, path, pseudonym="SUBJ-9"))
    assert {i.PatientID for i in instances} == {"SUBJ-9"}


def test_retrieval_needs_the_retrieve_permission_and_the_server(client, pacs, orthanc1_studies):
    path = study_path(orthanc1_studies[0])
    anonymous = client.get(f"/api/dicom-web/{pacs.ae_title}/{path}")
    assert anonymous.status_code == 401

    bob = _user_with("bob", "can_query", "can_retrieve_unpseudonymized")
    grant(pacs, bob.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    response = get(client, bob, pacs, path)
    assert response.status_code == 403
    assert "dicom_web.can_retrieve" in response.json()["detail"]

    carol = _user_with("carol", "can_retrieve", "can_retrieve_unpseudonymized")  # no PACS
    assert get(client, carol, pacs, f"wadors/{path}").status_code == 404


# -- errors ---------------------------------------------------------------------------------


def test_what_the_pacs_does_not_hold_is_a_404(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    series = study.series[0]
    unknown = "1.2.3.4.5.6.7.8.9"
    for path in (
        f"studies/{unknown}",
        f"studies/{unknown}/metadata",
        f"{study_path(study)}/series/{unknown}",
        f"{study_path(study)}/series/{series.series_instance_uid}/instances/{unknown}",
        f"wadors/{study_path(study)}/series/{series.series_instance_uid}/instances/{unknown}/metadata",
    ):
        response = get(client, api_user, pacs, path)
        assert response.status_code == 404, path
        assert unknown in response.json()["detail"]


def test_a_path_uid_that_is_no_uid_is_a_400(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    response = get(client, api_user, pacs, f"{study_path(study)}/series/1.2.x")

    assert response.status_code == 400
    assert "SeriesInstanceUID" in response.json()["detail"]


def test_an_unreachable_pacs_is_a_503_with_retry_after(client, api_user, orthanc1_studies):
    server = unreachable_server()
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]

    response = get(client, api_user, server, study_path(orthanc1_studies[0]))

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"]


@pytest.mark.parametrize("kind", ["c-get", "dicomweb", "c-move"])
def test_a_pacs_lost_mid_study_ends_the_stream_with_an_error_part(
    kind, client, api_user, fragile_pacs, fragile_study, receiving
):
    server = server_for(fragile_pacs, kind=kind)
    grant(server, api_user.user.active_group, source=True)  # pyright: ignore[reportAttributeAccessIssue]
    total = fragile_study.instance_count

    response = get(client, api_user, server, f"studies/{fragile_study.study_instance_uid}")
    assert response.status_code == 200
    received = bytearray()
    chunks = iter(response.streaming_content)
    try:
        for number, chunk in enumerate(chunks):  # one chunk per instance
            received += chunk
            if number == total // 3:
                fragile_pacs.kill()
                break
        for chunk in chunks:
            received += chunk
    finally:
        fragile_pacs.start()

    parts = list(iter_parts([bytes(received)], boundary_of(response["Content-Type"])))
    *instances, last = parts
    assert total // 3 < len(instances) < total
    assert all(part.content_type.startswith("application/dicom;") for part in instances)
    assert last.content_type == "text/plain; charset=utf-8"
    error = last.body.decode()
    assert error.startswith("Error: ")
    assert "missing" in error


@pytest.mark.parametrize("layout", ["", "qidors/"])
def test_search_answers_say_where_to_retrieve_them(
    client, api_user, pacs, orthanc1_studies, layout
):
    study = orthanc1_studies[4]
    series = study.series[1]
    series_path = f"{study_path(study)}/series/{series.series_instance_uid}"
    # The retrieval in the layout of the search: upstream's prefixes, or the PS3.18 root.
    base = f"http://testserver/api/dicom-web/{pacs.ae_title}/{'wadors/' if layout else ''}"

    (found,) = search_answers(
        client, api_user, pacs, f"{layout}studies", StudyInstanceUID=study.study_instance_uid
    )
    assert found.RetrieveURL == f"{base}{study_path(study)}"
    in_series = search_answers(client, api_user, pacs, f"{layout}{series_path}/instances")
    assert {i.RetrieveURL for i in in_series} == {
        f"{base}{series_path}/instances/{uid}" for uid in series.sop_instance_uids
    }

    url = in_series[0].RetrieveURL.removeprefix("http://testserver")
    response = client.get(url, headers={"Authorization": f"Token {api_user.token}"})
    (instance,) = instances_of(response)
    assert instance.SOPInstanceUID == in_series[0].SOPInstanceUID


def search_answers(client, api_user, server, path: str, **params) -> list[Dataset]:
    response = get(client, api_user, server, path, **params)
    assert response.status_code == 200, response.content
    return [Dataset.from_json(item) for item in response.json()]


# -- NIfTI ----------------------------------------------------------------------------------


def nifti_files(response) -> list[tuple[str, bytes]]:
    """(file name, content) of every part of a NIfTI answer."""
    assert response.status_code == 200, getattr(response, "content", b"")
    content_type = response["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/octet-stream"; boundary=')
    files = []
    for part in iter_parts([body_of(response)], boundary_of(content_type)):
        assert part.content_type == "application/octet-stream"
        disposition = part.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="') and disposition.endswith('"')
        files.append((disposition.removeprefix('attachment; filename="')[:-1], part.body))
    return files


def nifti_dimensions(data: bytes) -> tuple[int, ...]:
    """dim[0..3] of a gzipped single-file NIfTI-1 image."""
    header = gzip.decompress(data)[:348]
    assert header[344:348] == b"n+1\x00"
    return struct.unpack("<8h", header[40:56])[:4]


def test_nifti_of_a_study_has_every_image_series(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    images = [s for s in study.series if s.modality == "CT"]

    files = nifti_files(get(client, api_user, pacs, f"wadors/{study_path(study)}/nifti"))

    names = [name for name, _ in files]
    assert len([n for n in names if n.endswith(".nii.gz")]) == len(images)
    assert len([n for n in names if n.endswith(".json")]) == len(images)
    # Each volume's sidecar comes right before its image.
    assert [n.rsplit(".", 1)[0] for n in names[0::2]] == [n.rsplit(".", 2)[0] for n in names[1::2]]
    volumes = sorted(nifti_dimensions(data)[3] for name, data in files if name.endswith(".nii.gz"))
    assert volumes == sorted(s.instance_count for s in images)
    for name, data in files:
        if name.endswith(".json"):
            sidecar = json.loads(data)
            assert sidecar["Modality"] == "CT"
            assert "PatientName" not in sidecar


def test_nifti_of_a_series_and_an_instance_pseudonymized(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[1]
    series = study.series[0]
    path = f"{study_path(study)}/series/{series.series_instance_uid}"

    files = nifti_files(get(client, api_user, pacs, f"{path}/nifti", pseudonym="SUBJ-5"))
    (image,) = [data for name, data in files if name.endswith(".nii.gz")]
    assert nifti_dimensions(image)[3] == series.instance_count

    sop_uid = series.sop_instance_uids[0]
    files = nifti_files(get(client, api_user, pacs, f"{path}/instances/{sop_uid}/nifti"))
    assert {name.rsplit(".", 1)[-1] for name, _ in files} == {"json", "gz"}


def test_nifti_of_a_series_without_images_is_a_404(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    (report,) = [s for s in study.series if s.modality == "SR"]

    response = get(
        client, api_user, pacs, f"{study_path(study)}/series/{report.series_instance_uid}/nifti"
    )

    assert response.status_code == 404
    assert "no series with images" in response.json()["detail"]
