"""The listening socket of every server of the sub-package (the sandbox, `emo-prep serve`)."""

from __future__ import annotations

import socket

__all__ = ["listen"]


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
