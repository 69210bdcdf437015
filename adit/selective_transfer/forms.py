"""The selective transfer form: where from, where to, how, and what to search for."""

from __future__ import annotations

import datetime
from typing import NamedTuple

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from adit.core import validators
from adit.core.access import usable_nodes
from adit.core.models import DicomNode
from adit.core.transfer.forms import TransferOptionsForm

from .models import SelectiveTransferJob

MAX_STUDIES_FOR_NON_STAFF = 10
MAX_SEARCH_RESULTS = 100
MAX_PATIENT_ID_LENGTH = 64


PREFERENCE_FIELDS = ("source", "destination", "urgent", "send_finished_mail")


def person_name_query(text: str) -> str:
    """A name as people type it ("Müller, Hans" or "Müller^Hans") as a DICOM PN pattern: each
    given part becomes a prefix match ("Müller*^Hans*"); explicit wildcards are kept."""
    text = text.strip()
    if not text or "^" in text:
        return text
    parts = [part.strip() for part in text.split(",")]
    patterns = [part if part.endswith("*") or not part else f"{part}*" for part in parts]
    return "^".join(patterns)


class StudyReference(NamedTuple):
    """A study as a results row names it: ``PatientID\\StudyInstanceUID`` (the backslash, DICOM's
    value separator, cannot occur in either)."""

    patient_id: str
    study_uid: str

    def __str__(self) -> str:
        return f"{self.patient_id}\\{self.study_uid}"


def patient_id_problem(patient_id: str) -> str:
    """Why a patient ID cannot name a study in a query or a task ("" if it can)."""
    if len(patient_id) > MAX_PATIENT_ID_LENGTH:
        return f"the patient ID is longer than {MAX_PATIENT_ID_LENGTH} characters"
    try:
        validators.validate_query_value(patient_id)
    except ValidationError:
        return "the patient ID contains a backslash or control characters"
    return ""


def study_uid_problem(study_uid: str) -> str:
    """Why a Study Instance UID cannot name a study ("" if it can)."""
    if not study_uid:
        return "the Study Instance UID is missing"
    if not validators.is_valid_uid(study_uid):
        return (
            f"the Study Instance UID {validators.shown(study_uid)} is not a valid DICOM UID "
            "(digits and dots, at most 64)"
        )
    return ""


