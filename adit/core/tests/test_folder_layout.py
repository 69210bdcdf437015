from datetime import date
from pathlib import Path

import pytest

from adit.core.transfer.folder_layout import (
    UnsafePathError,
    instance_path,
    job_folder_name,
    sanitize_part,
    series_folder_name,
    study_folder_name,
)


def test_layout_matches_what_users_know(tmp_path):
    path = instance_path(
        tmp_path,
        job_folder_name("selective_transfer", 12, date(2026, 11, 28), "alice"),
        "PSEUDO01",
        study_folder_name("20240724", "101500.123", ["SR", "CT", "CT"]),
        series_folder_name(3, "Thorax 1.0 B70f", "1.2.3"),
        "1.2.3.4.5",
    )
    assert path == tmp_path / Path(
        "adit_selective_transfer_12_20261128_alice/PSEUDO01/20240724-101500-CT,SR/"
        "3-Thorax 1.0 B70f/1.2.3.4.5.dcm"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../etc", "_.._etc"),
        ("..", "unknown"),
        ("a/b\\c", "a_b_c"),
        ('x<>:"|?*y', "x_______y"),
        ("name\x00with\ncontrols", "name_with_controls"),
        ("trailing dots...", "trailing dots"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("", "unknown"),
        ("Müller^Jürgen", "Müller^Jürgen"),
    ],
)
def test_every_part_is_sanitized(value, expected):
    assert sanitize_part(value) == expected


def test_parts_are_bounded_in_length():
    assert len(sanitize_part("x" * 500)) == 100


def test_a_patient_id_cannot_escape_the_destination(tmp_path):
    path = instance_path(tmp_path, "job", "../../../etc", "study", None, "1.2")
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_a_symlink_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "destination"
    destination.mkdir()
    (destination / "job").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside the destination folder"):
        instance_path(destination, "job", "patient", "study", None, "1.2")


def test_series_without_number_uses_its_uid():
    assert series_folder_name(None, "Topogram", "1.2.840.99") == "1.2.840.99"


def test_study_without_date_or_modalities_gets_placeholders():
    assert study_folder_name("", "", []) == "nodate-notime-none"
