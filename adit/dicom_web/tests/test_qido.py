"""QIDO-RS through ADIT against a real Orthanc, reached over DIMSE and over DICOMweb: the
answers a client gets, and a 400 naming every parameter ADIT cannot use."""

from __future__ import annotations

import pytest
from pydicom import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def search(client, api_user, server, path: str, **params):
    return client.get(
        f"/api/dicom-web/{server.ae_title}/{path}",
        params,
        headers={"Authorization": f"Token {api_user.token}"},
    )


def answers(response) -> list[Dataset]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    return [Dataset.from_json(item) for item in response.json()]


@pytest.mark.parametrize("layout", ["studies", "qidors/studies"])
def test_studies_of_a_patient_with_their_attributes(
    client, api_user, pacs, orthanc1_studies, layout
):
    patient = orthanc1_studies[0].patient_id
    expected = {s.study_instance_uid: s for s in orthanc1_studies if s.patient_id == patient}

    found = answers(search(client, api_user, pacs, layout, PatientID=patient))

    assert {str(study.StudyInstanceUID) for study in found} == set(expected)
    for study in found:
        summary = expected[str(study.StudyInstanceUID)]
        assert str(study.PatientName) == summary.patient_name
        assert study.StudyDate == summary.study_date
        assert study.AccessionNumber == summary.accession_number
        assert "QueryRetrieveLevel" not in study


def test_attributes_can_be_named_by_tag_and_dates_by_range(
    client, api_user, pacs, orthanc1_studies
):
    study = orthanc1_studies[0]
    by_tag = answers(
        search(client, api_user, pacs, "studies", **{"00080050": study.accession_number})
    )
    assert [str(s.StudyInstanceUID) for s in by_tag] == [study.study_instance_uid]

    in_range = answers(
        search(
            client,
            api_user,
            pacs,
            "studies",
            PatientID=study.patient_id,
            StudyDate=f"{study.study_date}-{study.study_date}",
        )
    )
    assert study.study_instance_uid in {str(s.StudyInstanceUID) for s in in_range}
    assert all(s.StudyDate == study.study_date for s in in_range)


def test_series_and_instances_of_a_study(client, api_user, pacs, orthanc1_studies):
    study = orthanc1_studies[0]
    uid = study.study_instance_uid

    series = answers(search(client, api_user, pacs, f"studies/{uid}/series"))
    assert {str(s.SeriesInstanceUID) for s in series} == {
        s.series_instance_uid for s in study.series
    }

    first = study.series[0]
    instances = answers(
        search(
            client, api_user, pacs, f"studies/{uid}/series/{first.series_instance_uid}/instances"
        )
    )
    assert len(instances) == first.instance_count
    of_study = answers(search(client, api_user, pacs, f"qidors/studies/{uid}/instances"))
    assert len(of_study) == sum(s.instance_count for s in study.series)


def test_limit_offset_and_includefield(client, api_user, pacs, orthanc1_studies):
    everything = answers(search(client, api_user, pacs, "studies"))
    assert len(everything) == len(orthanc1_studies)

    first = answers(search(client, api_user, pacs, "studies", limit="2"))
    rest = answers(search(client, api_user, pacs, "studies", offset="2"))
    assert len(first) == 2
    assert {str(s.StudyInstanceUID) for s in first + rest} == {
        str(s.StudyInstanceUID) for s in everything
    }

    included = answers(
        search(client, api_user, pacs, "studies", includefield="StudyID,00080090", limit="1")
    )
    assert "StudyID" in included[0] and "ReferringPhysicianName" in included[0]


def test_a_cut_result_says_there_are_more(client, api_user, pacs, orthanc1_studies, settings):
    settings.DICOM_WEB_MAX_RESULTS = 2

    response = search(client, api_user, pacs, "studies")

    assert len(answers(response)) == 2
    assert "additional results" in response["Warning"]


def test_no_match_is_an_empty_list(client, api_user, pacs):
    assert answers(search(client, api_user, pacs, "studies", PatientID="NOBODY")) == []


@pytest.mark.parametrize(
    "params, named",
    [
        ({"Foo": "bar"}, "Foo"),
        ({"limit": "x"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"StudyDate": "2024-01"}, "StudyDate"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"ffffffff": "x"}, "ffffffff"),
        ({"PixelData": "x"}, "PixelData"),
        ({"ReferencedStudySequence.StudyInstanceUID": "1.2"}, "ReferencedStudySequence"),
        ({"includefield": "NoSuchKeyword"}, "NoSuchKeyword"),
        ({"Modality": "C*T", "PatientID": "P\x01"}, "PatientID"),
        ({"limit": "²"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"offset": "100000000"}, "offset"),
        ({"QueryRetrieveLevel": "IMAGE"}, "QueryRetrieveLevel"),
        ({"AffectedSOPClassUID": "1.2"}, "AffectedSOPClassUID"),
        ({"TransferSyntaxUID": "1.2.840.10008.1.2"}, "TransferSyntaxUID"),
        ({"includefield": "PixelData"}, "PixelData"),
        ({"includefield": "7FE00010"}, "PixelData"),
        ({"includefield": "Item"}, "Item"),
    ],
)
def test_a_parameter_adit_cannot_use_is_a_400_naming_it(client, api_user, pacs, params, named):
    response = search(client, api_user, pacs, "studies", **params)

    assert response.status_code == 400
    assert named in response.json()["detail"]


def test_a_path_uid_that_is_no_uid_is_a_400(client, api_user, pacs):
    response = search(client, api_user, pacs, "studies/1.2.x/series")

    assert response.status_code == 400
    assert "StudyInstanceUID" in response.json()["detail"]


def test_value_lists_of_uids_and_modalities(client, api_user, pacs, orthanc1_studies):
    first, second = orthanc1_studies[0], orthanc1_studies[1]
    uids = f"{first.study_instance_uid},{second.study_instance_uid}"

    listed = answers(search(client, api_user, pacs, "studies", StudyInstanceUID=uids))
    assert {str(s.StudyInstanceUID) for s in listed} == {
        first.study_instance_uid,
        second.study_instance_uid,
    }

    modalities = set(first.modalities)
    either = answers(
        search(
            client,
            api_user,
            pacs,
            "studies",
            PatientID=first.patient_id,
            ModalitiesInStudy=",".join(sorted(modalities | {"XA"})),
        )
    )
    assert first.study_instance_uid in {str(s.StudyInstanceUID) for s in either}


def test_other_methods_are_405_not_500(client, api_user, pacs):
    response = client.post(
        f"/api/dicom-web/{pacs.ae_title}/qidors/studies",
        headers={"Authorization": f"Token {api_user.token}"},
    )

    assert response.status_code == 405


def test_the_search_parameters_accept_and_charset_are_ignored(client, api_user, pacs):
    response = search(client, api_user, pacs, "studies", accept="application/dicom+json")

    assert response.status_code == 200
