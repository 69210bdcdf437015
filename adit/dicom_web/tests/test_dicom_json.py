"""The JSON model of what a PACS answered: what a client's JSON parser can read."""

from __future__ import annotations

import json

from pydicom import Dataset

from adit.dicom_web.dicom_json import json_response, to_json


def test_values_json_cannot_hold_are_left_out_not_the_answer():
    dataset = Dataset()
    dataset.PatientID = "P1"
    dataset.SliceThickness = "NaN"
    dataset.PixelSpacing = ["1e999", "0.5"]
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.QueryRetrieveLevel = "STUDY"

    body = json.loads(json_response([dataset]).content)

    assert body == [{"00100020": {"vr": "LO", "Value": ["P1"]}}]


def test_bulk_data_is_left_out_or_given_as_a_uri():
    dataset = Dataset()
    dataset.PatientID = "P1"
    dataset.PixelData = b"\0" * 4096
    dataset["PixelData"].VR = "OW"

    assert "7FE00010" not in to_json(dataset)
    with_uri = to_json(dataset, bulk_data_uri=lambda element: "https://adit/bulk/1")
    assert with_uri["7FE00010"] == {"vr": "OW", "BulkDataURI": "https://adit/bulk/1"}
