"""The batch transfer form: the core's transfer options, a source, the project (an existing
one or a new one), the ethics approval and the batch file, checked line by line."""

from __future__ import annotations

import dataclasses
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from adit.core import validators
from adit.core.access import usable_nodes
from adit.core.forms import BatchFileField, BatchFileProblems, RememberedChoices, style_fields
from adit.core.models import DicomNode, Project
from adit.core.transfer.forms import TransferOptionsForm

from .batch_file import BatchFile, max_lines_for, read_batch_file, read_batch_rows
from .models import BatchTransferJob


class BatchFileReading(BatchFileProblems):
    """Reads the uploaded batch file (or the REST API's rows) for the form's user; the
    problems, if any, for the page."""

    user: Any  # the form's user
    batch: BatchFile | None

    @property
    def may_transfer_unpseudonymized(self) -> bool:
        return self.user.has_perm("batch_transfer.can_transfer_unpseudonymized")

    @property
    def max_lines(self) -> int | None:
        return max_lines_for(self.user)

    def read_upload(self, upload) -> BatchFile:
        rules = {
            "max_lines": self.max_lines,
            "pseudonym_required": not self.may_transfer_unpseudonymized,
        }
        self.batch = self.read_batch(
            upload,
            lambda data, filename: read_batch_file(data, filename, **rules),
            lambda rows: read_batch_rows(rows, **rules),
        )
        return self.batch


class BatchTransferJobForm(BatchFileReading, RememberedChoices, TransferOptionsForm):
    """Bound to the user: it offers the nodes and projects of their active group, and creates
    nothing unless every line of the file is usable. The REST API passes the lines as ``rows``
    instead of a file."""

    job_model = BatchTransferJob
    one_pseudonym_for_all = False  # each line brings its own
    preference_fields = ("source", "destination", "urgent", "send_finished_mail")

    source = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label=None, help_text="The PACS to fetch from."
    )
    new_project_name = forms.CharField(
        label="or a new project",
        max_length=64,
        required=False,
        validators=[validators.validate_query_value],
        help_text="A new project of your group, named here.",
    )
    project_description = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    ethics_application_id = forms.CharField(
        label="Ethics committee approval",
        max_length=100,
        required=False,
        help_text="The approval's number or reference, as the ethics committee issued it.",
    )
    check_first = forms.BooleanField(
        label="Check the studies at the source before transferring",
        required=False,
        initial=True,
        help_text="Shows which studies the source holds before anything moves; leave it off "
        "for a file exported by a batch query, whose studies were just found.",
    )
    batch_file = BatchFileField(what_per_line="one study or series per line")

    field_order = [
        "source",
        "destination",
        "project",
        "new_project_name",
        "project_description",
        "ethics_application_id",
        "trial_protocol_id",
        "trial_protocol_name",
        "batch_file",
        "check_first",
        "archive_password",
        "convert_to_nifti",
        "urgent",
        "send_finished_mail",
    ]

    def __init__(self, *args, user, rows: object = None, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        self.problems = []
        self.batch = None
        self.take_rows(rows)
        self.fields["source"].queryset = usable_nodes(user, "source", servers_only=True)  # pyright: ignore[reportAttributeAccessIssue]
        self.fields["project"].empty_label = "No project (pseudonyms only stable within this job)"  # pyright: ignore[reportAttributeAccessIssue]
        if settings.ETHICS_COMMITTEE_APPROVAL_REQUIRED:
            self.fields["ethics_application_id"].required = True
        style_fields(self)

    def clean_batch_file(self):
        upload = self.cleaned_data["batch_file"]
        self.read_upload(upload)
        return upload

    def clean(self):
        cleaned = super().clean() or {}
        self.check_transfer_options()
        new_name = cleaned.get("new_project_name", "").strip()
        cleaned["new_project_name"] = new_name
        if new_name and cleaned.get("project"):
            self.add_error("new_project_name", "Choose a project or name a new one, not both.")
        elif new_name:
            existing = Project.objects.filter(name__iexact=new_name).first()
            if existing is None:
                pass
            elif self.fields["project"].queryset.filter(pk=existing.pk).exists():  # pyright: ignore[reportAttributeAccessIssue]
                cleaned["project"], cleaned["new_project_name"] = existing, ""
            else:
                self.add_error(
                    "new_project_name",
                    f"A project named {existing.name} exists and is not one of your group's; "
                    "choose another name.",
                )
        return cleaned

    def create_job(self) -> BatchTransferJob:
        """Creates the job (and the new project, if one was named). Raises ValidationError
        (PseudonymConflict if the file contradicts the project's pseudonyms), creating
        nothing."""
        assert self.is_valid() and self.batch is not None
        data = self.cleaned_data
        choices = self.transfer_choices()
        with transaction.atomic():
            if data["new_project_name"]:
                project = _new_project(
                    data["new_project_name"], data["project_description"], self.user.active_group
                )
                choices = dataclasses.replace(choices, project=project)
            return BatchTransferJob.create_with_tasks(
                owner=self.user,
                source=data["source"],
                studies=self.batch.studies,
                options=choices,
                check_first=data["check_first"],
                project_description=data["project_description"],
                ethics_application_id=data["ethics_application_id"],
                skipped_lines=self.batch.skipped_lines,
            )


def _new_project(name: str, description: str, group) -> Project:
    """The project, of the group; ValidationError if somebody took the name a moment ago
    (after the form checked it)."""
    try:
        with transaction.atomic():
            project = Project.objects.create(name=name, description=description)
    except IntegrityError:
        raise ValidationError(
            f"A project named {name} was created meanwhile; choose it, or another name."
        ) from None
    project.groups.add(group)
    return project


class CorrectedFileForm(BatchFileReading, forms.Form):
    """A corrected batch file for a job still being checked."""

    batch_file = BatchFileField(label="Corrected batch file", what_per_line="one study per line")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.problems = []
        self.batch = None

    def clean_batch_file(self):
        upload = self.cleaned_data["batch_file"]
        self.read_upload(upload)
        return upload