class StudyReferencesField(forms.Field):
    """The studies ticked in the results, each ``PatientID\\StudyInstanceUID``."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[StudyReference]:
        if value in self.empty_values:
            return []
        if not isinstance(value, list | tuple):
            value = [value]
        if len(value) > MAX_SEARCH_RESULTS:
            raise ValidationError(
                f"At most {MAX_SEARCH_RESULTS} studies can be selected at once (a search shows "
                "no more).",
                code="too_many",
            )
        studies: dict[StudyReference, None] = {}  # ordered, without repetitions
        for item in value:
            patient_id, separator, study_uid = str(item).partition("\\")
            problem = (
                "it does not name a patient ID and a Study Instance UID"
                if not separator
                else patient_id_problem(patient_id) or study_uid_problem(study_uid)
            )
            if problem:
                raise ValidationError(
                    f"{validators.shown(str(item))} is not a study of the results: {problem}.",
                    code="invalid",
                )
            studies[StudyReference(patient_id, study_uid)] = None
        return list(studies)


class SelectiveTransferForm(TransferOptionsForm):
    """Bound to the user: it offers only the nodes and options their active group allows.

    The transfer options (destination to send_finished_mail) come from TransferOptionsForm.
    """

    job_model = SelectiveTransferJob
    field_order = [  # as before the transfer options moved to the shared base form
        "source",
        "destination",
        "patient_id",
        "patient_name",
        "patient_birth_date",
        "study_date",
        "study_date_until",
        "modality",
        "accession_number",
        "pseudonym",
        "project",
        "trial_protocol_id",
        "trial_protocol_name",
        "archive_password",
        "convert_to_nifti",
        "urgent",
        "send_finished_mail",
        "selected_studies",
    ]

    source = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label="Choose a source"
    )

    patient_id = forms.CharField(
        label="Patient ID", max_length=64, required=False,
        validators=[validators.validate_query_value],
    )  # fmt: skip
    patient_name = forms.CharField(
        label="Patient name",
        max_length=324,
        required=False,
        validators=[validators.validate_query_value],
        help_text='"Last, First", with * and ? as wildcards.',
    )
    patient_birth_date = forms.DateField(label="Birth date", required=False)
    study_date = forms.DateField(label="Study date", required=False)
    study_date_until = forms.DateField(
        label="until", required=False, help_text="Leave empty to search one day."
    )
    modality = forms.CharField(
        max_length=64,
        required=False,
        validators=[validators.validate_query_value],
        help_text="One or more, comma-separated (CT, MR).",
    )
    accession_number = forms.CharField(
        label="Accession #", max_length=32, required=False,
        validators=[validators.validate_query_value],
    )  # fmt: skip
    selected_studies = StudyReferencesField(label="Selected studies", required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        # Fields the message sent in a shape no form field accepts (see from_message).
        self.shape_errors: dict[str, str] = {}
        self.fields["source"].queryset = usable_nodes(user, "source", servers_only=True)  # pyright: ignore[reportAttributeAccessIssue]

    @classmethod
    def from_message(cls, message: dict, *, user) -> SelectiveTransferForm:
        """The form bound to a JSON message of the page (htmx's ws-send).

        A browser sends each field as a string, ticked boxes as a list of them. Anything else
        (a list for a single field, an object, text that is not valid Unicode) becomes an error
        of that field instead of reaching the field's own cleaning.
        """
        data = QueryDict(mutable=True)
        shape_errors: dict[str, str] = {}
        for name, field in cls.base_fields.items():
            value = message.get(name)
            if value is None:
                continue
            many = isinstance(field.widget, forms.MultipleHiddenInput)
            values = value if many and isinstance(value, list) else [value]
            texts = [text for item in values if (text := _as_text(item)) is not None]
            if not many and isinstance(value, list):
                shape_errors[name] = "Expected one value, not a list."
            elif len(texts) != len(values):
                shape_errors[name] = "Expected text, a number or a checkbox value."
            else:
                data.setlist(name, texts)
        form = cls(data, user=user)
        form.shape_errors = shape_errors
        return form

    @property
    def may_download(self) -> bool:
        return self.user.has_perm("selective_transfer.can_download_study")

    def clean(self):
        cleaned = super().clean() or {}
        for name, error in getattr(self, "shape_errors", {}).items():
            if name in self.fields:
                self.add_error(name, error)
        start, end = cleaned.get("study_date"), cleaned.get("study_date_until")
        if end and not start:
            self.add_error("study_date", "Give the first day of the range too.")
        elif start and end and end < start:
            self.add_error("study_date_until", "The range must not end before it starts.")
        if cleaned.get("modality"):
            modalities = [item.strip().upper() for item in cleaned["modality"].split(",")]
            if any(item and not validators.MODALITY_CODE.fullmatch(item) for item in modalities):
                self.add_error("modality", "Modalities are letters like CT or MR, comma-separated.")
            cleaned["modalities"] = [item for item in modalities if item]
        return cleaned

    # -- searching ------------------------------------------------------------------------

    def search_filters(self) -> dict:
        """The study-level query of the search fields (call after is_valid())."""
        data = self.cleaned_data
        start: datetime.date | None = data.get("study_date")
        end: datetime.date | None = data.get("study_date_until")
        study_date = (start, end) if start and end else start
        return {
            "PatientID": data.get("patient_id", ""),
            "PatientName": person_name_query(data.get("patient_name", "")),
            "PatientBirthDate": data.get("patient_birth_date"),
            "StudyDate": study_date,
            "ModalitiesInStudy": data.get("modalities", []),
            "AccessionNumber": data.get("accession_number", ""),
        }

    @property
    def has_search_terms(self) -> bool:
        return any(value for value in self.search_filters().values())

    # -- transferring -----------------------------------------------------------------------

    def check_transfer(self) -> None:
        """Adds the errors that stop a transfer (beyond those of the search); call after
        is_valid().

        Raises:
            ValidationError: If the selection is empty or too large for the user.
        """
        self.check_transfer_options()
        data = self.cleaned_data
        selected = len(data.get("selected_studies", []))
        if selected == 0:
            raise ValidationError("At least one study to transfer must be selected.")
        if selected > MAX_STUDIES_FOR_NON_STAFF and not self.user.is_staff:
            raise ValidationError(
                f"Maximum {MAX_STUDIES_FOR_NON_STAFF} studies per selective transfer are allowed."
            )

    def preferences(self) -> dict:
        data = self.cleaned_data
        return {
            "source": data["source"].pk if data.get("source") else None,
            "destination": data["destination"].pk if data.get("destination") else None,
            "urgent": bool(data.get("urgent")),
            "send_finished_mail": bool(data.get("send_finished_mail")),
        }


def _as_text(value) -> str | None:
    """A JSON scalar as a browser would send it in a form; None for anything else."""
    if isinstance(value, bool):  # before int: a bool is one
        return "on" if value else ""
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
            return None
        return value
    return None
