"""A streaming reader of multipart/related bodies (RFC 2046 5.1): the studies WADO-RS sends,
the instances a STOW-RS request brings.

Parts are handed out one by one while the body still arrives, so a study is never held whole.
The reader is strict where a lenient one would lose data silently: a body that ends before its
closing delimiter (a PACS that died, a connection cut by a proxy) or a part that does not end
where its Content-Length says is an error, never a shorter study.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import IO

from adit.core.validators import shown

# Part headers are a few lines; anything longer is not a multipart body we understand.
MAX_HEADER_BYTES = 16 * 1024
_CRLF = b"\r\n"


class MultipartError(ValueError):
    """The body is not a complete multipart body: cut short, or malformed."""


@dataclass(frozen=True)
class Part:
    """One part; its body in ``body``, or, for a part spooled to disk, in ``file`` (an
    anonymous temporary file, positioned at its start, that the receiver of the part owns)."""

    headers: dict[str, str]  # names lower-cased
    body: bytes
    file: IO[bytes] | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header.

    Raises:
        MultipartError: If the header names no multipart type or no boundary.
    """
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "multipart":
        got = shown(content_type) if content_type else "nothing"
        raise MultipartError(f"Expected a multipart response, got {got}.")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise MultipartError(
            f"The multipart response names no usable boundary: {shown(content_type)}"
        )
    return boundary


def iter_parts(
    chunks: Iterable[bytes], boundary: str, spool_above: int | None = None
) -> Iterator[Part]:
    """The parts of a multipart body that arrives in ``chunks``, each as soon as it is complete.

    Args:
        spool_above: A part longer than this many bytes is written to a temporary file as it
            arrives (``Part.file``) instead of being collected in memory: at once when its
            Content-Length says so, else as soon as it has grown past the size.

    Raises:
        MultipartError: If the body ends before the closing delimiter, a part's headers are
            malformed, or a part is longer or shorter than its Content-Length.
    """
    reader = _Reader(iter(chunks))
    delimiter = b"--" + boundary.encode("ascii")
    # The preamble ends at the first delimiter at the start of a line.
    if not reader.skip_until_line_starting(delimiter):
        raise MultipartError("The multipart body holds no part: its first boundary is missing.")
    count = 0
    while True:
        if reader.take_if(b"--", count):
            return  # the closing delimiter; what follows is the epilogue
        reader.skip_line_rest(count)
        headers = reader.headers(count)
        length = _content_length(headers, count)
        file = None
        if length is not None:
            if spool_above is not None and length > spool_above:
                body, file = b"", reader.spool_exactly(length, count)
            else:
                body = reader.take_exactly(length, count)
            if not reader.take_if(_CRLF + delimiter, count):
                raise MultipartError(
                    f"Part {count + 1} of the multipart body does not end where its "
                    f"Content-Length ({length} bytes) says."
                )
        else:
            body, file = reader.take_until(_CRLF + delimiter, count, spool_above)
        count += 1
        yield Part(headers, body, file)
        # Not kept while the caller reads on: a part may weigh hundreds of megabytes.
        del body, file


