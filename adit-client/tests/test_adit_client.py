"""AditClient against ADIT served by daphne, with the real Orthancs behind it: every method
once, its answers compared with what the Orthanc gives directly (dicomweb-client at its own
DICOMweb root), pseudonymization through every kind of retrieval, and each error class from
the failure ADIT answers with."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable
from io import BytesIO

import pytest
from adit_client import (
    AditAuthError,
    AditBadRequest,
    AditClient,
    AditNotFound,
    AditPermissionDenied,
    AditServerError,
)
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from adit.core.demo.synthetic import generate_ct_series
from adit.core.models import Project
from adit.core.tests.factories import grant
from adit.core.tests.fake_pacs import FakePacs, fake_ct_instance

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PACS = "ORTHANC1"
ARCHIVE = "ORTHANC2"
# What a search answer must hold at each level, to match what the Orthanc says of it.
STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
# Where the two answers must differ: each points at itself.
LOCATION_KEYS = {"RetrieveURL", "RetrieveAETitle"}
_seeds = itertools.count(500)


def orthanc_client(orthanc) -> DICOMwebClient:
    return DICOMwebClient(orthanc.dicomweb_root)


def datasets(answers: Iterable[dict]) -> list[Dataset]:
    return [Dataset.from_json(answer) for answer in answers]


def uids(images: Iterable[Dataset]) -> set[str]:
    return {str(image.SOPInstanceUID) for image in images}


def assert_same_answers(ours: list[Dataset], theirs: list[Dataset], keys: tuple[str, ...]):
    """The same matches, and the same value of every attribute both answers hold."""
    by_uid = {str(answer[keys[0]].value): answer for answer in ours}
    original_by_uid = {str(answer[keys[0]].value): answer for answer in theirs}
    assert by_uid and set(by_uid) == set(original_by_uid)
    for uid, answer in by_uid.items():
        original = original_by_uid[uid]
        shared = {element.keyword for element in answer} & {e.keyword for e in original}
        assert set(keys) <= shared
        for keyword in shared - LOCATION_KEYS:
            assert answer[keyword].value == original[keyword].value, keyword


def assert_same_instances(ours: list[Dataset], theirs: list[Dataset]) -> None:
    assert ours and uids(ours) == uids(theirs)
    assert any("PixelData" in image for image in ours)
    originals = {str(image.SOPInstanceUID): image for image in theirs}
    for image in ours:
        original = originals[str(image.SOPInstanceUID)]
        assert image.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert image.get("PixelData") == original.get("PixelData")
        assert image.PatientID == original.PatientID


def assert_same_metadata(ours: list[dict], theirs: list[dict]) -> None:
    by_uid = {item["00080018"]["Value"][0]: item for item in ours}
    original_by_uid = {item["00080018"]["Value"][0]: item for item in theirs}
    assert by_uid and set(by_uid) == set(original_by_uid)
    for uid, item in by_uid.items():
        assert "7FE00010" not in item  # no pixel data
        for tag in ("00100020", "0020000D", "0020000E", "00080016", "00200013", "00280010"):
            assert item.get(tag) == original_by_uid[uid].get(tag), tag


# -- searching ------------------------------------------------------------------------------


def test_searches_at_each_level_answer_what_the_pacs_answers(
    adit_http, client, source, orthanc1, orthanc1_studies
):
    orthanc = orthanc_client(orthanc1)
    study = orthanc1_studies[0]
    series = study.series[0]

    studies = client.search_for_studies(PACS, {"PatientID": study.patient_id})
    assert_same_answers(
        studies,
        datasets(orthanc.search_for_studies(search_filters={"PatientID": study.patient_id})),
        STUDY_KEYS,
    )
    assert_same_answers(
        client.search_for_series(PACS, study.study_instance_uid),
        datasets(orthanc.search_for_series(study.study_instance_uid)),
        SERIES_KEYS,
    )
    assert_same_answers(
        client.search_for_images(PACS, study.study_instance_uid, series.series_instance_uid),
        datasets(
            orthanc.search_for_instances(study.study_instance_uid, series.series_instance_uid)
        ),
        IMAGE_KEYS,
    )
    # What a script follows to retrieve a match leads to ADIT (with its port).
    assert all(str(answer.RetrieveURL).startswith(adit_http.url) for answer in studies)


def test_a_search_narrows_down_as_the_query_says(client, source, orthanc1_studies):
    study = orthanc1_studies[0]

    answers = client.search_for_series(PACS, study.study_instance_uid, {"Modality": "SR"})

    assert [str(answer.Modality) for answer in answers] == ["SR"]
    assert len(client.search_for_studies(PACS, {"limit": 2})) == 2


# -- retrieving -----------------------------------------------------------------------------


def test_retrievals_give_the_pacs_instances_pixel_for_pixel(
    client, source, orthanc1, orthanc1_studies
):
    orthanc = orthanc_client(orthanc1)
    study = orthanc1_studies[0]
    study_uid = study.study_instance_uid
    series_uid = study.series[0].series_instance_uid
    image_uid = study.series[0].sop_instance_uids[1]

    assert_same_instances(client.retrieve_study(PACS, study_uid), orthanc.retrieve_study(study_uid))
    assert_same_instances(
        client.retrieve_series(PACS, study_uid, series_uid),
        orthanc.retrieve_series(study_uid, series_uid),
    )
    assert_same_instances(
        list(client.iter_series(PACS, study_uid, series_uid)),
        orthanc.retrieve_series(study_uid, series_uid),
    )
    assert_same_instances(
        [client.retrieve_image(PACS, study_uid, series_uid, image_uid)],
        [orthanc.retrieve_instance(study_uid, series_uid, image_uid)],
    )


def test_metadata_is_the_pacs_metadata_without_pixel_data(
    client, source, orthanc1, orthanc1_studies
):
    orthanc = orthanc_client(orthanc1)
    study = orthanc1_studies[1]
    study_uid = study.study_instance_uid
    series_uid = study.series[0].series_instance_uid
    image_uid = study.series[0].sop_instance_uids[0]

    assert_same_metadata(
        client.retrieve_study_metadata(PACS, study_uid), orthanc.retrieve_study_metadata(study_uid)
    )
    assert_same_metadata(
        client.retrieve_series_metadata(PACS, study_uid, series_uid),
        orthanc.retrieve_series_metadata(study_uid, series_uid),
    )
    image = client.retrieve_image_metadata(PACS, study_uid, series_uid, image_uid)
    assert_same_metadata(
        [image], [orthanc.retrieve_instance_metadata(study_uid, series_uid, image_uid)]
    )
    assert image["00280010"]["Value"] == [64]  # Rows: of the image's pixel data


def test_iterating_pseudonymizes_as_retrieving_does(
    adit_http, token, member, source, orthanc1_studies
):
    project = Project.objects.create(name="Lung study")
    project.groups.add(member.active_group)
    client = AditClient(adit_http.url, token, trial_protocol_id="TRIAL-9")
    study = orthanc1_studies[2]
    study_uid = study.study_instance_uid
    original_uids = {uid for series in study.series for uid in series.sop_instance_uids}

    iterated = list(client.iter_study(PACS, study_uid, pseudonym="SUBJ-7", project="Lung study"))
    retrieved = client.retrieve_study(PACS, study_uid, pseudonym="SUBJ-7", project="Lung study")

    assert iterated and {str(image.PatientID) for image in iterated} == {"SUBJ-7"}
    assert not uids(iterated) & original_uids
    assert {str(image.StudyInstanceUID) for image in iterated} != {study_uid}
    # The project's secret gives the same new UIDs to every request: the iteration was
    # pseudonymized with it as the retrieval was.
    assert uids(iterated) == uids(retrieved)
    assert {str(image.ClinicalTrialProtocolID) for image in iterated + retrieved} == {"TRIAL-9"}

    series_uid = study.series[0].series_instance_uid
    one_series = list(client.iter_series(PACS, study_uid, series_uid, pseudonym="SUBJ-7"))
    assert {str(image.PatientID) for image in one_series} == {"SUBJ-7"}
    assert len(one_series) == study.series[0].instance_count
    assert not uids(one_series) & original_uids


def test_progress_bars_count_the_instances(adit_http, token, source, orthanc1_studies, capsys):
    client = AditClient(adit_http.url, token, progress=True)
    series = orthanc1_studies[0].series[0]

    images = client.retrieve_series(
        PACS, orthanc1_studies[0].study_instance_uid, series.series_instance_uid
    )

    assert len(images) == series.instance_count
    assert f"{series.instance_count} instances" in capsys.readouterr().err


# -- storing --------------------------------------------------------------------------------


def test_stored_images_arrive_in_the_pacs(client, destination, empty_orthanc2):
    images = list(generate_ct_series(3, rows=8, columns=8, seed=next(_seeds)))
    study_uid = str(images[0].StudyInstanceUID)

    answer = client.store_images(ARCHIVE, images)

    assert {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence} == uids(
        images
    )
    assert "FailedSOPSequence" not in answer
    assert set(empty_orthanc2.study_instance_uids(study_uid)) == uids(images)


def test_images_stored_with_a_pseudonym_arrive_pseudonymized(client, destination, empty_orthanc2):
    images = list(generate_ct_series(2, rows=8, columns=8, seed=next(_seeds)))

    answer = client.store_images(ARCHIVE, images, pseudonym="SUBJ-8")

    (study_uid,) = empty_orthanc2.list_study_uids()
    assert study_uid != images[0].StudyInstanceUID
    stored = [dcmread(BytesIO(data)) for data in empty_orthanc2.study_files(study_uid)]
    assert {str(image.PatientID) for image in stored} == {"SUBJ-8"}
    assert uids(stored) == {
        str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence
    }


# -- NIfTI ----------------------------------------------------------------------------------


def nifti_dimensions(content: BytesIO) -> tuple[int, ...]:
    """dim[0..3] of a gzipped NIfTI-1 image (a header dcm2niix writes: magic n+1)."""
    header = gzip.decompress(content.getvalue())[:348]
    assert header[344:348] == b"n+1\x00"
    return tuple(int.from_bytes(header[40 + 2 * i : 42 + 2 * i], "little") for i in range(4))


def test_nifti_files_of_a_study_a_series_and_an_image(client, source, orthanc1_studies):
    study = orthanc1_studies[0]
    study_uid = study.study_instance_uid
    series = study.series[0]
    image_uid = series.sop_instance_uids[0]
    ct_series = [s for s in study.series if s.modality == "CT"]

    of_study = client.retrieve_nifti_study(PACS, study_uid)
    iterated = list(client.iter_nifti_study(PACS, study_uid))
    of_series = client.retrieve_nifti_series(PACS, study_uid, series.series_instance_uid)
    iterated_series = list(client.iter_nifti_series(PACS, study_uid, series.series_instance_uid))
    of_image = client.retrieve_nifti_image(PACS, study_uid, series.series_instance_uid, image_uid)
    iterated_image = list(
        client.iter_nifti_image(PACS, study_uid, series.series_instance_uid, image_uid)
    )

    volumes = [content for name, content in of_study if name.endswith(".nii.gz")]
    assert sorted(nifti_dimensions(volume)[3] for volume in volumes) == sorted(
        s.instance_count for s in ct_series
    )
    assert [name for name, _ in iterated] == [name for name, _ in of_study]
    (volume,) = [content for name, content in of_series if name.endswith(".nii.gz")]
    assert nifti_dimensions(volume)[3] == series.instance_count
    assert [name for name, _ in iterated_series] == [name for name, _ in of_series]
    assert {name.rsplit(".", 1)[-1] for name, _ in of_image} == {"json", "gz"}
    assert [name for name, _ in iterated_image] == [name for name, _ in of_image]


# -- errors ---------------------------------------------------------------------------------


def test_a_token_adit_does_not_know_is_an_auth_error(adit_http, source):
    client = AditClient(adit_http.url, "0" * 40)

    with pytest.raises(AditAuthError) as caught:
        client.search_for_studies(PACS)

    assert caught.value.status_code == 401
    assert caught.value.message


def test_a_user_without_the_permission_is_told_which_it_needs(
    adit_http, outsider_token, member, token, source, orthanc1_studies
):
    outsider = AditClient(adit_http.url, outsider_token)
    with pytest.raises(AditPermissionDenied) as caught:
        outsider.search_for_studies(PACS)
    assert caught.value.status_code == 403
    assert "dicom_web.can_query" in caught.value.message

    group = member.active_group
    group.permissions.remove(*group.permissions.filter(codename="can_retrieve_unpseudonymized"))
    client = AditClient(adit_http.url, token)
    with pytest.raises(AditPermissionDenied) as caught:
        client.iter_study(PACS, orthanc1_studies[0].study_instance_uid)
    assert "dicom_web.can_retrieve_unpseudonymized" in caught.value.message


def test_an_unknown_ae_title_or_study_is_not_found(client, source):
    with pytest.raises(AditNotFound) as caught:
        client.search_for_studies("NOSUCHPACS")
    assert caught.value.status_code == 404
    assert "NOSUCHPACS" in caught.value.message

    with pytest.raises(AditNotFound) as caught:
        client.retrieve_study(PACS, generate_uid(), pseudonym="SUBJ-1")
    assert "No study found" in caught.value.message


def test_a_parameter_adit_cannot_use_is_a_bad_request_naming_it(client, source, orthanc1_studies):
    study_uid = orthanc1_studies[0].study_instance_uid

    with pytest.raises(AditBadRequest) as caught:
        client.search_for_studies(PACS, {"NoSuchAttribute": "x"})
    assert caught.value.status_code == 400
    assert "NoSuchAttribute" in caught.value.message

    # The iteration's request is made by the call: its error raises there.
    with pytest.raises(AditBadRequest) as caught:
        client.iter_study(PACS, study_uid, pseudonym="SUBJ-1", project="Nobody's")
    assert caught.value.message.startswith("Invalid parameter project:")


# -- a PACS failing after the first instance (no real Orthanc can be made to) ---------------

BROKEN_STUDY = generate_uid()
BROKEN_SERIES = generate_uid()


def _find(event):
    level = str(event.identifier.get("QueryRetrieveLevel", ""))
    answer = Dataset()
    answer.QueryRetrieveLevel = level
    answer.PatientID = "FAKE1"
    answer.StudyInstanceUID = BROKEN_STUDY
    if level == "SERIES":
        answer.SeriesInstanceUID = BROKEN_SERIES
        answer.Modality = "CT"
        answer.NumberOfSeriesRelatedInstances = 3
    if str(event.identifier.get("StudyInstanceUID", "")) == BROKEN_STUDY:
        yield 0xFF00, answer


def _get_one_then_fail(event):
    yield 3
    yield 0xFF00, fake_ct_instance(BROKEN_STUDY, BROKEN_SERIES, 1, pixel_bytes=64)
    yield 0xC001, None  # the PACS gives up


def test_a_failure_in_the_middle_of_a_retrieval_raises_with_adits_message(client, member, token):
    with FakePacs("BROKENPACS", find=_find, get=_get_one_then_fail) as pacs:
        server = pacs.server(study_root_find_support=True, study_root_get_support=True)
        grant(server, member.active_group, source=True)

        images = client.iter_study("BROKENPACS", BROKEN_STUDY)
        first = next(images)
        with pytest.raises(AditServerError) as caught:
            next(images)
        with pytest.raises(AditServerError) as in_metadata:
            client.retrieve_study_metadata("BROKENPACS", BROKEN_STUDY)

    assert first.InstanceNumber == 1
    assert caught.value.status_code is None
    assert "C-GET on BROKENPACS failed" in caught.value.message
    assert "C-GET on BROKENPACS failed" in in_metadata.value.message
