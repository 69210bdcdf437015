"""Creating a job of a batch app (batch query, batch transfer) through the REST API with the
app's own web form, so that a script and the page meet the same rules and the same messages.

The body is the form's fields (a node by its name or AE title, a project by its name), and
the lines either as JSON ``rows`` (objects with the batch file's column names as keys, read
as the lines of a file: the first row is line 2) or, as multipart, the batch file as ``file``.
A field left out takes the form's default. A refusal is a 400 with the form's messages by
field and each problem of the lines, as the page lists them::

    {"rows": ["The rows have 1 problem (listed in problems); nothing was created. ..."],
     "problems": [{"line": 3, "column": "PatientID", "message": "This field is required."}]}

The form takes the user and the rows (``Form(data, files, user=…, rows=…)``), mixes in
``adit.core.forms.BatchFileProblems`` for its file field ``batch_file``, and creates the job
with ``create_job()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model
from rest_framework import serializers
from rest_framework.exceptions import APIException

from adit.core.models import DicomNode
from adit.core.validators import shown

FILE_FIELD = "batch_file"  # the file field of every batch form

FormClass = type[forms.Form] | type[forms.ModelForm]

LINES_MISSING = (
    "Send the lines as rows (a JSON list of objects, one per line) or as a batch file "
    "(multipart, the field file)."
)


class BatchRefused(APIException):
    """A 400 with the body as built: a DRF ValidationError would turn the problems' line
    numbers into text."""

    status_code = 400
    default_code = "invalid"

    def __init__(self, detail: dict) -> None:
        self.detail = detail  # pyright: ignore[reportIncompatibleVariableOverride]


class BatchFormSerializer(serializers.Serializer):
    """Validates a new job with the app's form (``form_class``) and creates it as the page
    does. The declared fields describe the body for the schema; the form decides."""

    form_class: ClassVar[FormClass]
    excluded: ClassVar[tuple[str, ...]] = ()  # fields of the form no user gets
    defaults: ClassVar[dict[str, Any]] = {}  # where a script's default differs from the page's

    rows = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="The lines of the batch file, one object each, with the file's column names "
        "as keys; the first row is line 2, as under a file's header. Or send a file instead.",
    )
    file = serializers.FileField(
        required=False,
        help_text="The batch file (.xlsx or .csv, as on the page), in a multipart body.",
    )

    def to_internal_value(self, data) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise BatchRefused({"non_field_errors": ["The body must be a JSON object."]})
        request = self.context["request"]
        rows = data.get("rows") if "rows" in data else None
        upload = request.FILES.get("file")
        given = {key: data.get(key) for key in data if key not in ("rows", "file")}
        values = {**self.defaults, **given}
        files = {FILE_FIELD: upload} if upload is not None else {}
        form = self.form_class(values, files, user=request.user, rows=rows)  # pyright: ignore[reportCallIssue]
        errors = _prepare(form, _base_fields(self.form_class), self.excluded)
        if not form.is_valid() or errors:
            if rows is None and upload is None:  # instead of the file field's "required"
                form.errors.pop(FILE_FIELD, None)
                errors["rows"] = [LINES_MISSING]
            lines = "rows" if rows is not None else "file"
            raise BatchRefused({**_form_errors(form, lines), **errors})
        return {"form": form}

    def create(self, validated_data: dict[str, Any]):
        form = validated_data["form"]
        try:
            return form.create_job()
        except DjangoValidationError as refused:  # a pseudonym conflict, a project name taken
            raise BatchRefused({"non_field_errors": refused.messages}) from refused


def _prepare(
    form: forms.BaseForm, base_fields: dict[str, forms.Field], excluded: tuple[str, ...]
) -> dict[str, list[str]]:
    """Puts the defaults and the chosen objects' keys into the form's data, before it is
    validated; returns the errors of what cannot be given to the form."""
    values = form.data
    errors: dict[str, list[str]] = {}
    for name in values:
        hidden = name in base_fields and name not in form.fields
        if hidden and name not in excluded and _given(values[name]):
            errors[name] = ["Not available to you: your active group lacks the permission."]
    for name, field in form.fields.items():
        if name not in values and field.initial is not None and name != FILE_FIELD:
            values[name] = field.initial
        if isinstance(field, forms.ModelChoiceField) and values.get(name) not in (None, ""):
            choice = _named_choice(field, str(values[name]))
            if choice is None:
                errors[name] = [_not_found(field, name, str(values[name]))]
                values[name] = ""
            else:
                values[name] = choice.pk
    return errors


def _given(value: object) -> bool:
    """Whether an option is asked for (a multipart body sends "false" as text)."""
    return value not in (None, False, "") and str(value).lower() not in ("false", "0", "off")


def _named_choice(field: forms.ModelChoiceField, key: str) -> Model | None:
    """One of the field's choices by its name (a node also by its AE title)."""
    choices = field.queryset
    assert choices is not None
    if not key.isprintable():  # PostgreSQL refuses NUL; no name holds control characters
        return None
    found = choices.filter(name=key).first()
    if found is None and issubclass(choices.model, DicomNode):
        found = choices.filter(dicomserver__ae_title=key).first()
    return found