def _content_length(headers: dict[str, str], index: int) -> int | None:
    text = headers.get("content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise MultipartError(f"Part {index + 1} has an invalid Content-Length: {shown(text)}.")
    return int(text)


class _Reader:
    """A byte buffer over the chunks with the few reads the multipart grammar needs."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = bytearray()

    def _more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buffer += chunk
                return True
        return False

    def _cut_short(self, index: int) -> MultipartError:
        return MultipartError(
            f"The multipart body was cut short after {index} complete part(s), before its "
            "closing boundary: the connection was cut or the server stopped sending."
        )

    def skip_until_line_starting(self, marker: bytes) -> bool:
        searched = 0
        while True:
            if self._buffer.startswith(marker):
                del self._buffer[: len(marker)]
                return True
            found = self._buffer.find(_CRLF + marker, searched)
            if found >= 0:
                del self._buffer[: found + len(_CRLF) + len(marker)]
                return True
            searched = max(0, len(self._buffer) - len(marker) - len(_CRLF))
            if not self._more():
                return False

    def take_if(self, expected: bytes, index: int) -> bool:
        """Consumes ``expected`` if the buffer starts with it (reading as much as needed)."""
        while len(self._buffer) < len(expected):
            if not self._more():
                if expected.startswith(bytes(self._buffer)):
                    raise self._cut_short(index)
                break
        if self._buffer.startswith(expected):
            del self._buffer[: len(expected)]
            return True
        return False

    def skip_line_rest(self, index: int) -> None:
        """Skips transport padding after a delimiter up to and including its CRLF."""
        end = self._find(_CRLF, index, limit=MAX_HEADER_BYTES)
        if self._buffer[:end].strip(b" \t"):
            raise MultipartError(f"Part {index + 1}: unexpected bytes after its boundary.")
        del self._buffer[: end + len(_CRLF)]

    def headers(self, index: int) -> dict[str, str]:
        while len(self._buffer) < len(_CRLF):
            if not self._more():
                raise self._cut_short(index)
        if self._buffer.startswith(_CRLF):  # a part without headers
            del self._buffer[: len(_CRLF)]
            return {}
        end = self._find(_CRLF + _CRLF, index, limit=MAX_HEADER_BYTES)
        block = self._buffer[:end].decode("latin-1")
        del self._buffer[: end + 2 * len(_CRLF)]
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise MultipartError(
                    f"Part {index + 1} has a malformed header line: {shown(line)}."
                )
            headers[name.strip().lower()] = value.strip()
        return headers

    def take_exactly(self, length: int, index: int) -> bytes:
        while len(self._buffer) < length:
            if not self._more():
                raise self._cut_short(index)
        with memoryview(self._buffer) as view:
            body = bytes(view[:length])  # one copy, not a slice's and then its bytes'
        del self._buffer[:length]
        return body

    def spool_exactly(self, length: int, index: int) -> IO[bytes]:
        """The next ``length`` bytes written to an anonymous temporary file, chunk by chunk."""
        file = tempfile.TemporaryFile(prefix="adit-part-")
        try:
            left = length
            while left:
                if not self._buffer and not self._more():
                    raise self._cut_short(index)
                taken = min(left, len(self._buffer))
                file.write(self._buffer[:taken])
                del self._buffer[:taken]
                left -= taken
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return file

    def take_until(
        self, marker: bytes, index: int, spool_above: int | None = None
    ) -> tuple[bytes, IO[bytes] | None]:
        """The bytes up to ``marker`` (consumed too); once they exceed ``spool_above``, they
        go to an anonymous temporary file instead, as they arrive (then ``(b"", file)``)."""
        if spool_above is None:
            end = self._find(marker, index)
            body = bytes(self._buffer[:end])
            del self._buffer[: end + len(marker)]
            return body, None
        file: IO[bytes] | None = None
        try:
            searched = 0
            while True:
                found = self._buffer.find(marker, searched)
                if found >= 0:
                    if file is None and found <= spool_above:
                        body = bytes(self._buffer[:found])
                        del self._buffer[: found + len(marker)]
                        return body, None
                    if file is None:  # arrived in one go: a file all the same
                        file = tempfile.TemporaryFile(prefix="adit-part-")
                    file.write(self._buffer[:found])
                    del self._buffer[: found + len(marker)]
                    file.seek(0)
                    return b"", file
                # A marker may straddle two chunks: its start stays in the buffer.
                safe = len(self._buffer) - len(marker) + 1
                if safe > 0 and (file is not None or safe > spool_above):
                    if file is None:
                        file = tempfile.TemporaryFile(prefix="adit-part-")
                    file.write(self._buffer[:safe])
                    del self._buffer[:safe]
                searched = max(0, len(self._buffer) - len(marker) + 1)
                if not self._more():
                    raise self._cut_short(index)
        except BaseException:
            if file is not None:
                file.close()
            raise

    def _find(self, marker: bytes, index: int, limit: int | None = None) -> int:
        searched = 0
        while True:
            found = self._buffer.find(marker, searched)
            if found >= 0:
                return found
            if limit is not None and len(self._buffer) > limit:
                raise MultipartError(f"Part {index + 1} has headers longer than {limit} bytes.")
            # A marker may straddle two chunks: search again from just before the old end.
            searched = max(0, len(self._buffer) - len(marker) + 1)
            if not self._more():
                raise self._cut_short(index)
