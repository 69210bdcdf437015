"""The PS3.18 JSON model (F.2) of what the API answers: search results, metadata, and the
results of a store."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable

from django.http import HttpResponse
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement

DICOM_JSON = "application/dicom+json"
# Never part of an answer: how the PACS was asked, and the character set of its encoding
# (JSON is UTF-8 whatever the PACS used).
_LEFT_OUT = {0x00080052, 0x00080005}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}
# Binary values longer than this are bulk data: left out, or given as a BulkDataURI.
BULK_DATA_THRESHOLD = 1024

BulkDataHandler = Callable[[DataElement], str]


def to_json(dataset: Dataset, bulk_data_uri: BulkDataHandler | None = None) -> dict:
    """The dataset in the JSON model; values that cannot be encoded (a malformed number from
    a PACS, say) are left out instead of failing the answer. Bulk data (pixel data, say) is
    given as a BulkDataURI by ``bulk_data_uri``, or left out without it; either way it is
    not read from where it waits (a spooled instance's file)."""
    kept = Dataset()
    for tag in dataset.keys():
        if tag in _LEFT_OUT:
            continue
        raw = dataset.get_item(tag, keep_deferred=True)
        if raw is None:
            continue
        is_bulk = _vr(raw) in _BINARY_VRS and (
            raw.value is None or len(raw.value) > BULK_DATA_THRESHOLD
        )
        if is_bulk and bulk_data_uri is None:
            continue
        try:
            kept.add(dataset[tag])
        except Exception:  # pydicom cannot read the value as its VR says: left out
            continue
    encoded = kept.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_data_uri or _never,
        suppress_invalid_tags=True,
    )
    # JSON has no NaN or infinity, which a PACS may send as a DS or FD: such values are left
    # out, as a client's parser would refuse the whole answer for one of them.
    return {tag: value for tag, value in encoded.items() if _finite(value)}


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True


def _vr(element: DataElement | RawDataElement) -> str:
    if element.VR:
        return str(element.VR)
    try:  # implicit VR: the dictionary's, as pydicom will read it
        return dictionary_VR(element.tag)
    except KeyError:
        return "UN"


def _never(element: DataElement) -> str:
    raise AssertionError("bulk data is left out before encoding")


def json_response(datasets: Iterable[Dataset], status: int = 200) -> HttpResponse:
    body = json.dumps(
        [to_json(dataset) for dataset in datasets], ensure_ascii=False, allow_nan=False
    )
    return HttpResponse(body.encode(), status=status, content_type=DICOM_JSON)
