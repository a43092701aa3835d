"""Fetch a photo or clip from an http(s) URL within fixed bounds of time, memory and reach.

- Time: one total deadline for the whole fetch (connect, redirects, headers, every byte): the
  fetch runs in a helper thread, the caller waits at most the deadline, then the socket is
  shut, so a server trickling one byte a second cannot hold us.
- Memory: the body is decoded here, not by httpx (whose gzip decoder inflates a whole chunk
  at once: 3 KB of `Content-Encoding: gzip, gzip` became gigabytes), each layer inflating at
  most what the cap still allows; past the cap the fetch stops.
- Reach: every address a host resolves to is checked against the fetch's reach, and the
  connection is made to the address that was checked (no second lookup, so no DNS-rebinding
  gap); redirects are followed by hand and each hop is checked the same way. Reach "public"
  (what `emo-prep serve` uses) refuses loopback, private, link-local (the cloud metadata
  address 169.254.169.254), multicast, reserved and unspecified addresses; "private" allows
  loopback and private networks but never the rest; by default a URL whose host is already
  not public may go anywhere (the command line reading a photo from a local server), any other
  stays public. Only http and https are read, at every hop.
- Secrets: user:password and token-like query values are redacted in every name and message.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import threading
import time
import zlib
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from .config import URL_MAX_REDIRECTS, URL_TIMEOUT_S
from .errors import InputError

__all__ = ["fetch_url", "redact_url", "source_name", "refused_address", "Reach"]

#: Where a fetch may connect: see the module docstring.
Reach = Literal["public", "private", "any"]

#: Query parameters whose values are credentials (signed OSS/S3 URLs, API tokens).
_SECRET_PARAM = re.compile(r"key|token|sig|secret|pass|auth|credential|session|policy", re.IGNORECASE)
#: Content-Encoding values we inflate ourselves (and announce in Accept-Encoding).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}


def redact_url(url: str) -> str:
    """The URL with user:password and credential-like query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def source_name(source: str | os.PathLike[str]) -> str:
    """How a source is named in reports and messages: a path as given, a URL redacted."""
    text = os.fspath(source)
    return redact_url(text) if "://" in text else text


@functools.lru_cache(maxsize=1)
def _tls():
    """One TLS context per process: building one (the CA bundle) costs ~40 ms, as much as a check."""
    import httpx

    return httpx.create_ssl_context()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def refused_address(address: str, reach: Reach) -> str | None:
    """Why a fetch with this reach may not connect to `address` (an IP literal), or None."""
    ip = _ip(address)
    if ip is None:
        return "not an IP address"
    if reach == "any":
        return None
    if ip.is_loopback:  # before "reserved": ::1 lies in IPv6's reserved ::/8
        return "loopback" if reach == "public" else None
    kinds = (("link-local (cloud metadata)", ip.is_link_local), ("multicast", ip.is_multicast),
             ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved))
    if reach == "public":
        kinds += (("private", ip.is_private), ("non-public", not ip.is_global))
    return next((kind for kind, hit in kinds if hit), None)


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    if _ip(host) is not None:
        return [host]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


