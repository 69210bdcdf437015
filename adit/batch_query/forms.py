"""The batch query form: a source, a project and the batch file, checked line by line."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from adit.core.access import usable_nodes
from adit.core.models import DicomNode
from adit.core.sheet_reader import MAX_FILE_BYTES, SheetError, SheetProblem

from .batch_file import MAX_LINES_FOR_NON_STAFF, read_batch_file
from .models import BatchQueryJob, BatchQueryTask

PREFERENCE_FIELDS = ("source", "urgent", "send_finished_mail")
# A file full of mistakes would make a page of thousands; the first ones show the pattern.
MAX_PROBLEMS_SHOWN = 200


class BatchQueryJobForm(forms.ModelForm):
    """Bound to the user: it offers the servers their active group may query, and creates
    nothing unless every line of the file is usable."""

    source = forms.ModelChoiceField(
        queryset=DicomNode.objects.none(), empty_label=None, help_text="The PACS to query."
    )
    batch_file = forms.FileField(
        help_text="An Excel workbook (.xlsx) or a CSV file (.csv) of at most "
        f"{MAX_FILE_BYTES // 2**20} MB, one query per line."
    )

    class Meta:
        model = BatchQueryJob
        fields = ("project_name", "project_description", "urgent", "send_finished_mail")
        labels = {"send_finished_mail": "Send an e-mail when the job is finished"}
        help_texts = {"urgent": "Process before other jobs."}
        widgets = {"project_description": forms.Textarea(attrs={"rows": 3})}

    field_order = ["source", "project_name", "project_description", "batch_file", "urgent"]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.tasks: list[BatchQueryTask] = []
        self.problems: list[SheetProblem] = []
        self.fields["source"].queryset = usable_nodes(user, "source", servers_only=True)  # pyright: ignore[reportAttributeAccessIssue]
        if not user.has_perm("batch_query.can_process_urgently"):
            del self.fields["urgent"]

    @property
    def max_lines(self) -> int | None:
        return None if self.user.is_staff else MAX_LINES_FOR_NON_STAFF

    @property
    def problems_shown(self) -> list[SheetProblem]:
        return self.problems[:MAX_PROBLEMS_SHOWN]

    def clean_batch_file(self):
        upload = self.cleaned_data["batch_file"]
        if upload.size > MAX_FILE_BYTES:
            raise ValidationError(
                f"The file is larger than {MAX_FILE_BYTES // 2**20} MB; split it into smaller ones."
            )
        try:
            batch = read_batch_file(upload.read(), upload.name, max_lines=self.max_lines)
        except SheetError as err:
            raise ValidationError(str(err)) from err
        if batch.problems:
            self.problems = batch.problems
            count = len(batch.problems)
            raise ValidationError(
                f"The batch file has {count} problem{'s' if count != 1 else ''} (listed below); "
                "nothing was created. Correct the file and upload it again."
            )
        self.tasks = batch.tasks
        return upload

    def preferences(self) -> dict:
        return {
            name: getattr(self.cleaned_data.get(name), "pk", self.cleaned_data.get(name))
            for name in PREFERENCE_FIELDS
            if name in self.cleaned_data
        }

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
