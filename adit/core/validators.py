"""Validators for values that end up in DICOM messages or on disk."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def validate_ae_title(value: str) -> None:
    """An Application Entity title: 1-16 characters of the default repertoire, no backslash."""
    if not value.strip():
        raise ValidationError("An AE title must not be empty or only spaces.")
    if len(value) > 16:
        raise ValidationError("An AE title has at most 16 characters.")
    if "\\" in value or _CONTROL_CHARACTERS.search(value) or not value.isascii():
        raise ValidationError(
            "An AE title may only contain printable ASCII characters other than a backslash."
        )


def validate_uid(value: str) -> None:
    if len(value) > 64:
        raise ValidationError(f"A DICOM UID has at most 64 characters: {value!r}.")
    if not _UID.match(value):
        raise ValidationError(f"A DICOM UID consists of digits and dots only: {value!r}.")


def validate_query_value(value: str) -> None:
    """A value for a DICOM query key: no backslash (a value separator) or control characters."""
    if "\\" in value:
        raise ValidationError(f"Contains an invalid backslash character: {value!r}.")
    if _CONTROL_CHARACTERS.search(value):
        raise ValidationError(f"Contains invalid control characters: {value!r}.")


def validate_absolute_path(value: str) -> None:
    if not PurePosixPath(value).is_absolute():
        raise ValidationError(f"The folder path must be absolute: {value!r}.")
