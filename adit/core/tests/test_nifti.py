import gzip
import json
import stat
import struct
from pathlib import Path

import pytest

from adit.core.demo.synthetic import generate_ct_series, generate_studies, write_datasets
from adit.core.transfer import nifti
from adit.core.transfer.nifti import (
    Dcm2niixNotFoundError,
    NiftiConversionError,
    NiftiResult,
    convert_series_to_nifti,
    sanitize_nifti_filename,
)

ROWS, COLUMNS, SLICES = 32, 24, 5


def _nifti_dimensions(path: Path) -> tuple[int, ...]:
    """dim[0..3] of a gzipped NIfTI-1 file, read without nibabel."""
    with gzip.open(path, "rb") as file:
        header = file.read(348)
    (sizeof_hdr,) = struct.unpack("<i", header[:4])
    endian = "<" if sizeof_hdr == 348 else ">"
    assert struct.unpack(f"{endian}i", header[:4]) == (348,)
    assert header[344:348] == b"n+1\x00"  # single-file NIfTI-1
    dim = struct.unpack(f"{endian}8h", header[40:56])
    return dim[:4]


def _series_folder(paths: list[Path]) -> Path:
    folders = {path.parent for path in paths}
    assert len(folders) == 1
    return folders.pop()


@pytest.fixture
def ct_folder(tmp_path) -> Path:
    paths = write_datasets(
        tmp_path / "dicom", generate_ct_series(instances=SLICES, rows=ROWS, columns=COLUMNS)
    )
    return _series_folder(paths)


def test_ct_series_converts_to_nifti_with_sidecar(ct_folder, tmp_path):
    output = tmp_path / "out" / "nifti"  # created on demand

    result = convert_series_to_nifti(ct_folder, output, "1-CT Thorax")

    assert isinstance(result, NiftiResult)
    assert [path.name for path in result.files] == ["1-CT_Thorax.json", "1-CT_Thorax.nii.gz"]
    assert sorted(output.iterdir()) == result.files  # no temporary folder left behind
    image = output / "1-CT_Thorax.nii.gz"
    dim = _nifti_dimensions(image)
    assert dim[0] in (3, 4)
    assert dim[1:4] == (COLUMNS, ROWS, SLICES)
    sidecar = json.loads((output / "1-CT_Thorax.json").read_text())
    assert sidecar["Modality"] == "CT"
    assert "PatientName" not in sidecar  # anonymized sidecar (-ba y)
    assert result.warnings == []


def test_rerun_replaces_the_files(ct_folder, tmp_path):
    output = tmp_path / "out"
    first = convert_series_to_nifti(ct_folder, output, "series")
    (output / "series.nii.gz").write_bytes(b"stale")

    second = convert_series_to_nifti(ct_folder, output, "series")

    assert second.files == first.files
    assert sorted(output.iterdir()) == second.files  # no series_a.nii.gz copies
    assert _nifti_dimensions(output / "series.nii.gz")[1:4] == (COLUMNS, ROWS, SLICES)


def test_series_with_only_a_report_yields_a_warning(tmp_path):
    report = next(ds for ds in generate_studies(patients=1) if ds.Modality == "SR")
    folder = _series_folder(write_datasets(tmp_path / "dicom", [report]))
    output = tmp_path / "out"

    result = convert_series_to_nifti(folder, output, "report")

    assert result.files == []
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"No NIfTI file was produced for {folder}: ")
    assert "No valid DICOM images were found" in result.warnings[0]
    assert list(output.iterdir()) == []


def test_empty_folder_yields_a_warning(tmp_path):
    # An empty series folder is a harmless data situation (e.g. every instance was filtered
    # out), not a converter failure, so it must not fail the whole transfer.
    folder = tmp_path / "empty"
    folder.mkdir()

    result = convert_series_to_nifti(folder, tmp_path / "out", "empty")

    assert result.files == []
    assert len(result.warnings) == 1
    assert "No NIfTI file was produced" in result.warnings[0]
    assert "Unable to find any DICOM images" in result.warnings[0]


