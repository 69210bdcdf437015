"""The selective transfer form: where from, where to, how, and what to search for."""

from __future__ import annotations

import datetime

from django import forms
from django.core.exceptions import ValidationError

from adit.core import validators
from adit.core.models import DicomNode, Project

MAX_STUDIES_FOR_NON_STAFF = 10
MAX_SEARCH_RESULTS = 100

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


class NodeChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return str(obj)


class SelectiveTransferForm(forms.Form):
    """Bound to the user: it offers only the nodes and options their active group allows."""

    source = NodeChoiceField(queryset=DicomNode.objects.none(), empty_label="Choose a source")
    destination = NodeChoiceField(
        queryset=DicomNode.objects.none(), empty_label="Choose a destination", required=False
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

    pseudonym = forms.CharField(
        max_length=64, required=False, validators=[validators.validate_query_value]
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="No project (pseudonyms only stable within this job)",
        help_text="Jobs of one project give a patient the same pseudonymized UIDs.",
    )
    trial_protocol_id = forms.CharField(
        label="Trial ID", max_length=64, required=False,
        validators=[validators.validate_query_value],
    )  # fmt: skip
    trial_protocol_name = forms.CharField(
        label="Trial name", max_length=64, required=False,
        validators=[validators.validate_query_value],
    )  # fmt: skip
    archive_password = forms.CharField(
        max_length=50,
        required=False,
        widget=forms.PasswordInput(render_value=True),
        help_text="Folder destinations only: each study is written as an encrypted ZIP.",
    )
    convert_to_nifti = forms.BooleanField(label="Convert to NIfTI", required=False)
    urgent = forms.BooleanField(required=False, help_text="Process before other jobs.")
    send_finished_mail = forms.BooleanField(
        label="Send an e-mail when the job is finished", required=False
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        sources = DicomNode.objects.accessible_by_user(user, "source")
        self.fields["source"].queryset = sources.filter(  # pyright: ignore[reportAttributeAccessIssue]
            node_type=DicomNode.NodeType.SERVER
        )
        self.fields["destination"].queryset = DicomNode.objects.accessible_by_user(  # pyright: ignore[reportAttributeAccessIssue]
            user, "destination"
        )
        self.fields["project"].queryset = Project.objects.filter(  # pyright: ignore[reportAttributeAccessIssue]
            groups__id=user.active_group_id
        ).distinct()
        if not self.may_process_urgently:
            del self.fields["urgent"]
        if not self.may_transfer_unpseudonymized:
            self.fields["pseudonym"].help_text = "Required: you may only transfer pseudonymized."
        else:
            self.fields["pseudonym"].help_text = "Leave empty to transfer unpseudonymized."

    @property
    def may_process_urgently(self) -> bool:
        return self.user.has_perm("selective_transfer.can_process_urgently")

    @property
    def may_transfer_unpseudonymized(self) -> bool:
        return self.user.has_perm("selective_transfer.can_transfer_unpseudonymized")

    @property
    def may_download(self) -> bool:
        return self.user.has_perm("selective_transfer.can_download_study")

    def clean(self):
        cleaned = super().clean() or {}
        start, end = cleaned.get("study_date"), cleaned.get("study_date_until")
        if end and not start:
            self.add_error("study_date", "Give the first day of the range too.")
        elif start and end and end < start:
            self.add_error("study_date_until", "The range must not end before it starts.")
        if cleaned.get("modality"):
            modalities = [item.strip().upper() for item in cleaned["modality"].split(",")]
            if any(not item.isalnum() for item in modalities):
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

    def check_transfer(self, selected_count: int) -> None:
        """Adds the errors that stop a transfer (beyond those of the search)."""
        data = self.cleaned_data
        destination = data.get("destination")
        if destination is None:
            self.add_error("destination", "Choose where the studies go.")
        if not data.get("pseudonym") and not self.may_transfer_unpseudonymized:
            self.add_error("pseudonym", "This field is required.")
        if data.get("archive_password") and destination is not None:
            if destination.node_type != DicomNode.NodeType.FOLDER:
                self.add_error(
                    "archive_password", "An archive password only works for folder destinations."
                )
        if data.get("convert_to_nifti") and destination is not None:
            if destination.node_type != DicomNode.NodeType.FOLDER:
                self.add_error(
                    "convert_to_nifti", "NIfTI conversion only works for folder destinations."
                )
        if selected_count == 0:
            raise ValidationError("At least one study to transfer must be selected.")
        if selected_count > MAX_STUDIES_FOR_NON_STAFF and not self.user.is_staff:
            raise ValidationError(
                f"Maximum {MAX_STUDIES_FOR_NON_STAFF} studies per selective transfer are allowed."
            )

    def job_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "urgent": bool(data.get("urgent")) and self.may_process_urgently,
            "send_finished_mail": bool(data.get("send_finished_mail")),
            "trial_protocol_id": data.get("trial_protocol_id", ""),
            "trial_protocol_name": data.get("trial_protocol_name", ""),
            "project": data.get("project"),
            "archive_password": data.get("archive_password", ""),
            "convert_to_nifti": bool(data.get("convert_to_nifti")),
        }

    def preferences(self) -> dict:
        data = self.cleaned_data
        return {
            "source": data["source"].pk if data.get("source") else None,
            "destination": data["destination"].pk if data.get("destination") else None,
            "urgent": bool(data.get("urgent")),
            "send_finished_mail": bool(data.get("send_finished_mail")),
        }
