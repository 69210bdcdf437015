"""ADIT's web server: daphne, with request bodies handed to the application as it reads them
and responses that wait for a slow client.

Run it as daphne, with daphne's options::

    python -m adit.web_server -b 0.0.0.0 -p 8000 adit.asgi:application

Why not daphne itself (4.2): Twisted receives a request body completely before daphne sees the
request, keeping a body of 100 kB or more in a temporary file. daphne then reads all of that
file into the application's receive queue at once, in ``http.request`` messages, before the
application reads any: a 500 MB STOW-RS request or a 2 GB upload costs that much memory in the
web process. Here the queue reads the next chunk from Twisted's file only when the application
asks for it; the messages daphne puts there (``http.disconnect``) come first. Twisted would
also parse a form or multipart upload into ``request.args`` in memory, which daphne never
uses; that is switched off.

On the way out, daphne writes every chunk a response sends to Twisted's transport, whose buffer
grows without bound for a client that reads slower than the application produces (a WADO-RS
retrieval of a large study). Here each request registers itself with Twisted as a producer for
its response: when the transport's buffer is full Twisted pauses it, and the application's
``send()`` of a chunk with more to come returns only once the buffer has drained.

Everything else (WebSockets, timeouts, logging, the command line) is daphne's.
"""

from __future__ import annotations

import asyncio
import os
from functools import partial
from typing import BinaryIO

# daphne.cli imports daphne.server, which installs Twisted's asyncio reactor: before anything
# else of Twisted's, as in daphne's own entry point.
import daphne.cli
import daphne.server
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

# How much of a request body goes to the application per message, at least. daphne's
# request_buffer_size (8 KiB) would make a 500 MB STOW-RS body 64,000 messages, which Django
# copies one by one before the view runs (0.4 s more than in 256 KiB pieces, cli bench
# dicomweb); one message is all the memory a piece takes.
BODY_CHUNK_SIZE = 256 * 1024


class _HandedOver:
    """What daphne finds as the request's ``content`` once the body went to the application's
    queue. daphne's ``process()`` stops before queueing the body when it finds the content
    closed; Twisted closes the content when the request ends, which closes the body."""

    closed = True

    def __init__(self, body: BinaryIO):
        self._body = body

    def close(self) -> None:
        self._body.close()


class _LazyBodyQueue(asyncio.Queue):
    """The application's receive queue: daphne's messages, else the next chunk of the body,
    read from Twisted's spooled content only when the application asks for it."""

    def __init__(self, body: BinaryIO, chunk_size: int):
        super().__init__()
        self._body: BinaryIO | None = body
        self._chunk_size = chunk_size
        self._length = body.seek(0, os.SEEK_END)
        body.seek(0)

    async def get(self):
        # A pending message is a disconnect (of the client, or after the response): the rest
        # of the body is of no use then.
        if self._body is not None and self.empty() and not self._body.closed:
            chunk = self._body.read(self._chunk_size)
            more_body = self._body.tell() < self._length
            if not more_body:
                self._body.close()
                self._body = None
            return {"type": "http.request", "body": chunk, "more_body": more_body}
        return await super().get()


@implementer(IPushProducer)
class _SendGate:
    """Registered with Twisted as the producer of a response: Twisted pauses it while the
    transport's buffer is full and resumes it when that has drained."""

    def __init__(self):
        self._open = asyncio.Event()
        self._open.set()

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self._open.clear()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self._open.set()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


class LazyBodyRequest(WebRequest):
    """daphne's request, handing its body over lazily and pacing its response."""

    def __init__(self, *args, **kwargs):
        # Parsing forms into request.args would read the whole body into memory; daphne passes
        # the body to the application and never looks at request.args.
        kwargs["parsePOSTFormSubmission"] = False
        self.send_gate = _SendGate()
        super().__init__(*args, **kwargs)

    def hand_over_body(self) -> BinaryIO:
        body = self.content
        assert body is not None, "Twisted made the content when the headers came"
        self.content = _HandedOver(body)
        return body

    def handle_reply(self, message):
        super().handle_reply(message)
        if message["type"] == "http.response.start" and not self.finished and self.channel:
            self.registerProducer(self.send_gate, True)

    def finish(self):
        # Twisted complains about a producer still registered when the request ends; and an
        # application still sending (daphne finishes a request that timed out) must not wait.
        if self.producer is not None and self.channel is not None:
            self.unregisterProducer()
        self.send_gate.stopProducing()
        super().finish()

    def connectionLost(self, reason):  # noqa: N802 - Twisted's interface
        # Nothing will drain the buffer any more: an application waiting to send goes on (its
        # next send is dropped, as daphne drops anything sent to a closed connection).
        self.send_gate.stopProducing()
        super().connectionLost(reason)


class LazyBodyHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr):  # noqa: N802 - Twisted's interface
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.requestFactory = LazyBodyRequest
        return protocol


class Server(daphne.server.Server):
    """daphne's server with LazyBodyRequests for HTTP (WebSockets are daphne's own)."""

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        # daphne's run() makes its HTTPFactory and listens with it; this one is the same but
        # for the requests it makes.
        self._http_factory = LazyBodyHTTPFactory(self)

    def create_application(self, protocol, scope):
        """Starts the application for a connection and returns its receive queue, as daphne's
        does; for an HTTP request that queue reads the body lazily."""
        if not isinstance(protocol, LazyBodyRequest):
            return super().create_application(protocol, scope)
        assert "application_instance" not in self.connections[protocol]
        chunk_size = max(self.request_buffer_size, BODY_CHUNK_SIZE)
        queue = _LazyBodyQueue(protocol.hand_over_body(), chunk_size)
        scope.setdefault("asgi", {"version": "3.0"})
        instance = self.application(
            scope=scope, receive=queue.get, send=partial(self.handle_reply, protocol)
        )
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(instance)
        return queue

    async def handle_reply(self, protocol, message):
        await super().handle_reply(protocol, message)
        if (
            isinstance(protocol, LazyBodyRequest)
            and message["type"] == "http.response.body"
            and message.get("more_body", False)
        ):
            await protocol.send_gate.wait()


class CommandLineInterface(daphne.cli.CommandLineInterface):
    description = "ADIT's web server (daphne, reading request bodies as the app asks)"
    server_class = Server


if __name__ == "__main__":
    CommandLineInterface.entrypoint()
