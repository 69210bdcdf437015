"""Validators for values that end up in DICOM messages or on disk.

Every pattern is matched against the whole value (``fullmatch``): a ``$`` would also accept a
trailing line break.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from django.core.exceptions import ValidationError

MAX_UID_LENGTH = 64
MAX_PSEUDONYM_LENGTH = 64

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SHOWN_LENGTH = 70


def shown(value: str) -> str:
    """``value`` quoted for a message: control characters visible, long values shortened."""
    text = "".join(
        f"\\x{ord(character):02x}" if unicodedata.category(character).startswith("C") else character
        for character in str(value)
    )
    if len(text) > _SHOWN_LENGTH:
        text = f"{text[: _SHOWN_LENGTH - 1]}…"
    return f"“{text}”"


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


def is_valid_uid(value: str) -> bool:
    return len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def validate_uid(value: str) -> None:
    if len(value) > MAX_UID_LENGTH:
        raise ValidationError(
            f"A DICOM UID has at most {MAX_UID_LENGTH} characters, not {len(value)}: "
            f"{shown(value)}."
        )
    if not _UID.fullmatch(value):
        raise ValidationError(f"A DICOM UID consists of digits and dots only: {shown(value)}.")


def validate_query_value(value: str) -> None:
    """A value for a DICOM query key: no backslash (a value separator), no control characters
    and nothing that is not text (a lone surrogate, as a JSON escape can make one)."""
    if "\\" in value:
        raise ValidationError(f"Contains an invalid backslash character: {shown(value)}.")
    if any(unicodedata.category(character) in ("Cc", "Cs") for character in value):
        raise ValidationError(f"Contains invalid control characters: {shown(value)}.")


def validate_pseudonym(value: str) -> None:
    """A pseudonym becomes PatientID and PatientName of every instance, and people later search
    for it: DICOM wildcards (``*``, ``?``) would make such a search match other patients."""
    if len(value) > MAX_PSEUDONYM_LENGTH:
        raise ValidationError(
            f"A pseudonym has at most {MAX_PSEUDONYM_LENGTH} characters, not {len(value)}."
        )
    if "*" in value or "?" in value:
        raise ValidationError(
            "A pseudonym must not contain * or ? (they are wildcards in DICOM searches)."
        )
    if "\\" in value:
        raise ValidationError("A pseudonym must not contain a backslash (DICOM's value separator).")
    if any(unicodedata.category(character).startswith("C") for character in value):
        raise ValidationError(
            "A pseudonym must not contain control characters (such as line breaks or tabs)."
        )
    if value != value.strip():
        raise ValidationError("A pseudonym must not start or end with spaces.")


def validate_absolute_path(value: str) -> None:
    if not PurePosixPath(value).is_absolute():
        raise ValidationError(f"The folder path must be absolute: {shown(value)}.")
    if any(unicodedata.category(character).startswith("C") for character in value):
        raise ValidationError(
            f"The folder path must not contain control characters: {shown(value)}."
        )
