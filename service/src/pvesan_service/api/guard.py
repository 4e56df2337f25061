"""Bounds on what one HTTP client can hold of the server: the request-reading limits uvicorn lacks.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but gives a client all the
time it wants to send a request, so a few hundred connections dribbling their headers one byte at
a time hold the server's sockets forever (slowloris).  ``GuardedHttpToolsProtocol`` adds:
- a deadline for reading each request, headers and body (``request_timeout``): past it the
  connection is closed;
- a cap on header bytes and on the body (``max_header_bytes``, ``max_body_bytes``: 431/413 and close);
- a cap on connections per client address (``max_connections_per_client``): more are closed at once.
The total number of connections is capped by uvicorn's own ``limit_concurrency`` (503 beyond it),
and the TLS handshake by ``tls_handshake_timeout`` (asyncio's default is 60 s).
"""
from __future__ import annotations

import asyncio
import asyncio.constants
import collections
import logging
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("pvesan.http")


@dataclass(frozen=True)
class Limits:
    request_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    tls_handshake_timeout: float = 10.0
    max_connections: int = 512
    max_connections_per_client: int = 64
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 1024 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = Limits()
    _per_client: collections.Counter = collections.Counter()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._header_bytes = self._body_bytes = 0
        self._peer = self.client[0] if self.client else None
        self._per_client[self._peer] += 1
        if self._per_client[self._peer] > self.limits.max_connections_per_client:
            log.warning("closing a connection of %s: more than %d open", self._peer, self.limits.max_connections_per_client)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        self._per_client[self._peer] -= 1
        if self._per_client[self._peer] <= 0:
            del self._per_client[self._peer]
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        log.info("closing a connection of %s: no complete request within %ss", self._peer, self.limits.request_timeout)
        self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        self._disarm()
        body = b'{"detail":"%s"}' % reason.encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))
        self.transport.close()

    # -- parser callbacks: each request gets its own deadline, from its first byte to its last
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._body_bytes = 0
        if self._deadline is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            return self._refuse(431, "Request Header Fields Too Large")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.limits.max_header_bytes:
            return self._refuse(431, "Request Header Fields Too Large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        length = dict(self.headers).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:
            return self._refuse(413, "Content Too Large")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            return self._refuse(413, "Content Too Large")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or timed out: the rest of what the client sends is not read
        super().data_received(data)


def protocol(limits: Limits) -> type:
    """The protocol class for ``uvicorn.run(http=...)`` with these limits.  Also sets asyncio's
    TLS handshake timeout, which uvicorn does not expose: the default applies to every server
    of the process (there is one)."""
    asyncio.constants.SSL_HANDSHAKE_TIMEOUT = limits.tls_handshake_timeout
    return type("PvesanHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "_per_client": collections.Counter()})