def _default_reach(url: str) -> Reach:
    """The command line's rule: a URL on a non-public host may go anywhere, any other stays public."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = _resolve(host, 80)
    except OSError:
        return "public"  # unresolvable: the fetch itself will say so
    return "any" if any(refused_address(a, "public") for a in addresses) else "public"


def fetch_url(url: str, max_bytes: int, *, deadline_s: float = URL_TIMEOUT_S, reach: Reach | None = None) -> bytes:
    """GET `url` (following up to URL_MAX_REDIRECTS allowed redirects) and return at most
    `max_bytes` decoded bytes, all within `deadline_s` seconds; InputError('unreadable') else.
    `reach` limits the addresses connected to (module docstring); None: the command line's rule.

    The fetch runs in a helper thread so that the deadline holds whatever the server does
    (headers trickled a byte at a time included); at the deadline its socket is shut.
    """
    shown = redact_url(url)
    _check_scheme(url, shown)
    fetch = _Fetch(url, shown, max_bytes, deadline_s, reach)
    worker = threading.Thread(target=fetch.run, name="emo-prep-fetch", daemon=True)
    worker.start()
    if not fetch.done.wait(deadline_s):
        fetch.expire()
        raise fetch.too_slow()
    if fetch.error is not None:
        raise fetch.error
    return fetch.body


class _Fetch:
    """One fetch, run by a helper thread; `expire()` (any thread) makes it stop at once."""

    def __init__(self, url: str, shown: str, max_bytes: int, deadline_s: float, reach: Reach | None) -> None:
        self.url, self.shown, self.max_bytes, self.reach = url, shown, max_bytes, reach
        self.deadline_s, self.deadline = deadline_s, time.monotonic() + deadline_s
        self.done, self.expired = threading.Event(), threading.Event()
        self.sock: socket.socket | None = None
        self.body, self.error = b"", None

    def expire(self) -> None:
        self.expired.set()
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv at once
            except OSError:
                pass

    def run(self) -> None:
        try:
            self.body = self._get()
        except InputError as exc:
            self.error = exc
        except Exception as exc:  # the thread must always report back
            self.error = self._translate(exc)
        finally:
            self.done.set()

    def too_slow(self) -> InputError:
        return InputError("unreadable", f"{self.shown}: not fetched within {self.deadline_s:g} s",
                          hint="Check the URL and the network, or download the file first.", limit=self.deadline_s)

    def _translate(self, exc: Exception) -> InputError:
        import httpx

        shown = self.shown
        if isinstance(exc, httpx.HTTPStatusError):
            error = InputError("unreadable", f"{shown}: HTTP {exc.response.status_code}",
                               hint="Check that the URL is public and points at the file.")
        elif isinstance(exc, httpx.TimeoutException) or self.expired.is_set():
            error = self.too_slow()
        else:
            error = InputError("unreadable", f"{shown}: {type(exc).__name__}: {str(exc).replace(self.url, shown)}",
                               hint="Check the URL and the network, or download the file first.")
        error.__cause__ = exc
        return error

    def _get(self) -> bytes:
        import httpx  # only URL sources pay for the import

        current = self.url
        reach = self.reach or _default_reach(self.url)
        with httpx.Client(follow_redirects=False, verify=_tls(), headers={"Accept-Encoding": ", ".join(_WBITS)}) \
                as client:
            for _ in range(URL_MAX_REDIRECTS + 1):
                remaining = self.deadline - time.monotonic()
                if remaining <= 0 or self.expired.is_set():
                    raise httpx.TimeoutException("deadline")
                pinned, headers, extensions = self._pin(current, reach)
                with client.stream("GET", pinned, headers=headers, extensions=extensions,
                                   timeout=remaining) as response:
                    stream = response.extensions.get("network_stream")
                    self.sock = stream.get_extra_info("socket") if stream is not None else None
                    if response.is_redirect:
                        current = urljoin(current, response.headers.get("location", ""))
                        continue
                    response.raise_for_status()
                    return self._read_body(response)
        raise InputError("unreadable", f"{self.shown}: more than {URL_MAX_REDIRECTS} redirects",
                         hint="Give the final URL of the file.")

    def _pin(self, url: str, reach: Reach) -> tuple[str, dict[str, str], dict[str, str]]:
        """The URL rewritten to the checked address it must connect to, with the Host header
        and TLS server name of the original; InputError when a hop may not be fetched."""
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        hop = "" if url == self.url else f" (redirected to {redact_url(url)})"
        _check_scheme(url, self.shown + hop)
        port = parts.port or (443 if scheme == "https" else 80)
        addresses = _resolve(host, port)
        for address in addresses:
            if kind := refused_address(address, reach):
                raise InputError("unreadable", f"{self.shown}{hop}: {host} is {address}, a {kind} address; not "
                                               f"fetched", hint="Give a public URL of the file, or send its bytes.")
        address = addresses[0]
        shown_ip = f"[{address}]" if ":" in address else address
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        netloc = f"{userinfo}{shown_ip}" + (f":{parts.port}" if parts.port else "")
        host_header = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        extensions = {"sni_hostname": host} if scheme == "https" and _ip(host) is None else {}
        return urlunsplit((scheme, netloc, parts.path, parts.query, "")), {"Host": host_header}, extensions

    def _read_body(self, response) -> bytes:
        encodings = [e.strip().lower() for e in response.headers.get("content-encoding", "").split(",")]
        encodings = [e for e in encodings if e and e != "identity"]
        unknown = [e for e in encodings if e not in _WBITS]
        if unknown:
            raise InputError("unreadable", f"{self.shown}: content encoded as {', '.join(unknown)}, which is not read",
                             hint="Download the file and give its path.")
        stages = [_Inflater(_WBITS[e], self.max_bytes, self.shown) for e in reversed(encodings)]
        chunks: list[bytes] = []
        total = 0
        for raw in response.iter_raw():
            if self.expired.is_set():
                raise TimeoutError("deadline")
            for stage in stages:
                raw = stage.feed(raw)
            total += len(raw)
            if total > self.max_bytes:
                raise _too_big(self.shown, self.max_bytes)
            chunks.append(raw)
        return b"".join(chunks)


def _check_scheme(url: str, shown: str) -> None:
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise InputError("unreadable", f"{shown}: only http and https URLs are read, not {scheme}://",
                         hint="Download the file and give its path, or give its public http(s) URL.")


def _too_big(shown: str, max_bytes: int) -> InputError:
    return InputError("unreadable", f"{shown}: more than {max_bytes} bytes (decoded)", hint="Use a smaller file.",
                      limit=max_bytes)


class _Inflater:
    """One Content-Encoding layer, inflating at most the bytes the cap still allows."""

    def __init__(self, wbits: int, max_bytes: int, shown: str) -> None:
        self.wbits, self.max_bytes, self.left, self.shown = wbits, max_bytes, max_bytes, shown
        self.inflater = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            try:
                piece = self.inflater.decompress(data, self.left + 1)
            except zlib.error as exc:
                raise InputError("unreadable", f"{self.shown}: the compressed body is damaged ({exc})") from exc
            self.left -= len(piece)
            if self.left < 0:
                raise _too_big(self.shown, self.max_bytes)
            out.append(piece)
            if self.inflater.unconsumed_tail:
                data = self.inflater.unconsumed_tail
            elif self.inflater.eof and self.inflater.unused_data:  # another gzip member follows
                data = self.inflater.unused_data
                self.inflater = zlib.decompressobj(self.wbits)
            else:
                data = b""
        return b"".join(out)
