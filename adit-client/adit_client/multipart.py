"""A streaming reader of the multipart/related bodies ADIT answers retrievals with: each part
is handed out as soon as it is complete, so a study never has to be held whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message

from .errors import AditServerError

_CRLF = b"\r\n"


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def filename(self) -> str | None:
        return _header_parameter(self.headers.get("content-disposition", ""), "filename")


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header.

    Raises:
        AditServerError: The answer is no multipart body.
    """
    boundary = _header_parameter(content_type, "boundary")
    if not content_type.lower().startswith("multipart/") or not boundary:
        raise AditServerError(f"Expected a multipart answer, got {content_type or 'nothing'}.")
    return boundary


def iter_parts(chunks: Iterable[bytes], boundary: str) -> Iterator[Part]:
    """The parts of a body arriving in ``chunks``.

    Raises:
        AditServerError: The body ends before its closing delimiter (the connection was cut),
            or a part is malformed.
    """
    # Every delimiter but the first follows a CRLF: with one in front, all look alike.
    delimiter = _CRLF + b"--" + boundary.encode("ascii")
    buffer = bytearray(_CRLF)
    searched = 0  # where a delimiter can begin that was not looked for yet
    in_preamble = True
    for chunk in chunks:
        buffer += chunk
        while (index := buffer.find(delimiter, searched)) >= 0:
            segment = bytes(buffer[:index])
            del buffer[: index + len(delimiter)]
            searched = 0
            if not in_preamble:
                yield _part(segment)
            in_preamble = False
        searched = max(0, len(buffer) - len(delimiter) + 1)
    # After the last delimiter comes "--" when it closes the body.
    if in_preamble or not buffer.startswith(b"--"):
        raise AditServerError("The answer was cut short: its multipart body is incomplete.")


def _part(segment: bytes) -> Part:
    """A part from what lies between two delimiters: the rest of the delimiter's line, the
    header lines, an empty line, the body."""
    line_end = segment.find(_CRLF)
    if segment.startswith(b"--") or line_end < 0:
        raise AditServerError("The answer's multipart body is malformed.")
    rest = segment[line_end + 2 :]
    if rest.startswith(_CRLF):
        head, body = b"", rest[2:]
    else:
        head, separator, body = rest.partition(_CRLF + _CRLF)
        if not separator:
            raise AditServerError("A part of the answer has no end of its headers.")
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, body)


def _header_parameter(value: str, name: str) -> str | None:
    if not value:
        return None
    message = Message()
    message["content-type"] = value
    parameter = message.get_param(name)
    return parameter if isinstance(parameter, str) else None
