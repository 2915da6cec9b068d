"""Where webhooks may go: public addresses, and the networks an operator allows.

A callback URL comes from an owner. Sent to as given, it would let any owner make the
workers POST to what only they can reach: the cloud's metadata service, Redis, an
admin page on the private network. So a message goes only to a public address, or to
one in ``LONGPLAY_WEBHOOK_ALLOWED_NETWORKS``. The check is made on the address the
connection is opened to, after the name is resolved (:class:`PublicOnlyBackend`), so a
name that resolves one way when checked and another when used gets nowhere. An address
written in the URL itself (or ``localhost``) is refused at submission already
(:func:`refusal`).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from longplay.http_time import DeadlineBackend, Transport, can_bound, proxy_for

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedAddress(httpx.ConnectError):
    """The callback's host is (or resolves only to) an address webhooks may not go to."""


_CARRYING_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64, local use
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
"""``::a.b.c.d``, long deprecated; ``::`` and ``::1`` are not among them."""


def embedded(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, where a translator or tunnel would take it
    there: mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64
    (``64:ff9b::a.b.c.d``), translated (``::ffff:0:a.b.c.d``), 6to4
    (``2002:AABB:CCDD::``) or Teredo."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if (address in _IPV4_COMPATIBLE and int(address) > 1) or any(
        address in network for network in _CARRYING_IPV4
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def permitted(address: IPAddress, allowed: Sequence[Network]) -> bool:
    """A public address, or one in an allowed network; an IPv6 address that carries an
    IPv4 one is judged as that one too (``64:ff9b::7f00:1`` reaches 127.0.0.1)."""
    if any(address in network for network in allowed):
        return True
    inner = embedded(address)
    if inner is not None and not permitted(inner, allowed):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return True  # judged as its IPv4 address above
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    return address.is_global and not address.is_multicast


def describe(address: IPAddress) -> str:
    """A word for why ``address`` is not public, for a message to the owner."""
    address = embedded(address) or address
    if address.is_loopback:
        return "a loopback address (this machine)"
    if address.is_link_local:
        return "a link-local address (such as a cloud's metadata service)"
    if address.is_private:
        return "a private address"
    return "not a public address"


def refusal(url: str, allowed: Sequence[Network]) -> str | None:
    """Why ``url`` can be refused without resolving anything (its host is an address
    that is not permitted, or ``localhost``); None when only sending can tell."""
    host = httpx.URL(url).host
    name = host.rstrip(".")  # a name's root: localhost. is localhost
    if name == "localhost" or name.endswith(".localhost"):
        address: IPAddress = ipaddress.IPv4Address("127.0.0.1")
    else:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
    if permitted(address, allowed):
        return None
    return _refused(host, address)


def _refused(host: str, address: IPAddress) -> str:
    named = f"{host} is" if host == str(address) else f"{host} is {address},"
    return (
        f"{named} {describe(address)}, and webhooks go only to public addresses or to "
        "LONGPLAY_WEBHOOK_ALLOWED_NETWORKS (which the operator sets)"
    )


class PublicOnlyBackend(DeadlineBackend):
    """httpcore's own sockets, opened only to permitted addresses: the name is resolved
    here and the connection made to the address checked, never resolved again."""

    def __init__(self, allowed: Sequence[Network], deadline: float) -> None:
        super().__init__(deadline)
        self._allowed = allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:  # what connecting would have said: the name is unknown
            raise httpcore.ConnectError(str(exc)) from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
        usable = [a for a in dict.fromkeys(addresses) if permitted(a, self._allowed)]
        if not usable:
            raise RefusedAddress(_refused(host, addresses[0]))
        error: httpcore.ConnectError | None = None
        for address in usable:
            try:
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = httpcore.ConnectError(str(exc))
        assert error is not None
        raise error


def client_for(url: str, allowed: Sequence[Network], *, timeout: float) -> httpx.Client:
    """The client for one attempt at ``url``, all of it within ``timeout`` seconds from
    now: through the proxy the environment names for it (``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``NO_PROXY``), which then decides where traffic may go; else
    straight, to permitted addresses only."""
    deadline = time.monotonic() + timeout
    proxy = proxy_for(httpx.URL(url))
    if not can_bound(proxy):  # SOCKS: httpx's own pool
        return httpx.Client(proxy=proxy, trust_env=False, timeout=timeout)
    if proxy is not None:
        transport = Transport(DeadlineBackend(deadline), httpx.Proxy(proxy))
    else:
        transport = Transport(PublicOnlyBackend(allowed, deadline), None)
    return httpx.Client(transport=transport, trust_env=False, timeout=timeout)
