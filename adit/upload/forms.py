"""The upload form: the pseudonym and where the files go, checked before the browser sends."""

from __future__ import annotations

from django import forms

from adit.core import validators
from adit.core.access import usable_nodes, usable_projects
from adit.core.models import DicomNode, Project
from adit.core.transfer.forms import trial_fields

# A CD or a folder of one patient; more is a batch transfer's work, not a browser's.
MAX_FILES = 100_000


class UploadForm(forms.Form):
    pseudonym = forms.CharField(
        max_length=validators.MAX_PSEUDONYM_LENGTH,
        strip=False,  # a pseudonym with spaces around it is an error, not another pseudonym
        validators=[validators.validate_pseudonym],
        help_text="Becomes the patient's ID and name in every file.",
    )
    destination = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label="Choose a destination"
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="No project (new UIDs only consistent within this upload)",
        help_text="Uploads of one project give the same original UID the same new one.",
    )
    trial_protocol_id, trial_protocol_name = trial_fields()
    # What the browser found in the chosen files before it sends any.
    files_total = forms.IntegerField(min_value=1, max_value=MAX_FILES, widget=forms.HiddenInput)
    files_skipped = forms.IntegerField(
        min_value=0, max_value=10 * MAX_FILES, required=False, widget=forms.HiddenInput
    )
    files_unreadable = forms.IntegerField(
        min_value=0, max_value=10 * MAX_FILES, required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["destination"].queryset = usable_nodes(user, "destination")  # pyright: ignore[reportAttributeAccessIssue]
        self.fields["project"].queryset = usable_projects(user)  # pyright: ignore[reportAttributeAccessIssue]
        self.fields["files_total"].error_messages["required"] = "Choose the files to upload first."

    def job_fields(self) -> dict:
        """Keyword arguments of ``UploadJob.start``; call once the form is valid."""
        data = self.cleaned_data
        return {
            "destination": data["destination"],
            "files_total": data["files_total"],
            "pseudonym": data["pseudonym"],
            "project": data["project"],
            "trial_protocol_id": data["trial_protocol_id"],
            "trial_protocol_name": data["trial_protocol_name"],
            "files_skipped": data["files_skipped"] or 0,
            "files_unreadable": data["files_unreadable"] or 0,
        }