def test_missing_folder_raises(tmp_path):
    missing = tmp_path / "does-not-exist"

    with pytest.raises(NiftiConversionError, match="Input folder invalid") as info:
        convert_series_to_nifti(missing, tmp_path / "out", "series")

    assert str(missing) in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def _fake_dcm2niix(monkeypatch, folder: Path, script: str) -> None:
    path = folder / "fake-dcm2niix"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(nifti, "find_dcm2niix", lambda: path)


def test_error_exit_without_output_raises_with_dcm2niix_text(monkeypatch, tmp_path):
    _fake_dcm2niix(monkeypatch, tmp_path, 'echo "Error: Catastrophic failure" >&2\nexit 4\n')

    with pytest.raises(NiftiConversionError) as info:
        convert_series_to_nifti(tmp_path / "dicom", tmp_path / "out", "series")

    assert str(info.value) == (
        f"dcm2niix could not convert {tmp_path / 'dicom'}: Catastrophic failure"
    )


def test_error_exit_without_message_names_the_exit_code(monkeypatch, tmp_path):
    _fake_dcm2niix(monkeypatch, tmp_path, "exit 7\n")

    with pytest.raises(NiftiConversionError, match=r"code 7 \(unable to write"):
        convert_series_to_nifti(tmp_path / "dicom", tmp_path / "out", "series")


def test_timeout_raises(monkeypatch, tmp_path):
    _fake_dcm2niix(monkeypatch, tmp_path, "exec sleep 30\n")
    output = tmp_path / "out"

    with pytest.raises(NiftiConversionError, match="timed out after 0.5 seconds"):
        convert_series_to_nifti(tmp_path / "dicom", output, "series", timeout=0.5)

    assert list(output.iterdir()) == []


def test_warnings_are_kept_and_routine_lines_dropped(monkeypatch, tmp_path):
    script = (
        'out="$(echo "$@" | sed "s/.*-o \\([^ ]*\\) .*/\\1/")"\n'
        'echo "Chris Rorden\'s dcm2niiX version v1"\n'
        'echo "Found 3 DICOM file(s)"\n'
        'echo "Warning: Unable to determine manufacturer (0008,0070), so ..."\n'
        'echo "Warning: Slices not equidistant"\n'
        'echo "Warning: Slices not equidistant"\n'
        'echo data > "$out/series.nii.gz"\n'
        "exit 8\n"
    )
    _fake_dcm2niix(monkeypatch, tmp_path, script)

    result = convert_series_to_nifti(tmp_path / "dicom", tmp_path / "out", "series")

    assert result.files == [tmp_path / "out" / "series.nii.gz"]
    assert result.warnings == [
        "dcm2niix: Slices not equidistant",
        f"dcm2niix reported a problem converting {tmp_path / 'dicom'}: dcm2niix exited with "
        "code 8 (converted some but not all of the input DICOMs)",
    ]


def test_missing_executable_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(nifti.sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(Dcm2niixNotFoundError, match="PyPI package 'dcm2niix'"):
        nifti.find_dcm2niix()


def test_executable_in_the_environment_is_found():
    assert nifti.find_dcm2niix().name == "dcm2niix"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("T1/T2 map", "T1_T2_map"),
        ("a\\b", "a_b"),
        ("Müller^Zoë", "Muller^Zoe"),
        ("100% dose %s", "100_dose_s"),
        ("3-Thorax 1.0 B70f", "3-Thorax_1.0_B70f"),
    ],
)
def test_filename_is_sanitized(filename, expected):
    assert sanitize_nifti_filename(filename) == expected


@pytest.mark.parametrize("filename", ["", "/", "..", "%%", "こんにちは"])
def test_unusable_filename_is_rejected(filename):
    with pytest.raises(ValueError, match="cannot be used"):
        sanitize_nifti_filename(filename)


def test_filename_with_separator_stays_in_output_folder(ct_folder, tmp_path):
    output = tmp_path / "out"

    result = convert_series_to_nifti(ct_folder, output, "../escaped/series")

    assert [path.name for path in result.files] == ["escaped_series.json", "escaped_series.nii.gz"]
    assert all(path.parent == output for path in result.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom", "out"]
