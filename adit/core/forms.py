"""Forms of the site, and the pieces the apps' forms share."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar

from django import forms

from adit.core import sections
from adit.core.sheet_reader import MAX_FILE_BYTES, SheetError, SheetProblem


class SectionLockForm(forms.Form):
    namespace = forms.CharField(max_length=64)
    reason = forms.CharField(max_length=200, required=False)

    def clean(self):
        cleaned = super().clean() or {}
        section = sections.get(cleaned.get("namespace", ""))
        if section is None or not section.lockable:
            raise forms.ValidationError("There is no lockable section of that name.")
        cleaned["section"] = section
        return cleaned


class BatchFileField(forms.FileField):
    """An uploaded batch file (.xlsx or .csv) of at most the sheet reader's size."""

    default_error_messages = {
        "too_large": f"The file is larger than {MAX_FILE_BYTES // 2**20} MB; split it into "
        "smaller ones.",
    }

    def __init__(self, *, what_per_line: str = "one line each", **kwargs):
        kwargs.setdefault(
            "help_text",
            f"An Excel workbook (.xlsx) or a CSV file (.csv) of at most "
            f"{MAX_FILE_BYTES // 2**20} MB, {what_per_line}.",
        )
        kwargs.setdefault("widget", forms.ClearableFileInput(attrs={"accept": ".xlsx,.csv"}))
        super().__init__(**kwargs)

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if upload and upload.size > MAX_FILE_BYTES:
            raise forms.ValidationError(self.error_messages["too_large"], code="too_large")
        return upload


class _Batch(Protocol):
    problems: list[SheetProblem]


BatchT = TypeVar("BatchT", bound=_Batch)


class BatchFileProblems:
    """For a form with a batch file: the file's problems, which the page lists (the template
    ``core/_sheet_problems.html``), and the one error of the file field that points to them.

    The REST API uses the same form with the lines sent as JSON ``rows`` instead of a file
    (``take_rows``): they are checked by the same rules, with the same messages.
    """

    problems: list[SheetProblem]
    fields: dict[str, forms.Field]
    rows: object = None  # the lines as data, or None for the uploaded file
    # A file full of mistakes would make a page of thousands; the first ones show the pattern.
    max_problems_shown = 200

    @property
    def problems_shown(self) -> list[SheetProblem]:
        return self.problems[: self.max_problems_shown]

    def take_rows(self, rows: object) -> None:
        """Has the form read its lines from ``rows`` (objects with the columns as keys), if
        given, instead of the file."""
        self.rows = rows
        if rows is not None:
            self.fields["batch_file"].required = False

    def read_batch(
        self,
        upload,
        read_file: Callable[[bytes, str], BatchT],
        read_rows: Callable[[object], BatchT],
    ) -> BatchT:
        """The lines of the upload (``read_file``) or the rows (``read_rows``), refused with
        their problems as the field's error."""
        if self.rows is not None and upload:
            raise forms.ValidationError("Send the lines either as rows or as a file, not both.")
        try:
            if self.rows is not None:
                batch = read_rows(self.rows)
            else:
                batch = read_file(upload.read(), upload.name)
        except SheetError as err:
            raise forms.ValidationError(str(err)) from err
        if batch.problems:
            self.refuse(batch.problems)
        return batch

    def refuse(self, problems: list[SheetProblem]) -> NoReturn:
        """Keeps the problems for the page and raises the field's error."""
        self.problems = problems
        count = len(problems)
        counted = f"{count} problem{'s' if count != 1 else ''}"
        if self.rows is not None:
            raise forms.ValidationError(
                f"The rows have {counted} (listed in problems); nothing was created. Correct "
                "them and send them again."
            )
        raise forms.ValidationError(
            f"The batch file has {counted} (listed below); nothing was created. Correct the "
            "file and upload it again."
        )


class RememberedChoices:
    """For a form whose choices the user finds again next time (``preference_fields``, as
    primary keys and plain values, in ``User.preferences`` under the form's app)."""

    preference_fields: tuple[str, ...] = ()
    cleaned_data: dict

    def preferences(self) -> dict:
        return {
            name: getattr(self.cleaned_data.get(name), "pk", self.cleaned_data.get(name))
            for name in self.preference_fields
            if name in self.cleaned_data
        }


def style_fields(form: forms.BaseForm) -> None:
    """Gives each field of the form Bootstrap's class for its widget and its name as
    ``data-testid``."""
    for name, field in form.fields.items():
        widget = field.widget
        if isinstance(widget, forms.CheckboxInput):
            css = "form-check-input"
        elif isinstance(widget, forms.Select):
            css = "form-select"
        else:
            css = "form-control"
        widget.attrs.update({"class": css, "data-testid": name})
