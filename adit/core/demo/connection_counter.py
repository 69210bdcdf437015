"""A TCP proxy on loopback for tests and benchmarks: it forwards connections to a real server
(an Orthanc's DICOM port) and counts how many are open through it at once, as the server sees
them."""

from __future__ import annotations

import select
import selectors
import socket
import threading

# How many reads of one connection in a row before the others get their turn.
_READS_IN_A_ROW = 64


class ConnectionCounter:
    """Forwards every connection to ``port`` on to ``target``.

    One thread does all the work, in the order the kernel reports it: data and the ends of
    connections that arrived before a new connection are handled before the new one is
    accepted, so a connection closed before another opened is never counted together with it.

    Attributes:
        port: Where to connect to reach ``target`` through the counter.
        most_at_once: The largest number of connections that were open at the same time.
        total: How many connections were opened.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.open = 0
        self.most_at_once = 0
        self.total = 0
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._clients: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-counter", daemon=True)

    def __enter__(self) -> ConnectionCounter:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                events = self._selector.select(timeout=0.1)
                # The listener last: see the class docstring.
                for key, _ in sorted(events, key=lambda event: event[0].fileobj is self._listener):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)  # pyright: ignore[reportArgumentType]
        finally:
            for sock in [*self._peers, self._listener]:
                sock.close()
            self._selector.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._selector.register(sock, selectors.EVENT_READ)
            self._peers[client], self._peers[upstream] = upstream, client
            self._clients.add(client)
            self.open += 1
            self.total += 1
            self.most_at_once = max(self.most_at_once, self.open)

    def _forward(self, sock: socket.socket) -> None:
        for _ in range(_READS_IN_A_ROW):
            other = self._peers.get(sock)
            if other is None:
                return  # closed with its peer earlier in this round
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close(sock, other)
                return
            try:
                _send_all(other, data)
            except OSError:
                self._close(sock, other)
                return

    def _close(self, sock: socket.socket, other: socket.socket) -> None:
        for each in (sock, other):
            self._selector.unregister(each)
            del self._peers[each]
            each.close()
            if each in self._clients:
                self._clients.discard(each)
                self.open -= 1


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Sends on a non-blocking socket, waiting while the receiver's buffer is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            if not select.select([], [sock], [], 10)[1]:
                raise TimeoutError("the receiver took nothing for 10 s") from None