def _not_found(field: forms.ModelChoiceField, name: str, key: str) -> str:
    assert field.queryset is not None
    if issubclass(field.queryset.model, DicomNode):
        return f"There is no DICOM server or folder {shown(key)} you may use as {name}."
    what = field.queryset.model._meta.verbose_name
    return f"There is no {what} {shown(key)} you may choose."


def _form_errors(form: forms.BaseForm, lines: str) -> dict[str, Any]:
    """The form's errors by field (the file field's under ``lines``) and the lines'
    problems."""
    names = {"__all__": "non_field_errors", FILE_FIELD: lines}
    errors: dict[str, Any] = {
        names.get(name, name): [error["message"] for error in field_errors]
        for name, field_errors in form.errors.get_json_data().items()
    }
    problems = getattr(form, "problems_shown", [])
    if problems:
        errors["problems"] = [
            {"line": problem.line, "column": problem.column, "message": problem.message}
            for problem in problems
        ]
    return errors


def batch_create_serializer(
    form_class: FormClass,
    name: str,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> type[BatchFormSerializer]:
    """The create serializer of a batch app's form; ``exclude`` names form fields that no
    user gets (the schema leaves them out), ``defaults`` values a body that leaves a field
    out gets instead of the page's initial one."""
    fields = {
        field_name: _schema_field(field)
        for field_name, field in _base_fields(form_class).items()
        if field_name != FILE_FIELD and field_name not in exclude
    }
    attributes = {
        **fields,
        "form_class": form_class,
        "excluded": exclude,
        "defaults": defaults or {},
    }
    serializer = type(name, (BatchFormSerializer,), attributes)
    assert issubclass(serializer, BatchFormSerializer)
    return serializer


def _base_fields(form_class: FormClass) -> dict[str, forms.Field]:
    """The fields each form of the class starts with (the user's form may drop some)."""
    return form_class.base_fields  # pyright: ignore[reportAttributeAccessIssue]


def _schema_field(field: forms.Field) -> serializers.Field:
    """How a form field is described in the schema."""
    help_text = str(field.help_text or "")
    if isinstance(field, forms.ModelChoiceField):
        assert field.queryset is not None
        by = "name or AE title" if issubclass(field.queryset.model, DicomNode) else "name"
        return serializers.CharField(
            required=field.required, help_text=f"By its {by}. {help_text}".strip()
        )
    if isinstance(field, forms.BooleanField):
        return serializers.BooleanField(
            required=False, default=bool(field.initial), help_text=help_text
        )
    max_length = getattr(field, "max_length", None)
    return serializers.CharField(
        required=field.required,
        allow_blank=not field.required,
        max_length=max_length,
        help_text=help_text,
    )
