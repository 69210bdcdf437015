"""Conversion of one DICOM series to NIfTI with dcm2niix.

Researchers often want NIfTI (plus a BIDS JSON sidecar) instead of DICOM. dcm2niix is the
de-facto standard converter; the PyPI package ``dcm2niix`` ships it as an executable in the
virtual environment, so no system package is needed.

dcm2niix reports problems only through its exit code and free-text console output, and it
happily converts nothing (e.g. for a series holding only an SR report). This module turns that
into three outcomes a transfer task can act on:

* files written: a ``NiftiResult`` listing them, with the dcm2niix warnings worth showing;
* nothing to convert (no DICOM image in the folder): a ``NiftiResult`` without files and a
  warning saying why, because such series are normal in a study and must not fail a transfer;
* dcm2niix failed (bad folder, corrupt data, crash, timeout): ``NiftiConversionError``.

dcm2niix writes into a fresh temporary folder inside the output folder, and the results are
moved into place afterwards. So the files written are known exactly, a re-run replaces the
files of the previous run instead of adding ``_a``/``_b`` suffixed copies, and a timeout or
crash leaves no half-written file in the output folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

PYPI_PACKAGE = "dcm2niix"
DEFAULT_TIMEOUT = 600.0

# Exit codes documented in dcm2niix's ERRORS.md.
_EXIT_SUCCESS = 0
_EXIT_NO_VALID_FILES = 2
_EXIT_MEANINGS = {
    1: "unspecified error",
    2: "no DICOM images found",
    4: "corrupt DICOM file",
    5: "input folder invalid",
    6: "output folder invalid",
    7: "unable to write to output folder",
    8: "converted some but not all of the input DICOMs",
    9: "unable to rename files",
}
# Console lines that only report progress; everything else is a warning or an error.
_ROUTINE_PREFIXES = (
    "Chris Rorden's dcm2niiX",
    "Defaults ignored",
    "Found ",
    "Convert ",
    "Conversion required",
    "Compression will be faster with",
)
# Warnings that are true for nearly every anonymized or non-MR series and that a user cannot
# act on; showing them for every series would bury the useful ones.
_IGNORED_WARNINGS = ("Unable to determine manufacturer",)
# Characters dcm2niix keeps in an output name. Anything else (spaces, umlauts, separators) it
# mangles itself, and "%" starts one of its placeholders (e.g. "%s" = series number).
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._+^,-]+")


class NiftiConversionError(Exception):
    """dcm2niix could not convert a series (and wrote nothing)."""


class Dcm2niixNotFoundError(NiftiConversionError):
    """The dcm2niix executable is not installed; a deployment problem, not a data problem."""


@dataclass(frozen=True)
class NiftiResult:
    """What the conversion of one series produced.

    Attributes:
        files: Files written to the output folder: ``.nii.gz`` images and ``.json`` sidecars
            (and ``.bval``/``.bvec`` for diffusion series). Empty if there was nothing to
            convert.
        warnings: Messages for the user, e.g. why no file was produced.
    """

    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_dcm2niix() -> Path:
    """Locates the dcm2niix executable.

    The one installed with this environment's ``dcm2niix`` package (next to the Python
    interpreter) is preferred over one on PATH, so the version pinned in the project is used
    even when the virtual environment is not activated (e.g. in a worker started by a service).

    Raises:
        Dcm2niixNotFoundError: If neither exists.
    """
    name = "dcm2niix.exe" if os.name == "nt" else "dcm2niix"
    # Not resolved: in a virtual environment sys.executable is a symlink into the base Python.
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("dcm2niix")
    if on_path:
        return Path(on_path)
    raise Dcm2niixNotFoundError(
        f"The dcm2niix executable was found neither in {beside_python.parent} nor on PATH. "
        f"Install the PyPI package '{PYPI_PACKAGE}' (e.g. 'uv add {PYPI_PACKAGE}')."
    )


def sanitize_nifti_filename(filename: str) -> str:
    """Turns a name (often from a series description) into one dcm2niix uses unchanged.

    Separators become ``_`` so the output cannot leave the output folder, accents are dropped
    (``Zoë`` becomes ``Zoe``) and ``%`` is removed so dcm2niix does not expand placeholders.
    Descriptions like ``T1/T2 map`` are common, so such names are cleaned up rather than
    rejected.

    Raises:
        ValueError: If nothing usable remains.
    """
    ascii_only = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_FILENAME_CHARACTERS.sub("_", ascii_only).strip("._")
    if not cleaned:
        raise ValueError(f"{filename!r} cannot be used as NIfTI file name.")
    return cleaned


def convert_series_to_nifti(
    dicom_folder: Path,
    output_folder: Path,
    filename: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> NiftiResult:
    """Converts the DICOM files of one series to compressed NIfTI with a BIDS JSON sidecar.

    Args:
        dicom_folder: Folder with the DICOM files of one series.
        output_folder: Where the files go; created if missing. Files of an earlier conversion
            with the same names are replaced.
        filename: Base name of the output files, without extension. Sanitized with
            ``sanitize_nifti_filename``; dcm2niix may add suffixes (e.g. ``_e2`` for a second
            echo) when a series yields several volumes.
        timeout: Seconds after which dcm2niix is killed.

    Returns:
        The files written and warnings. Without files if the folder holds no convertible
        image (e.g. only SR documents or nothing at all); a warning then says why.

    Raises:
        NiftiConversionError: If dcm2niix fails without writing anything or times out.
        Dcm2niixNotFoundError: If dcm2niix is not installed.
        ValueError: If ``filename`` has no usable characters.
    """
    executable = find_dcm2niix()
    name = sanitize_nifti_filename(filename)
    output_folder.mkdir(parents=True, exist_ok=True)
    work_folder = Path(tempfile.mkdtemp(prefix=".dcm2niix-", dir=output_folder))
    try:
        command = [
            str(executable),
            *("-g", "i"),  # ignore a ~/.dcm2nii.ini that could change the options below
            *("-z", "y"),  # gzip, with pigz when installed, else the built-in zlib
            *("-b", "y"),  # BIDS JSON sidecar ...
            *("-ba", "y"),  # ... without patient name, dates or other identifying data
            *("-w", "2"),  # several volumes of the series get suffixes, never overwrite
            *("-f", name),
            *("-o", str(work_folder)),
            str(dicom_folder),
        ]
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise NiftiConversionError(
                f"dcm2niix timed out after {timeout:g} seconds converting {dicom_folder}."
            ) from error

        output = _decode(completed.stdout) + "\n" + _decode(completed.stderr)
        warnings, errors = _parse_output(output)
        written = sorted(path for path in work_folder.iterdir() if path.is_file())
        files = [_move(path, output_folder) for path in written]
    finally:
        shutil.rmtree(work_folder, ignore_errors=True)

    return_code = completed.returncode
    reason = _reason(return_code, errors)
    if files:
        if return_code != _EXIT_SUCCESS:
            warnings.append(f"dcm2niix reported a problem converting {dicom_folder}: {reason}")
        return NiftiResult(files=files, warnings=warnings)
    if return_code in (_EXIT_SUCCESS, _EXIT_NO_VALID_FILES):
        warnings.append(f"No NIfTI file was produced for {dicom_folder}: {reason}")
        return NiftiResult(files=[], warnings=warnings)
    raise NiftiConversionError(f"dcm2niix could not convert {dicom_folder}: {reason}")


def _decode(data: bytes) -> str:
    # dcm2niix echoes file and series names, which need not be valid UTF-8.
    return data.decode("utf-8", errors="replace")


def _parse_output(output: str) -> tuple[list[str], list[str]]:
    """Splits dcm2niix's console output into warnings worth showing and error messages."""
    warnings: list[str] = []
    errors: list[str] = []
    for raw_line in output.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(_ROUTINE_PREFIXES):
            continue
        if line.startswith("Warning:"):
            text = line.removeprefix("Warning:").strip()
            message = f"dcm2niix: {text}"
            if not text.startswith(_IGNORED_WARNINGS) and message not in warnings:
                warnings.append(message)
        else:
            # "Error: ..." lines and unprefixed ones such as "No valid DICOM images were found"
            text = line.removeprefix("Error:").strip()
            if text not in errors:
                errors.append(text)
    return warnings, errors


def _reason(return_code: int, errors: list[str]) -> str:
    """The most specific explanation available: dcm2niix's own words, else its exit code."""
    if errors:
        return "; ".join(errors)
    if return_code == _EXIT_SUCCESS:
        return "dcm2niix found no image it could convert"
    meaning = _EXIT_MEANINGS.get(return_code, "unknown error")
    return f"dcm2niix exited with code {return_code} ({meaning})"


def _move(path: Path, folder: Path) -> Path:
    target = folder / path.name
    os.replace(path, target)
    return target
