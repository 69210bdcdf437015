"""QIDO-RS (PS3.18 10.6): searches for studies, series and instances, answered with the PS3.18
JSON model. A DIMSE server is asked by C-FIND, a DICOMweb one by QIDO-RS, through the core's
operator either way.

Every query parameter is checked before the PACS is asked: an attribute (keyword or tag) that
no C-FIND can match, a malformed date, a ``limit`` that is no number, a path UID that is no
UID: each is a 400 that names the parameter.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema_view
from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.tag import Tag
from rest_framework.request import Request

from adit.core import validators
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import Level, Query

from .api import QUERY, BadParameter, DicomWebView, bad_parameter
from .dicom_json import DICOM_JSON, json_response
from .locations import retrieve_url
from .schema import SEARCH, dicomweb_operation

# Parameters of the search itself, not attributes to match (PS3.18 8.3.4; accept and charset
# of 8.3.3.1 ask for what ADIT answers anyway: JSON in UTF-8).
_SEARCH_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
# How far a client may page: offset + limit at most this many pages of the server's limit (a
# search reads every answer before the offset, so a huge offset would read a whole PACS).
MAX_PAGES = 100
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Sent with a result cut at the server's own limit (PS3.18 8.3.4.4).
MORE_RESULTS_WARNING = '299 ADIT "There are additional results that can be requested."'
# What ``includefield=all`` asks a PACS for beyond the level's usual keys.
_ALL_FIELDS = {
    Level.STUDY: (
        "StudyID",
        "ReferringPhysicianName",
        "PatientAge",
        "PatientSex",
        "InstitutionName",
        "SOPClassesInStudy",
        "IssuerOfPatientID",
        "OtherPatientIDs",
    ),
    Level.SERIES: (
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "ProtocolName",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence",
    ),
    Level.IMAGE: (
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "ContentDate",
        "ContentTime",
        "AcquisitionDateTime",
    ),
}


def attribute_keyword(key: str) -> str:
    """The keyword of a query key, which may be a keyword or a tag of 8 hex digits."""
    if _TAG.fullmatch(key):
        keyword = keyword_for_tag(Tag(int(key, 16)))
        if not keyword:
            raise BadParameter(key, "no attribute of the DICOM data dictionary has this tag.")
        return keyword
    if "." in key:
        raise BadParameter(key, "matching on attributes inside sequences is not supported.")
    return key


class SearchParameters:
    """The query string of a search, checked."""

    def __init__(self, request: Request, level: Level, path_uids: dict[str, str]):
        self.level = level
        self.limit = self._number(request, "limit", minimum=1)
        self.offset = self._number(request, "offset", minimum=0) or 0
        most = MAX_PAGES * settings.DICOM_WEB_MAX_RESULTS
        if self.offset + self.page_size > most:
            raise BadParameter(
                "offset", f"a search reaches at most {most} results (offset + limit); narrow it."
            )
        self.include = self._include(request)
        filters: dict[str, str] = {}
        for key, values in request.query_params.lists():
            if key in _SEARCH_PARAMETERS:
                continue
            keyword = attribute_keyword(key)
            if len(values) > 1:
                raise BadParameter(key, "given more than once (separate values with '\\').")
            filters[keyword] = values[0]
        for keyword, uid in path_uids.items():
            try:
                validators.validate_uid(uid)
            except ValidationError as err:
                raise bad_parameter(keyword, err) from None
            filters[keyword] = uid
        try:
            self.query = Query.from_attributes(level, filters, self.include)
        except ValidationError as err:
            raise BadParameter(_named(level, filters), " ".join(err.messages)) from None

    @staticmethod
    def _number(request: Request, name: str, minimum: int) -> int | None:
        text = request.query_params.get(name)
        if text is None:
            return None
        if not _WHOLE_NUMBER.fullmatch(text) or int(text) < minimum:
            raise BadParameter(name, f"{validators.shown(text)} is no whole number ≥ {minimum}.")
        return int(text)

    def _include(self, request: Request) -> tuple[str, ...]:
        names = [
            name.strip()
            for value in request.query_params.getlist("includefield")
            for name in value.split(",")
            if name.strip()
        ]
        if "all" in names:
            names = [name for name in names if name != "all"]
            names += _ALL_FIELDS.get(self.level, ())
        return tuple(attribute_keyword(name) for name in names)

    @property
    def wanted(self) -> int:
        """How many answers to read: the page asked for and one to tell if there are more."""
        return self.offset + self.page_size + 1

    @property
    def page_size(self) -> int:
        return min(self.limit or settings.DICOM_WEB_MAX_RESULTS, settings.DICOM_WEB_MAX_RESULTS)


def _named(level: Level, filters: dict[str, str]) -> str:
    """The key a query was refused for: the first the query refuses alone."""
    for key, value in filters.items():
        try:
            Query.from_attributes(level, {key: value})
        except ValidationError:
            return key
    return "includefield"


@extend_schema_view(get=dicomweb_operation("QIDO-RS search", DICOM_JSON, SEARCH))
class _Search(DicomWebView):
    permissions = {"GET": QUERY}
    level: Level

    def get(self, request: Request, ae_title: str, **uids: str) -> HttpResponse:
        path_uids = {_PATH_KEYWORDS[name]: uid for name, uid in uids.items()}
        parameters = SearchParameters(request, self.level, path_uids)
        server = self.server(ae_title)
        # A client waits: bounded waits, no retries (a 503 with Retry-After tells it when).
        operator = DicomOperator(server, answer_within=settings.DICOM_WEB_TIMEOUT)
        answers = itertools.islice(self.answers(operator, parameters), parameters.offset, None)
        page = list(itertools.islice(answers, parameters.page_size))
        more = next(answers, None) is not None
        for answer in page:
            url = retrieve_url(request, ae_title, answer, self.level)
            if url is not None:
                answer.RetrieveURL = url
        response = json_response(page)
        if more:
            response["Warning"] = MORE_RESULTS_WARNING
        return response

    def answers(self, operator: DicomOperator, parameters: SearchParameters) -> Iterator[Dataset]:
        return operator.find(parameters.query, parameters.wanted)


_PATH_KEYWORDS = {"study_uid": "StudyInstanceUID", "series_uid": "SeriesInstanceUID"}


class StudySearch(_Search):
    level = Level.STUDY


class SeriesSearch(_Search):
    level = Level.SERIES


class InstanceSearch(_Search):
    """Instances of a series, or of a whole study: then series by series, as a C-FIND below
    study level needs the series' UID (PS3.4 C.4.1.2.1)."""

    level = Level.IMAGE

    def answers(self, operator: DicomOperator, parameters: SearchParameters) -> Iterator[Dataset]:
        query = parameters.query
        listed = query.filters.get("SeriesInstanceUID", "")
        if listed and "\\" not in listed:
            yield from operator.find(query, parameters.wanted)
            return
        study_uid = query.filters["StudyInstanceUID"]
        wanted = parameters.wanted
        # Read to the end first: a second C-FIND must not wait for this one's association.
        study_series = list(operator.find_series(study_uid))
        for series in study_series:
            series_uid = str(series.get("SeriesInstanceUID", ""))
            if not validators.is_valid_uid(series_uid):
                continue
            if listed and series_uid not in listed.split("\\"):
                continue
            filters = {**query.filters, "SeriesInstanceUID": series_uid}
            in_series = Query(query.level, filters, query.modalities, query.include)
            for instance in operator.find(in_series, wanted):
                yield instance
                wanted -= 1
                if wanted == 0:
                    return
