"""The explorer's pages: the search form and one page per level of what a server holds
(upstream's URL layout), each a live query within the explorer's timeout."""

from __future__ import annotations

import base64
import functools
import json
import urllib.parse

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from adit.core import validators
from adit.core.access import NodeNotUsable, setup_problems, usable_server
from adit.core.dicom.query import Level
from adit.core.models import DicomServer
from adit.core.transfer.pseudonymizer import may_identify

from .forms import SearchForm
from .previews import PreviewUnavailable, cached_series_preview, non_image_reason
from .queries import (
    MAX_RESULTS,
    Explorer,
    ExplorerError,
    NotFound,
    is_valid_id,
    query_filters,
)

PERMISSION = "dicom_explorer.query_dicom_server"
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA_TAG = 0x7FE00010


def explorer_page(view):
    """A page of the explorer: refused (403, naming the permission) without the explorer's
    permission; an ExplorerError becomes a page saying what went wrong."""

    @functools.wraps(view)
    def page(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied(
                'The DICOM explorer needs the permission "Can query DICOM servers in the DICOM '
                f'explorer" ({PERMISSION}), which your active group does not have.'
            )
        try:
            return view(request, *args, **kwargs)
        except ExplorerError as err:
            context = {"message": err.message, "status": err.status}
            return render(request, "dicom_explorer/error.html", context, status=err.status)

    return page


def study_page_url(user, source_id: int, patient_id: str, study_uid: str) -> str | None:
    """The explorer's page of a study, for a user who may open it (see core.study_pages)."""
    if not user.has_perm(PERMISSION) or not validators.is_valid_uid(study_uid):
        return None
    try:
        usable_server(user, "source", pk=source_id)
    except NodeNotUsable:
        return None
    return reverse("dicom_explorer:study_detail", args=[source_id, study_uid])


def _server(request: HttpRequest, server_id: int) -> DicomServer:
    try:
        return usable_server(request.user, "source", pk=server_id)
    except NodeNotUsable:
        raise NotFound("Invalid DICOM server.") from None


def shown(
    dataset: Dataset, server: DicomServer | None = None, defaults: dict[str, str] | None = None
) -> dict[str, str]:
    """The dataset's values as a person reads them (names "Last, First", dates YYYY-MM-DD),
    by keyword; with ``server``, the links to its pages (``patient_url``, ``study_url``,
    ``series_url``, ``instance_url``) where its values can name them, else "" (a PACS may send
    an ID no path can hold). ``defaults`` are the UIDs of the page (checked), for answers that
    leave them out."""
    values = {}
    for tag in list(dataset.keys()):
        keyword = keyword_for_tag(tag)
        if not keyword:
            continue
        try:
            element = dataset[tag]
            if element.VR != "SQ":
                values[keyword] = _text(element.value, str(element.VR))
        except Exception:  # a value pydicom cannot read (odd length, say): said, not fatal
            values[keyword] = "(unreadable)"
    if server is not None:
        values.update(_links(server, {**(defaults or {}), **_present(values)}))
    return values


def _present(values: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in values.items() if value}


def _text(value, vr: str) -> str:
    if isinstance(value, MultiValue):
        text = ", ".join(str(item) for item in value)
    elif isinstance(value, PersonName):
        text = ", ".join(part for part in (value.family_name, value.given_name) if part)
    else:
        text = "" if value is None else str(value)
    if vr == "DA" and len(text) == 8 and text.isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    elif vr == "TM" and len(text) >= 4 and text[:4].isdigit():
        text = f"{text[:2]}:{text[2:4]}"
    return text


def _links(server: DicomServer, values: dict[str, str]) -> dict[str, str]:
    patient_id = values.get("PatientID", "")
    uids = [values.get(key, "") for key in ("StudyInstanceUID", "SeriesInstanceUID")]
    uids.append(values.get("SOPInstanceUID", ""))
    links = {"patient_url": "", "study_url": "", "series_url": "", "instance_url": ""}
    if is_valid_id(patient_id):
        links["patient_url"] = reverse(
            "dicom_explorer:patient_detail", args=[server.pk, patient_id]
        )
    names = ("study_url", "series_url", "instance_url")
    pages = ("study_detail", "series_detail", "instance_detail")
    for depth, (name, page) in enumerate(zip(names, pages, strict=True), start=1):
        if all(validators.is_valid_uid(uid) for uid in uids[:depth]):
            links[name] = reverse(f"dicom_explorer:{page}", args=[server.pk, *uids[:depth]])
    return links


@explorer_page
def search(request: HttpRequest) -> HttpResponse:
    """The search form; a search redirects to the page of what it names."""
    form = SearchForm(request.GET or None, user=request.user)
    if form.is_bound and form.is_valid():
        server = form.cleaned_data["server"]
        filters = form.study_filters()
        if not filters:
            return redirect("dicom_explorer:server_detail", server_id=server.pk)
        if list(filters) == ["PatientID"] and is_valid_id(filters["PatientID"]):
            return redirect(
                "dicom_explorer:patient_detail",
                server_id=server.pk,
                patient_id=filters["PatientID"],
            )
        url = reverse("dicom_explorer:study_list", kwargs={"server_id": server.pk})
        return redirect(f"{url}?{urllib.parse.urlencode(filters)}")
    problems = setup_problems(
        request.user,
        "the DICOM Explorer",
        sources=form.fields["server"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
    )
    return render(request, "dicom_explorer/search.html", {"form": form, "setup_problems": problems})


@explorer_page
def server_detail(request: HttpRequest, server_id: int) -> HttpResponse:
    server = _server(request, server_id)
    return render(request, "dicom_explorer/server_detail.html", {"server": server})


@explorer_page
def patient_list(request: HttpRequest, server_id: int) -> HttpResponse:
    server = _server(request, server_id)
    results = Explorer(server).patients(**query_filters(request.GET, Level.PATIENT))
    return _list_page(request, "patient_list.html", server, results)


@explorer_page
def patient_detail(request: HttpRequest, server_id: int, patient_id: str) -> HttpResponse:
    server = _server(request, server_id)
    explorer = Explorer(server)
    patient = explorer.patient(patient_id)
    studies = explorer.studies(PatientID=patient_id)
    context = {"patient": shown(patient, server), **_listed(studies, server)}
    return _page(request, "patient_detail.html", server, context)


@explorer_page
def study_list(request: HttpRequest, server_id: int) -> HttpResponse:
    server = _server(request, server_id)
    results = Explorer(server).studies(**query_filters(request.GET, Level.STUDY))
    return _list_page(request, "study_list.html", server, results)


@explorer_page
def study_detail(request: HttpRequest, server_id: int, study_uid: str) -> HttpResponse:
    server = _server(request, server_id)
    explorer = Explorer(server)
    study = explorer.study(study_uid)
    series = explorer.series(study_uid)
    context = {
        "study": shown(study, server),
        "transfer_query": _transfer_query(server, study),
        # What the selective transfer's download takes (a POST: no patient ID in a URL).
        "download_study": json.dumps(
            {
                "source": server.pk,
                "study_uid": study_uid,
                "patient_id": str(study.get("PatientID", "")),
            }
        ),
    }
    listed = _listed(series, server, StudyInstanceUID=study_uid)
    return _page(request, "study_detail.html", server, {**context, **listed})


@explorer_page
def series_list(request: HttpRequest, server_id: int, study_uid: str) -> HttpResponse:
    server = _server(request, server_id)
    explorer = Explorer(server)
    study = explorer.study(study_uid)
    results = explorer.series(study_uid, **query_filters(request.GET, Level.SERIES))
    return _list_page(request, "series_list.html", server, results, study=shown(study, server))


@explorer_page
def series_detail(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str
) -> HttpResponse:
    server = _server(request, server_id)
    explorer = Explorer(server)
    study = explorer.study(study_uid)
    series = explorer.one_series(study_uid, series_uid)
    instances = explorer.instances(study_uid, series_uid)
    context = {
        "study": shown(study, server),
        "series": shown(series, server),
        "no_image": non_image_reason(modality=str(series.get("Modality", ""))),
        "preview_url": reverse(
            "dicom_explorer:series_preview", args=[server.pk, study_uid, series_uid]
        ),
        **_listed(instances, server, StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid),
    }
    return _page(request, "series_detail.html", server, context)


# Whoever may transfer unpseudonymized data in some app may see it here too.
SEES_IDENTIFYING_DATA = (
    "selective_transfer.can_transfer_unpseudonymized",
    "batch_transfer.can_transfer_unpseudonymized",
)
MAX_VALUE_SHOWN = 200  # characters of a long text


@explorer_page
def instance_detail(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str, sop_uid: str
) -> HttpResponse:
    """The attributes of one instance; identifying values only for those who may see them."""
    server = _server(request, server_id)
    explorer = Explorer(server)
    study = explorer.study(study_uid)
    instance = explorer.instance(str(study.get("PatientID", "")), study_uid, series_uid, sop_uid)
    sees_all = any(request.user.has_perm(permission) for permission in SEES_IDENTIFYING_DATA)
    context = {
        "study": shown(study, server),
        "series_uid": series_uid,
        "series_url": reverse(
            "dicom_explorer:series_detail", args=[server.pk, study_uid, series_uid]
        ),
        "sop_uid": sop_uid,
        "attributes": list(_attributes(instance, sees_all)),
        "sees_all": sees_all,
    }
    return _page(request, "instance_detail.html", server, context)


def _attributes(dataset: Dataset, sees_all: bool):
    """(tag, keyword, VR, value as shown) of the top level of the dataset: binary values by
    their size, sequences by their number of items, identifying values hidden unless
    ``sees_all``."""
    for tag in list(dataset.keys()):
        # As read, before pydicom converts it: a large value spooled to disk stays there.
        raw = dataset.get_item(tag, keep_deferred=True)
        vr = str(raw.VR or _dictionary_vr(tag))
        binary = vr in BINARY_VRS or " or " in vr or tag == PIXEL_DATA_TAG
        if binary:
            text = _binary_size(raw)
        elif not sees_all and may_identify(tag, vr):
            text = "(hidden: may identify the patient)"
        else:
            try:
                text = _attribute_text(dataset[tag].value, vr)
            except Exception:  # a value pydicom cannot read (odd length, say)
                text = "(unreadable)"
        name = f"({tag.group:04X},{tag.element:04X})"
        yield name, keyword_for_tag(tag) or "(private or unknown)", vr, text


def _dictionary_vr(tag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _binary_size(raw) -> str:
    """The size of a binary value without reading it."""
    length = getattr(raw, "length", None)
    if length is None:  # converted already: in memory
        value = raw.value
        length = len(value) if isinstance(value, bytes | bytearray) else 0
    if length == 0xFFFFFFFF:
        return "encapsulated (compressed frames)"
    return f"{length} bytes"


def _attribute_text(value, vr: str) -> str:
    if vr == "SQ":
        return f"{len(value)} item(s)"
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    if len(text) > MAX_VALUE_SHOWN:
        text = f"{text[:MAX_VALUE_SHOWN]}… ({len(text)} characters)"
    return text


@explorer_page
def series_preview(
    request: HttpRequest, server_id: int, study_uid: str, series_uid: str
) -> HttpResponse:
    """The preview of the series' middle image, as a fragment the series page loads: the
    image, or why there is none."""
    try:
        explorer = Explorer(_server(request, server_id))
        explorer.check_uid(series_uid, "Series Instance UID")
        study = explorer.study(study_uid)
        patient_id = str(study.get("PatientID", ""))
        png = cached_series_preview(explorer.operator, patient_id, study_uid, series_uid)
    except ExplorerError as err:
        context = {"reason": f"No preview: {err.message}"}
        # As a fragment htmx swaps in (it leaves an error status unswapped): the reason shows.
        return render(request, "dicom_explorer/_preview.html", context)
    except PreviewUnavailable as unavailable:
        return render(request, "dicom_explorer/_preview.html", {"reason": unavailable.reason})
    image = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    return render(request, "dicom_explorer/_preview.html", {"image": image})


def _transfer_query(server: DicomServer, study: Dataset) -> str:
    """The selective transfer's search for the study: its patient, accession number, date."""
    values = {
        "source": server.pk,
        "patient_id": str(study.get("PatientID", "")),
        "accession_number": str(study.get("AccessionNumber", "")),
        "study_date": shown(study).get("StudyDate", ""),
    }
    return urllib.parse.urlencode({key: value for key, value in values.items() if value})


def _listed(results, server: DicomServer, **page_uids: str) -> dict:
    rows = [shown(item, server, page_uids) for item in results.items]
    return {"rows": rows, "more": results.more}


def _list_page(request, template: str, server, results, **context) -> HttpResponse:
    page_uids = {}
    if study := context.get("study"):
        page_uids["StudyInstanceUID"] = study.get("StudyInstanceUID", "")
    return _page(request, template, server, {**_listed(results, server, **page_uids), **context})


def _page(request, template: str, server, context: dict) -> HttpResponse:
    return render(
        request,
        f"dicom_explorer/{template}",
        {"server": server, "max_results": MAX_RESULTS, **context},
    )
