"""Query on its own: which keys and values it takes, how it encodes them for a PACS and for
QIDO-RS, and which answers it lets through. No PACS needed."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from adit.core.dicom.query import RETURN_KEYS, Level, Query, as_list, count_of, encode_date

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


# -- create: keys and values --------------------------------------------------------------


def test_empty_values_are_left_out_and_the_level_is_read_from_text():
    query = Query.create(
        "STUDY", PatientID="", AccessionNumber=None, ModalitiesInStudy=[], StudyDescription="x"
    )
    assert query.level is Level.STUDY
    assert query.filters == {"StudyDescription": "x"}
    assert query.modalities == ()


def test_unknown_level_is_refused():
    with pytest.raises(ValueError):
        Query.create("SERIESLEVEL")


@pytest.mark.parametrize(
    ("level", "key"),
    [
        (Level.STUDY, "SOPInstanceUID"),  # an image key at study level
        (Level.PATIENT, "StudyDescription"),
        (Level.IMAGE, "PatientName"),
        (Level.STUDY, "PatientComments"),  # no key of ADIT's at all
    ],
)
def test_a_key_of_another_level_is_refused_with_its_name(level, key):
    with pytest.raises(ValidationError, match=f"{key} is not a query key at {level} level"):
        Query.create(level, **{key: "1"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"PatientName": "Doe\\Smith"}, "backslash"),
        ({"PatientID": "12\n34"}, "control characters"),
        ({"StudyInstanceUID": "1.2.abc"}, "digits and dots only"),
        ({"StudyInstanceUID": "1." * 40}, "at most 64 characters"),
        ({"PatientSex": "M*"}, "PatientSex does not allow wildcards"),
        ({"ModalitiesInStudy": ["CT", "M\\R"]}, "backslash"),
    ],
)
def test_malformed_values_are_refused_before_anything_is_sent(values, message):
    with pytest.raises(ValidationError, match=message):
        Query.create(Level.STUDY, **values)


def test_wildcards_are_kept_where_dicom_allows_them():
    query = Query.create(Level.STUDY, PatientName="Doe*", PatientID="12?4", AccessionNumber="A*")
    assert query.filters == {"PatientName": "Doe*", "PatientID": "12?4", "AccessionNumber": "A*"}
    assert not query.has_exact("PatientID")
    assert Query.create(Level.STUDY, PatientID="1234").has_exact("PatientID")
    assert not Query.create(Level.STUDY).has_exact("PatientID")


def test_modalities_are_kept_apart_upper_case_sorted_and_once():
    query = Query.create(Level.STUDY, ModalitiesInStudy=["mr", "CT", "MR"])
    assert query.modalities == ("CT", "MR")
    assert "ModalitiesInStudy" not in query.filters
    assert Query.create(Level.STUDY, ModalitiesInStudy="ct").modalities == ("CT",)


# -- dates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (datetime.date(2024, 1, 2), "20240102"),
        ((datetime.date(2024, 1, 1), datetime.date(2024, 12, 31)), "20240101-20241231"),
        ((None, datetime.date(2024, 12, 31)), "-20241231"),
        ((datetime.date(2024, 1, 1), None), "20240101-"),
        ((datetime.date(2024, 3, 3), datetime.date(2024, 3, 3)), "20240303-20240303"),
        ("20240101-20240201", "20240101-20240201"),
        ("-20240201", "-20240201"),
        ("20240101", "20240101"),
    ],
)
def test_dates_and_ranges_are_encoded_as_dicom_matches_them(value, encoded):
    assert encode_date("StudyDate", value) == encoded
    assert Query.create(Level.STUDY, StudyDate=value).filters == {"StudyDate": encoded}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((datetime.date(2024, 2, 1), datetime.date(2024, 1, 1)), "starts after it ends"),
        ("2024-01-01", "not a date of the form YYYYMMDD"),
        ("20241301", "not a date of the form YYYYMMDD"),
        ("20240101-20240201-20240301", "not a date or a date range"),
    ],
)
def test_impossible_dates_are_refused_with_the_key_named(value, message):
    with pytest.raises(ValidationError, match=f"StudyDate: .*{message}"):
        Query.create(Level.STUDY, StudyDate=value)


def test_birth_dates_are_dates_too():
    query = Query.create(Level.PATIENT, PatientBirthDate=datetime.date(1970, 5, 6))
    assert query.filters == {"PatientBirthDate": "19700506"}


# -- what goes to the PACS ----------------------------------------------------------------


def test_letters_outside_ascii_go_to_the_pacs_as_a_wildcard():
    query = Query.create(Level.STUDY, PatientName="Jäger*", StudyDescription="Schädel?")
    assert query.pacs_filters() == {"PatientName": "J*ger*", "StudyDescription": "Sch*del?"}
    # Keys without wildcards are sent as they are.
    exact = Query.create(Level.STUDY, StudyInstanceUID=STUDY_UID)
    assert exact.pacs_filters() == {"StudyInstanceUID": STUDY_UID}


def test_the_dataset_asks_for_every_return_key_and_carries_the_filters():
    query = Query.create(Level.SERIES, StudyInstanceUID=STUDY_UID, Modality="CT")
    dataset = query.to_dataset()
    assert dataset.QueryRetrieveLevel == "SERIES"
    for key in RETURN_KEYS[Level.SERIES]:
        assert key in dataset
    assert dataset.StudyInstanceUID == STUDY_UID
    assert dataset.Modality == "CT"
    assert dataset.NumberOfSeriesRelatedInstances in ("", None)


def test_one_modality_is_sent_to_the_pacs_several_are_filtered_here():
    one = Query.create(Level.STUDY, ModalitiesInStudy="CT")
    assert one.to_dataset().ModalitiesInStudy == "CT"
    assert one.qido_filters() == {"ModalitiesInStudy": "CT"}
    several = Query.create(Level.STUDY, ModalitiesInStudy=["CT", "MR"])
    assert several.to_dataset().ModalitiesInStudy in ("", None)
    assert "ModalitiesInStudy" not in several.qido_filters()


def test_qido_filters_are_the_pacs_filters():
    query = Query.create(
        Level.STUDY, PatientName="Müller*", StudyDate=(datetime.date(2024, 1, 1), None)
    )
    assert query.qido_filters() == {"PatientName": "M*ller*", "StudyDate": "20240101-"}


# -- what comes back ----------------------------------------------------------------------


def _answer(**values) -> Dataset:
    dataset = Dataset()
    for key, value in values.items():
        setattr(dataset, key, value)
    return dataset


def test_matches_applies_the_real_pattern_the_pacs_got_as_a_wildcard():
    query = Query.create(Level.STUDY, PatientName="jäger*")
    assert query.matches(_answer(PatientName="Jäger^Günther"))
    assert not query.matches(_answer(PatientName="Jagger^Mick"))
    assert query.matches(_answer(StudyInstanceUID=STUDY_UID))  # the key not answered: kept


def test_matches_keeps_studies_with_any_of_several_modalities():
    query = Query.create(Level.STUDY, ModalitiesInStudy=["MR", "PR"])
    assert query.matches(_answer(ModalitiesInStudy=["CT", "PR"]))
    assert query.matches(_answer(ModalitiesInStudy="MR"))
    assert not query.matches(_answer(ModalitiesInStudy=["CT", "SR"]))
    assert query.matches(_answer(ModalitiesInStudy=""))  # the PACS did not say: kept


def test_matches_drops_answers_for_another_uid():
    query = Query.create(Level.SERIES, StudyInstanceUID=STUDY_UID)
    assert query.matches(_answer(StudyInstanceUID=STUDY_UID))
    assert not query.matches(_answer(StudyInstanceUID=STUDY_UID + "1"))


def test_as_list_reads_every_form_of_a_multi_value():
    assert as_list(None) == []
    assert as_list("CT\\MR") == ["CT", "MR"]
    assert as_list("") == []
    assert as_list(MultiValue(str, ["CT", "PR"])) == ["CT", "PR"]
    assert as_list(3) == ["3"]


@pytest.mark.parametrize(
    ("value", "count"), [(b"12", 12), (b" 7 ", 7), (b"", None), (b"-1", None), (b"x", None)]
)
def test_count_of_reads_only_one_non_negative_number(value, count):
    tag = Tag("NumberOfStudyRelatedInstances")
    dataset = Dataset()  # as the PACS answered, before pydicom reads the value
    dataset[tag] = RawDataElement(tag, "IS", len(value), value, 0, False, True)
    assert count_of(dataset, "NumberOfStudyRelatedInstances") == count


def test_count_of_a_missing_or_multi_valued_count_is_none():
    assert count_of(Dataset(), "NumberOfStudyRelatedInstances") is None
    dataset = Dataset()
    dataset.NumberOfStudyRelatedInstances = ["1", "2"]
    assert count_of(dataset, "NumberOfStudyRelatedInstances") is None


def test_a_generic_text_filter_with_letters_beyond_ascii_is_matched_by_adit():
    query = Query.from_attributes(Level.STUDY, {"ReferringPhysicianName": "李*"})
    assert query.pacs_filters()["ReferringPhysicianName"] == "*"
    assert query.matches(_answer(ReferringPhysicianName="李^明"))
    assert not query.matches(_answer(ReferringPhysicianName="王^明"))


def test_a_multi_valued_attribute_matches_when_one_value_does():
    query = Query.from_attributes(Level.IMAGE, {"ImageType": "DERIVED"})
    assert query.matches(_answer(ImageType=["ORIGINAL", "DERIVED"]))
    assert not query.matches(_answer(ImageType=["ORIGINAL", "PRIMARY"]))


def test_uid_lists_are_sent_as_dicom_and_qido_write_them():
    query = Query.from_attributes(Level.STUDY, {"StudyInstanceUID": "1.2.3,1.2.4"})
    assert query.to_dataset().StudyInstanceUID == ["1.2.3", "1.2.4"]
    assert query.qido_filters()["StudyInstanceUID"] == "1.2.3,1.2.4"
    assert query.matches(_answer(StudyInstanceUID="1.2.4"))
    assert not query.matches(_answer(StudyInstanceUID="1.2.5"))
