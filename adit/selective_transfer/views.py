from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import render

from adit.core.access import setup_problems

from .forms import MAX_SEARCH_RESULTS, MAX_STUDIES_FOR_NON_STAFF, SelectiveTransferForm

SEARCH_FIELDS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "study_date",
    "study_date_until",
    "modality",
    "accession_number",
)
OPTION_FIELDS = ("project", "trial_protocol_id", "trial_protocol_name")
CHECKBOX_FIELDS = ("urgent", "send_finished_mail", "convert_to_nifti")
PREFILLED_FIELDS = ("source", "patient_id", "accession_number", "study_date")


@permission_required("selective_transfer.add_selectivetransferjob", raise_exception=True)
def job_create(request: HttpRequest) -> HttpResponse:
    """The search-and-transfer page; searching and transferring go over its WebSocket."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"], "This form works through its WebSocket only.")
    preferences = request.user.preferences_of("selective_transfer")  # pyright: ignore[reportAttributeAccessIssue]
    # A link from elsewhere (the DICOM explorer's study page) may name the source and a study.
    named = {name: request.GET[name] for name in PREFILLED_FIELDS if request.GET.get(name)}
    form = SelectiveTransferForm(initial={**preferences, **named}, user=request.user)
    _style(form)
    context = {
        "setup_problems": setup_problems(
            request.user,
            "Selective Transfer",
            sources=form.fields["source"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
            destinations=form.fields["destination"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
        ),
        "form": form,
        "destinations": form.fields["destination"].queryset,  # pyright: ignore[reportAttributeAccessIssue]
        "search_fields": [form[name] for name in SEARCH_FIELDS],
        "option_fields": [form[name] for name in OPTION_FIELDS],
        "checkbox_fields": [form[name] for name in CHECKBOX_FIELDS if name in form.fields],
        "websocket_path": "/ws/selective-transfer",
        "max_studies": MAX_STUDIES_FOR_NON_STAFF,
        "max_results": MAX_SEARCH_RESULTS,
        "excluded_modalities": ", ".join(settings.EXCLUDE_MODALITIES),
    }
    return render(request, "selective_transfer/job_form.html", context)


def _style(form: SelectiveTransferForm) -> None:
    for name, field in form.fields.items():
        widget = field.widget
        if widget.input_type == "checkbox":  # pyright: ignore[reportAttributeAccessIssue]
            continue
        css = "form-select" if widget.input_type == "select" else "form-control"  # pyright: ignore[reportAttributeAccessIssue]
        widget.attrs.setdefault("class", css)
        if widget.input_type == "date" or name.endswith("date") or name.endswith("until"):  # pyright: ignore[reportAttributeAccessIssue]
            widget.input_type = "date"  # pyright: ignore[reportAttributeAccessIssue]
        widget.attrs.setdefault("data-testid", name.replace("_", "-"))
