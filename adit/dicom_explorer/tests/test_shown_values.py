"""How the explorer shows what a PACS sends: unreadable values said, not fatal; links only
where a value can name a page; large values by their size, left where they are."""

from __future__ import annotations

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from adit.core.models import DicomServer
from adit.dicom_explorer.queries import is_valid_id
from adit.dicom_explorer.views import _attributes, shown


def _with_broken_us() -> Dataset:
    dataset = Dataset()
    dataset.PatientID = "0012"
    dataset.StudyInstanceUID = "1.2.3"
    # Rows (US) of three bytes: no US value has that length.
    dataset._dict[Tag("Rows")] = RawDataElement(  # pyright: ignore[reportArgumentType]
        Tag("Rows"), "US", 3, b"\x01\x02\x03", 0, False, True
    )
    return dataset


def test_an_unreadable_value_is_said_and_the_rest_is_shown():
    values = shown(_with_broken_us())
    assert values["Rows"] == "(unreadable)"
    assert values["PatientID"] == "0012"


@pytest.mark.django_db
def test_links_only_where_the_values_can_name_a_page():
    server = DicomServer.objects.create(name="PACS", ae_title="PACS", host="x", port=1)
    dataset = Dataset()
    dataset.PatientID = "a/../b"
    dataset.StudyInstanceUID = "1.2.x"
    values = shown(dataset, server)
    assert values["patient_url"] == "" and values["study_url"] == ""
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4"
    values = shown(series, server, {"StudyInstanceUID": "1.2.3"})
    assert values["series_url"].endswith("/studies/1.2.3/series/1.2.3.4/")


@pytest.mark.parametrize(
    ("patient_id", "valid"),
    [("12/34", True), ("0012", True), (".", False), ("a/../b", False), ("./a", False),
     ("", False), ("a*", False), ("x" * 65, False)],
)  # fmt: skip
def test_which_patient_ids_can_name_a_page(patient_id, valid):
    assert is_valid_id(patient_id) is valid


def test_attributes_leave_a_deferred_value_on_disk():
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    dataset = dcmread(path, defer_size=1024)
    rows = {keyword: value for _, keyword, _, value in _attributes(dataset, sees_all=False)}
    assert rows["PixelData"].endswith(" bytes")
    raw = dataset.get_item(Tag("PixelData"), keep_deferred=True)
    assert raw.value is None, "the pixel data was not read to show its size"
    assert rows["PatientName"] == "(hidden: may identify the patient)"
