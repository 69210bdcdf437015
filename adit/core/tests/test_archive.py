import random
import struct
import zipfile
from pathlib import Path

import pytest
import pyzipper

from adit.core.transfer.archive import EncryptedZipWriter

PASSWORD = "correct horse battery staple"


def _payload(size: int = 64 * 1024, seed: int = 0) -> bytes:
    """Incompressible bytes: if they were stored unencrypted they would appear verbatim."""
    return random.Random(seed).randbytes(size)


def _read_all(path: Path, password: str) -> dict[str, bytes]:
    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(password.encode())
        return {name: archive.read(name) for name in archive.namelist()}


def test_archive_round_trips_with_the_right_password(tmp_path):
    path = tmp_path / "nested" / "folder" / "study.zip"
    first, second = _payload(seed=1), _payload(seed=2)

    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("PSEUDO01/1-CT/1.2.3.dcm", first)
        archive.add("PSEUDO01/1-CT/1.2.4.dcm", second)

    assert _read_all(path, PASSWORD) == {
        "PSEUDO01/1-CT/1.2.3.dcm": first,
        "PSEUDO01/1-CT/1.2.4.dcm": second,
    }
    assert not path.with_name("study.zip.partial").exists()


def test_entries_are_aes_encrypted(tmp_path):
    path = tmp_path / "study.zip"
    data = _payload()
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("a.dcm", data)

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("a.dcm")
    assert info.flag_bits & 0x1  # encrypted
    assert info.compress_type == 99  # WinZip AES; the real method is in the extra field
    # AES extra field: id 0x9901, size 7, version, vendor "AE", strength (3 = 256 bit), method.
    header_id, size, _version, vendor, strength, method = struct.unpack("<HHH2sBH", info.extra[:11])
    assert (header_id, size, vendor, strength) == (0x9901, 7, b"AE", 3)
    assert method == zipfile.ZIP_DEFLATED
    assert data[:64] not in path.read_bytes()


def test_reading_without_password_fails(tmp_path):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("a.dcm", _payload())

    with pyzipper.AESZipFile(path) as archive:
        with pytest.raises(RuntimeError, match="password"):
            archive.read("a.dcm")


def test_reading_with_wrong_password_fails(tmp_path):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("a.dcm", _payload())

    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(b"wrong password")
        with pytest.raises(RuntimeError, match="(?i)password"):
            archive.read("a.dcm")


def test_plain_zipfile_cannot_read_the_content(tmp_path):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("a.dcm", _payload())

    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["a.dcm"]  # names are visible, as in any ZIP
        # Depending on the Python version: "password required" or "compression method 99".
        with pytest.raises((RuntimeError, NotImplementedError)):
            archive.read("a.dcm")


def test_exception_in_with_block_leaves_no_file(tmp_path):
    path = tmp_path / "study.zip"

    with pytest.raises(ConnectionError, match="PACS went away"):
        with EncryptedZipWriter(path, PASSWORD) as archive:
            archive.add("a.dcm", _payload())
            assert archive.partial_path.exists()
            raise ConnectionError("PACS went away")

    assert not path.exists()
    assert not path.with_name("study.zip.partial").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_rerun_keeps_the_previous_archive(tmp_path):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("old.dcm", b"old")

    with pytest.raises(ConnectionError):
        with EncryptedZipWriter(path, PASSWORD) as archive:
            archive.add("new.dcm", b"new")
            raise ConnectionError

    assert _read_all(path, PASSWORD) == {"old.dcm": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.zip"]


def test_rerun_replaces_the_archive(tmp_path):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        archive.add("1.dcm", b"first run")
        archive.add("2.dcm", b"first run")
    # A crashed run before may have left a partial file; it must not leak into the archive.
    path.with_name("study.zip.partial").write_bytes(b"garbage from a crashed run")

    with EncryptedZipWriter(path, "another password") as archive:
        archive.add("1.dcm", b"second run")

    assert _read_all(path, "another password") == {"1.dcm": b"second run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.zip"]


def test_utf8_names_round_trip(tmp_path):
    path = tmp_path / "study.zip"
    names = ["Müller^Zoë/20240101-CT/1-Thorax/1.2.3.dcm", "Dvořák^Tomáš/こんにちは.dcm"]
    with EncryptedZipWriter(path, PASSWORD) as archive:
        for number, name in enumerate(names):
            archive.add(name, bytes([number]))

    assert _read_all(path, PASSWORD) == {name: bytes([n]) for n, name in enumerate(names)}
    with zipfile.ZipFile(path) as archive:
        assert all(info.flag_bits & 0x800 for info in archive.infolist())  # UTF-8 flag


def test_empty_password_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="non-empty password"):
        EncryptedZipWriter(tmp_path / "study.zip", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "arcname",
    [
        "../evil.dcm",
        "a/../../evil.dcm",
        "a/..",
        "..\\evil.dcm",
        "/etc/passwd",
        "\\windows\\evil.dcm",
        "C:evil.dcm",
        "a//b.dcm",
        "",
    ],
)
def test_unsafe_arcnames_are_rejected(tmp_path, arcname):
    path = tmp_path / "study.zip"
    with EncryptedZipWriter(path, PASSWORD) as archive:
        with pytest.raises(ValueError):
            archive.add(arcname, b"x")
        archive.add("safe..name.dcm", b"x")  # dots inside a name are harmless

    assert _read_all(path, PASSWORD) == {"safe..name.dcm": b"x"}


def test_duplicate_arcname_is_rejected(tmp_path):
    with EncryptedZipWriter(tmp_path / "study.zip", PASSWORD) as archive:
        archive.add("a.dcm", b"1")
        with pytest.raises(ValueError, match="already added"):
            archive.add("a.dcm", b"2")


def test_add_outside_with_block_fails(tmp_path):
    writer = EncryptedZipWriter(tmp_path / "study.zip", PASSWORD)
    with pytest.raises(RuntimeError, match="with block"):
        writer.add("a.dcm", b"x")
