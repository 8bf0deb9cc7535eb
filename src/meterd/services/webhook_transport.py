"""The delivery client's httpx transport: httpcore's connection pool with the SSRF
guard (``webhook_targets.GuardedBackend``) as its network backend, so every
connection goes to an address the guard checked at that moment.

httpx's ``HTTPTransport`` takes no network backend, and reaching into its private
pool would break on any httpx release; this is the small part of it meterd needs
(no proxy, HTTP/1.1, no retries), built on public APIs only: ``httpx.BaseTransport``
above, ``httpcore.ConnectionPool`` below, httpcore's errors raised as httpx's so
the sender sees one family.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

from meterd.services.webhook_targets import GuardedBackend, Resolver, resolve


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport over httpcore's connection pool whose sockets
    ``GuardedBackend`` opens (checked addresses only; the name still drives Host,
    SNI and certificates)."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self.pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            retries=0,
            network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with httpx_errors():
            response = self.pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.pool.close()


class _ResponseStream(httpx.SyncByteStream):
    """httpcore's response body as httpx reads it, its errors mapped too."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with httpx_errors():
            yield from self.stream

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()


#: httpcore's errors and the httpx error each is raised as (its closest match is
#: found along the error's class hierarchy, so ConnectTimeout is not a TimeoutException).
_HTTPX_ERRORS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def httpx_errors() -> Iterator[None]:
    """Raise an httpcore error as its httpx counterpart; anything else (a
    ``RefusedTarget`` from the guard included) as it is."""
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = _HTTPX_ERRORS.get(kind)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise
