"""The listening socket and the HTTP/1.1 protocol of every server of the sub-package (the
sandbox, `emo-prep serve`)."""

from __future__ import annotations

import json
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .answers import Reply, error_body

__all__ = ["listen", "IdleClosingProtocol"]


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with proto IPPROTO_TCP, not 0 as socket.create_server makes
    it: asyncio sets TCP_NODELAY only on connections of such a socket, and without it every
    keep-alive answer (head and body written apart) waits ~40 ms for the client's delayed ACK.
    Port 0 takes a free port (read it back with getsockname); an OSError when it cannot bind."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class IdleClosingProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two differences: a connection with no request in
    progress is closed after the keep-alive timeout counted from its first byte on (uvicorn
    arms that timer only after an answer, so a silent or half-sent request head would hold the
    connection forever: a slow-header client could take every connection), and a request h11
    cannot parse (a bad Content-Length, say) is answered with the JSON error body of every other
    error instead of plain text."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None or self.cycle.response_complete:  # between requests or inside a request head
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body(Reply(400, "InvalidParameter", "the request's head could not be read (a "
                                                                    "malformed line or header, or a bad "
                                                                    "Content-Length)")), ensure_ascii=False).encode()
        for event in (h11.Response(status_code=400, reason=b"Bad Request",
                                   headers=[(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
