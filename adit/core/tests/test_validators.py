"""The validators every form, model and query uses for values from outside."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from adit.core import validators


@pytest.mark.parametrize(
    "validator, value",
    [
        (validators.validate_uid, "1.2.3\n"),
        (validators.validate_uid, "1.2.3\r\n"),
        (validators.validate_uid, "\n1.2.3"),
        (validators.validate_query_value, "P1\n"),
        (validators.validate_pseudonym, "SUBJ-1\n"),
        (validators.validate_ae_title, "ORTHANC\n"),
        (validators.validate_absolute_path, "/data/export\n"),
    ],
)
def test_a_trailing_or_leading_line_break_is_rejected(validator, value):
    with pytest.raises(ValidationError):
        validator(value)


@pytest.mark.parametrize("value", ["1", "1.2.840.10008.1.2", "2." + "1" * 62])
def test_valid_uids_pass(value):
    validators.validate_uid(value)
    assert validators.is_valid_uid(value)


@pytest.mark.parametrize(
    "value", ["", "1..2", ".1", "1.", "1.2.abc", "1.2.3'+alert(1)+'", "١.٢", "2." + "1" * 63]
)
def test_invalid_uids_are_rejected(value):
    assert not validators.is_valid_uid(value)
    with pytest.raises(ValidationError):
        validators.validate_uid(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("SUBJ*", "wildcards"),
        ("SUBJ?", "wildcards"),
        ("A\\B", "backslash"),
        ("A\tB", "control characters"),
        ("A\u200bB", "control characters"),
        (" SUBJ", "spaces"),
        ("P" * 65, "at most 64"),
    ],
)
def test_pseudonyms_without_wildcards_separators_or_controls(value, expected):
    with pytest.raises(ValidationError) as raised:
        validators.validate_pseudonym(value)
    assert expected in raised.value.messages[0]


def test_pseudonym_of_letters_digits_and_punctuation_passes():
    validators.validate_pseudonym("Studie-07_Müller (Arm B)")


def test_messages_show_the_value_readably_not_as_python_repr():
    with pytest.raises(ValidationError) as raised:
        validators.validate_uid("1.2.3\n")
    message = raised.value.messages[0]
    assert message == "A DICOM UID consists of digits and dots only: “1.2.3\\x0a”."
    assert "'" not in message
