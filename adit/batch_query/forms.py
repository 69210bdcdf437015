"""The batch query form: a source, a project and the batch file, checked line by line."""

from __future__ import annotations

from django import forms

from adit.core.access import usable_nodes
from adit.core.forms import BatchFileField, BatchFileProblems, RememberedChoices
from adit.core.models import DicomNode
from adit.core.sheet_reader import SheetProblem

from .batch_file import max_lines_for, read_batch_file, read_batch_rows
from .models import BatchQueryJob, BatchQueryTask


class BatchQueryJobForm(BatchFileProblems, RememberedChoices, forms.ModelForm):
    """Bound to the user: it offers the servers their active group may query, and creates
    nothing unless every line of the file is usable. The REST API passes the lines as ``rows``
    instead of a file."""

    source = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label=None, help_text="The PACS to query."
    )
    batch_file = BatchFileField(what_per_line="one query per line")
    preference_fields = ("source", "urgent", "send_finished_mail")

    class Meta:
        model = BatchQueryJob
        fields = ("project_name", "project_description", "urgent", "send_finished_mail")
        labels = {"send_finished_mail": "Send an e-mail when the job is finished"}
        help_texts = {"urgent": "Process before other jobs."}
        widgets = {"project_description": forms.Textarea(attrs={"rows": 3})}

    field_order = ["source", "project_name", "project_description", "batch_file", "urgent"]

    def __init__(self, *args, user, rows: object = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.tasks: list[BatchQueryTask] = []
        self.problems: list[SheetProblem] = []
        self.take_rows(rows)
        self.fields["source"].queryset = usable_nodes(user, "source", servers_only=True)  # pyright: ignore[reportAttributeAccessIssue]
        if not user.has_perm("batch_query.can_process_urgently"):
            del self.fields["urgent"]

    def clean_batch_file(self):
        upload = self.cleaned_data["batch_file"]
        max_lines = max_lines_for(self.user)
        batch = self.read_batch(
            upload,
            lambda data, filename: read_batch_file(data, filename, max_lines=max_lines),
            lambda rows: read_batch_rows(rows, max_lines=max_lines),
        )
        self.tasks = batch.tasks
        return upload

    def create_job(self) -> BatchQueryJob:
        assert self.is_valid()
        return BatchQueryJob.create_with_tasks(
            owner=self.user,
            source=self.cleaned_data["source"],
            tasks=self.tasks,
            project_name=self.cleaned_data["project_name"],
            project_description=self.cleaned_data["project_description"],
            urgent=self.cleaned_data.get("urgent", False),
            send_finished_mail=self.cleaned_data["send_finished_mail"],
        )
