"""Where a webhook may be sent (the SSRF guard), and the Standard Webhooks secret
and signature.

A target is refused when it is private (RFC 1918, CGNAT 100.64/10, ...),
loopback, link-local (169.254.0.0/16, the cloud metadata address included),
unique-local IPv6 (fc00::/7), multicast, reserved or unspecified, unless
``METERD_WEBHOOK_ALLOW_PRIVATE=1``. The check runs twice:

* when an endpoint is created: the scheme (http or https) and a literal IP host;
* at every connection: ``GuardedBackend`` is the network backend of the
  delivery client's connection pool (httpcore). It resolves the name itself,
  checks EVERY address of the answer, and opens the TCP connection to an address
  it checked. httpcore still speaks to the URL's name above that socket: the
  ``Host`` header, TLS SNI and certificate verification are the name's. A name
  that rebinds between the check and the connect cannot switch the target,
  because the connect uses the checked address, not a second lookup. Proxies
  from the environment are not used (they would connect elsewhere), and
  redirects are not followed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
import typing
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpcore

from meterd.core.errors import InvalidError

#: Standard Webhooks secrets: this prefix, then base64 of the key.
SECRET_PREFIX = "whsec_"
#: Key sizes accepted (bytes), as the Standard Webhooks recommendation (24 to 64).
MIN_KEY, MAX_KEY = 24, 64
MAX_URL = 2000

Resolver = Callable[[str, int], Sequence[str]]


class RefusedTarget(InvalidError):
    """A delivery whose target address is not allowed; the message says why."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (InvalidError if it is not one)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidError("the secret must be whsec_ followed by base64 (or omit it)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidError("the secret is not valid base64 after whsec_") from None
    return key


def check_secret(secret: str) -> str:
    key = secret_key(secret)
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise InvalidError(f"the secret's key must be {MIN_KEY} to {MAX_KEY} bytes")
    return secret


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(
        secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(mac).decode()


def refusal(address: str) -> str | None:
    """Why ``address`` (an IP) may not be called, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if test:
            return f"{ip} is {kind}"
    return None


def check_url(url: str, *, allow_private: bool) -> str:
    """An endpoint URL as stored, or InvalidError: http(s), a host, and no literal IP
    that is refused. Credentials in the URL (basic auth) are allowed; meterd shows
    them masked."""
    if len(url) > MAX_URL:
        raise InvalidError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise InvalidError(f"the URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidError("the webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise InvalidError("the webhook URL has no host")
    if not allow_private:
        try:
            ipaddress.ip_address(parts.hostname)
        except ValueError:
            return url  # a name: its addresses are checked at each delivery
        why = refusal(parts.hostname)
        if why:
            raise InvalidError(
                f"the webhook target {why}; set METERD_WEBHOOK_ALLOW_PRIVATE=1 to allow it"
            )
    return url


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses it checked itself."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        if not self.allow_private:
            for address in addresses:
                why = refusal(address)
                if why:
                    raise RefusedTarget(f"refused: {host} resolves to {why}")
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last
