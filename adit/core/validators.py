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
# An organisation root for generated UIDs leaves 64 - 24 - 1 = 39 digits, room for a whole
# 128-bit number: shorter suffixes would make two generated UIDs more likely to collide.
MAX_UID_ROOT_LENGTH = 24

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# PS3.5 9.1: components without leading zeros; the first arc of an OID is 0, 1 or 2.
_UID_ROOT = re.compile(r"[012](\.(0|[1-9][0-9]*))+")
_STANDARD_UID_ROOT = "1.2.840.10008"
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


def validate_uid_root(value: str) -> None:
    """An organisation's UID root under which ADIT generates new UIDs, e.g. "1.2.826.0.1.3680043".

    Each generated UID is the root, a dot and a 128-bit number in decimal (up to 39 digits).
    """
    if len(value) > MAX_UID_ROOT_LENGTH:
        raise ValidationError(
            f"A UID root for generated UIDs has at most {MAX_UID_ROOT_LENGTH} characters, so "
            f"that a 128-bit number still fits into a 64-character UID; {shown(value)} has "
            f"{len(value)}."
        )
    if not _UID_ROOT.fullmatch(value):
        raise ValidationError(
            f"{shown(value)} is not a UID root: it must be numbers separated by dots, without a "
            "dot at the end, without leading zeros, starting with 0, 1 or 2 and at least two "
            "numbers long."
        )
    if value == _STANDARD_UID_ROOT or value.startswith(_STANDARD_UID_ROOT + "."):
        raise ValidationError(
            f"{shown(value)} lies under {_STANDARD_UID_ROOT}, the root the DICOM standard "
            "reserves for its own UIDs; use your organisation's root."
        )


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


# A Code String (VR CS) as PACS name modalities: "CT", "MR", "OT", "RTSTRUCT", ...
MODALITY_CODE = re.compile(r"[A-Z0-9_ ]{1,16}")
