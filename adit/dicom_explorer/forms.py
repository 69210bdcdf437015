"""The explorer's search form: a server and what to look for there."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from adit.core import validators
from adit.core.access import usable_nodes
from adit.core.forms import style_fields
from adit.core.models import DicomNode


def _no_wildcards(value: str) -> None:
    if "*" in value or "?" in value:
        raise ValidationError("Must not contain wildcards (* or ?): it names one.")


class SearchForm(forms.Form):
    server = forms.ModelChoiceField(queryset=DicomNode.objects.none(), empty_label=None)
    patient_id = forms.CharField(
        label="Patient ID",
        max_length=64,
        required=False,
        validators=[validators.validate_query_value, _no_wildcards],
    )
    accession_number = forms.CharField(
        label="Accession number",
        max_length=32,
        required=False,
        validators=[validators.validate_query_value, _no_wildcards],
    )
    patient_name = forms.CharField(
        label="Patient name",
        max_length=324,
        required=False,
        validators=[validators.validate_query_value],
        help_text='"Last^First", with * as a wildcard.',
    )
    study_date_from = forms.DateField(label="Study date from", required=False)
    study_date_until = forms.DateField(label="until", required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = usable_nodes(user, "source", servers_only=True)  # pyright: ignore[reportAttributeAccessIssue]
        style_fields(self)
        for field in self.fields.values():
            if isinstance(field, forms.DateField):
                field.widget.input_type = "date"  # pyright: ignore[reportAttributeAccessIssue]

    def clean(self):
        cleaned = super().clean() or {}
        start, end = cleaned.get("study_date_from"), cleaned.get("study_date_until")
        if start and end and end < start:
            self.add_error("study_date_until", "The range must not end before it starts.")
        return cleaned

    def study_filters(self) -> dict[str, str]:
        """The study query of the fields other than the server (empty: none given)."""
        data = self.cleaned_data
        filters = {
            "PatientID": data.get("patient_id", ""),
            "AccessionNumber": data.get("accession_number", ""),
            "PatientName": data.get("patient_name", ""),
        }
        start, end = data.get("study_date_from"), data.get("study_date_until")
        if start or end:
            first = f"{start:%Y%m%d}" if start else ""
            last = f"{end:%Y%m%d}" if end else ""
            filters["StudyDate"] = first if first == last else f"{first}-{last}"
        return {key: value for key, value in filters.items() if value}
