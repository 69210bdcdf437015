"""The multipart reader that WADO-RS responses and STOW-RS requests go through: every part,
whatever the chunking, and an error, never fewer parts, when the body is cut short or
malformed."""

from __future__ import annotations

import random

import pytest

from adit.core.dicom.multipart import MultipartError, boundary_of, iter_parts

BOUNDARY = "7de70a2c-d144"


def _body(parts: list[bytes], with_length: bool = True, preamble: bytes = b"") -> bytes:
    out = bytearray(preamble)
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n".encode()
        if with_length:
            out += f"Content-Length: {len(part)}\r\n".encode()
        out += b"\r\n" + part + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


PARTS = [b"DICM" + bytes(range(256)) * 3, b"", b"\r\n--not-the-boundary\r\n--7de70a2c-d14", b"x"]


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position = [], 0
    for size in sizes:
        chunks.append(data[position : position + size])
        position += size
    chunks.append(data[position:])
    return chunks


@pytest.mark.parametrize("with_length", [True, False])
def test_every_part_arrives_whatever_the_chunking(with_length):
    body = _body(PARTS, with_length, preamble=b"ignored preamble\r\n")
    rng = random.Random(1)
    for chunk_size in (1, 2, 7, 64, len(body)):
        chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
        assert [part.body for part in iter_parts(chunks, BOUNDARY)] == PARTS
    for _ in range(20):
        sizes = [rng.randint(0, 40) for _ in range(rng.randint(1, 60))]
        assert [part.body for part in iter_parts(_chunks(body, sizes), BOUNDARY)] == PARTS


def test_part_headers_are_read():
    (part, *_) = iter_parts([_body(PARTS)], BOUNDARY)
    assert part.content_type == "application/dicom"
    assert part.headers["content-length"] == str(len(PARTS[0]))


@pytest.mark.parametrize("with_length", [True, False])
def test_a_body_cut_anywhere_before_its_closing_boundary_is_an_error(with_length):
    body = _body(PARTS, with_length)
    closing = body.rindex(f"--{BOUNDARY}--".encode()) + len(f"--{BOUNDARY}--")
    for cut in range(closing):
        with pytest.raises(MultipartError):
            list(iter_parts([body[:cut]], BOUNDARY))
    # The closing delimiter complete: the epilogue's CRLF is optional.
    assert len(list(iter_parts([body[:closing]], BOUNDARY))) == len(PARTS)


def test_a_cut_after_a_complete_part_names_the_part_and_the_cause():
    body = _body(PARTS)
    second = body.index(f"--{BOUNDARY}".encode(), 10)
    cut = body.index(b"Content-Length", second) + 30  # inside the second part
    with pytest.raises(MultipartError, match="cut short after 1 complete part"):
        list(iter_parts([body[:cut]], BOUNDARY))


def test_a_part_longer_than_its_content_length_is_an_error():
    body = _body([b"12345"]).replace(b"Content-Length: 5", b"Content-Length: 3")
    with pytest.raises(MultipartError, match="does not end where its Content-Length"):
        list(iter_parts([body], BOUNDARY))


def test_malformed_headers_and_missing_boundaries_are_errors():
    with pytest.raises(MultipartError, match="holds no part"):
        list(iter_parts([b"no boundary at all"], BOUNDARY))
    bad_header = _body([b"x"]).replace(b"Content-Type: application/dicom", b"garbage line")
    with pytest.raises(MultipartError, match="malformed header"):
        list(iter_parts([bad_header], BOUNDARY))
    bad_length = _body([b"x"]).replace(b"Content-Length: 1", b"Content-Length: -1")
    with pytest.raises(MultipartError, match="invalid Content-Length"):
        list(iter_parts([bad_length], BOUNDARY))


def test_boundary_of_reads_the_parameter_and_refuses_what_is_not_multipart():
    header = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    assert boundary_of(header) == BOUNDARY
    assert boundary_of(f'multipart/related; boundary="{BOUNDARY}"') == BOUNDARY
    with pytest.raises(MultipartError, match="Expected a multipart response"):
        boundary_of("application/dicom+json")
    with pytest.raises(MultipartError, match="no usable boundary"):
        boundary_of("multipart/related; type=application/dicom")


def test_parts_above_the_spool_size_arrive_in_a_file_chunk_by_chunk():
    large = bytes(range(256)) * 40
    body = _body([b"small", large, b"tiny"])
    chunks = _chunks(body, [7] * 300)  # the large part spans many chunks
    parts = list(iter_parts(chunks, BOUNDARY, spool_above=1000))
    assert [part.body for part in parts] == [b"small", b"", b"tiny"]
    assert parts[0].file is None and parts[2].file is None
    spooled = parts[1].file
    assert spooled is not None
    assert spooled.read() == large
    spooled.close()


def test_a_spooled_part_cut_short_is_an_error():
    body = _body([bytes(5000)])
    with pytest.raises(MultipartError, match="cut short"):
        list(iter_parts([body[:3000]], BOUNDARY, spool_above=1000))


def test_parts_without_a_length_are_spooled_once_they_grow_past_the_size():
    # Clients (dicomweb-client among them) send STOW-RS parts without Content-Length.
    large = bytes(range(256)) * 40 + b"\r\n--7de70a2c-d14"  # ends like a boundary, is none
    body = _body([b"small", large, b"tiny", bytes(1001)], with_length=False)
    rng = random.Random(2)
    for sizes in ([7] * 2000, [1] * len(body), [rng.randint(1, 50) for _ in range(400)]):
        parts = list(iter_parts(_chunks(body, sizes), BOUNDARY, spool_above=1000))
        assert [part.file is None for part in parts] == [True, False, True, False]
        assert [part.body for part in parts] == [b"small", b"", b"tiny", b""]
        assert parts[1].file is not None and parts[1].file.read() == large
        assert parts[3].file is not None and parts[3].file.read() == bytes(1001)
        for part in parts:
            if part.file is not None:
                part.file.close()


def test_a_spooled_part_without_a_length_cut_short_is_an_error():
    body = _body([bytes(5000)], with_length=False)
    with pytest.raises(MultipartError, match="cut short"):
        list(iter_parts(_chunks(body[:3000], [100] * 29), BOUNDARY, spool_above=1000))
