"""The transfer options every app that starts transfer jobs offers: where the studies go, under
which pseudonym, project and trial, how urgently, packed how, and whether to mail at the end.

An app's form subclasses TransferOptionsForm and names its job model; the permission checks
("may transfer unpseudonymized", "may process urgently") are those of that model's app. The
checked options come out as a TransferChoices, which fills the job and its tasks.
"""

from __future__ import annotations

from typing import ClassVar

from django import forms

from adit.core import validators
from adit.core.access import usable_nodes, usable_projects
from adit.core.models import DicomNode, Project
from adit.core.transfer.models import TransferJob
from adit.core.transfer.options import (
    MAX_ARCHIVE_PASSWORD_LENGTH,
    TransferChoices,
    TransferRights,
    transfer_option_problems,
)

__all__ = ["TransferChoices", "TransferOptionsForm", "trial_fields"]


def trial_fields() -> tuple[forms.CharField, forms.CharField]:
    """The trial ID and name fields of every form whose data is pseudonymized (written to
    ClinicalTrialProtocolID and ClinicalTrialProtocolName)."""

    def field(label: str) -> forms.CharField:
        return forms.CharField(
            label=label, max_length=64, required=False, validators=[validators.validate_query_value]
        )

    return field("Trial ID"), field("Trial name")


class TransferOptionsForm(forms.Form):
    """The transfer options, bound to the user: it offers only the destinations and projects
    of their active group, and urgency only to those who may use it.

    Subclasses set ``job_model``. The options are not required by ``is_valid()`` (a form may
    serve a search too); call ``check_transfer_options()`` where a transfer is asked for.
    """

    job_model: ClassVar[type[TransferJob]]
    # False for a form whose studies bring their own pseudonyms (a batch file's lines): it has
    # no pseudonym field, and its app checks the pseudonyms where they come from.
    one_pseudonym_for_all: ClassVar[bool] = True

    destination = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label="Choose a destination", required=False
    )
    pseudonym = forms.CharField(
        max_length=validators.MAX_PSEUDONYM_LENGTH,
        required=False,
        strip=False,  # a pseudonym with spaces around it is an error, not another pseudonym
        validators=[validators.validate_pseudonym],
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        empty_label="No project (pseudonyms only stable within this job)",
        help_text="Jobs of one project give a patient the same pseudonymized UIDs.",
    )
    trial_protocol_id, trial_protocol_name = trial_fields()
    archive_password = forms.CharField(
        max_length=MAX_ARCHIVE_PASSWORD_LENGTH,
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
        self.fields["destination"].queryset = usable_nodes(user, "destination")  # pyright: ignore[reportAttributeAccessIssue]
        self.fields["project"].queryset = usable_projects(user)  # pyright: ignore[reportAttributeAccessIssue]
        if not self.may_process_urgently:
            del self.fields["urgent"]
        if not self.one_pseudonym_for_all:
            del self.fields["pseudonym"]
        elif not self.may_transfer_unpseudonymized:
            self.fields["pseudonym"].help_text = "Required: you may only transfer pseudonymized."
        else:
            self.fields["pseudonym"].help_text = "Leave empty to transfer unpseudonymized."

    @property
    def rights(self) -> TransferRights:
        return TransferRights.of(self.user, self.job_model)

    @property
    def may_process_urgently(self) -> bool:
        return self.rights.may_process_urgently

    @property
    def may_transfer_unpseudonymized(self) -> bool:
        return self.rights.may_transfer_unpseudonymized

    def check_transfer_options(self) -> None:
        """Adds the errors that stop a transfer with these options; call after is_valid()."""
        data = self.cleaned_data
        problems = transfer_option_problems(
            self.rights,
            destination=data.get("destination"),
            # A form without the pseudonym field leaves the pseudonyms to its app.
            pseudonymized=bool(data.get("pseudonym")) or not self.one_pseudonym_for_all,
            archive_password=bool(data.get("archive_password")),
            convert_to_nifti=bool(data.get("convert_to_nifti")),
            urgent=bool(data.get("urgent")),  # offered only to those who may
        )
        for name, problem in problems.items():
            self.add_error(name, problem)

    def transfer_choices(self) -> TransferChoices:
        """The checked options; call only once the form is valid and check_transfer_options()
        added no error."""
        assert not self.errors, "transfer options of a form with errors"
        data = self.cleaned_data
        return TransferChoices(
            destination=data["destination"],
            pseudonym=data.get("pseudonym", ""),
            project=data.get("project"),
            trial_protocol_id=data.get("trial_protocol_id", ""),
            trial_protocol_name=data.get("trial_protocol_name", ""),
            urgent=bool(data.get("urgent")) and self.may_process_urgently,
            archive_password=data.get("archive_password", ""),
            convert_to_nifti=bool(data.get("convert_to_nifti")),
            send_finished_mail=bool(data.get("send_finished_mail")),
        )
