"""SSRF protection for every outbound URL: judged when saved, and again when sent.

Two checks, used together:

- ``check_url(url, policy)`` when a destination is saved (and again before each send): only
  ``http``/``https``, a host and no user info, no whitespace, control characters or backslashes,
  and a host that is either a name (IDNA-encoded, lower-cased) or an IP literal. Literals are
  parsed the way browsers and ``inet_aton`` read them, so ``127.1``, ``0x7f000001``,
  ``2130706433``, ``0177.0.0.1``, ``[::1]``, ``[::ffff:127.0.0.1]`` and ``[fe80::1%25eth0]`` are
  all recognised and judged, and a host that ends in a number but is no valid address is refused
  rather than handed to a resolver that might read it differently.
- ``resolve_and_check(host, port, policy)`` when a connection is opened: resolve the name with
  ``getaddrinfo`` and refuse unless EVERY address is allowed. The caller then connects to one of
  the returned addresses and never resolves the name again, which defeats DNS rebinding between
  the check and the connection (``relevo.channels.http`` does exactly that).

Refused by default: unspecified, loopback, private (RFC 1918), shared/CGNAT (100.64/10),
link-local, cloud metadata endpoints (by address and by name), multicast, reserved and
documentation ranges, IPv6 unique-local and site-local, and IPv4 addresses embedded in IPv6
(IPv4-mapped, 6to4, Teredo, NAT64) when the embedded address is refused. Anything else that is
not globally routable (``ipaddress``'s ``is_global``) is refused too.

An operator admits internal receivers with an ``OutboundPolicy``: ``allow_hosts`` names hosts
(names or literals) whose addresses are all admitted, ``allow_networks`` admits addresses in
the given networks for any host. Metadata endpoints and unspecified addresses are never admitted,
whatever the policy says.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any
from urllib.parse import quote, urlsplit

from relevo.channels.errors import HostNotFound, UnsafeUrl

__all__ = [
    "DEFAULT_POLICY",
    "CheckedUrl",
    "GetAddrInfo",
    "IPAddress",
    "IPNetwork",
    "OutboundPolicy",
    "UnsafeUrl",
    "check_url",
    "describe_refusal",
    "judge_address",
    "normalise_host",
    "resolve_and_check",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# socket.getaddrinfo's shape, called as (host, port, family, type, proto)
GetAddrInfo = Callable[[str, int, int, int, int], Sequence[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Never admitted, even by an allowlist: nothing legitimate lives there, and they hand out
# credentials. Names are compared after normalisation (lower case, no trailing dot).
METADATA_ADDRESSES: dict[IPAddress, str] = {
    ip_address("169.254.169.254"): "a cloud metadata endpoint (AWS, GCP, Azure, OCI, ...)",
    ip_address("169.254.170.2"): "the AWS ECS task metadata endpoint",
    ip_address("fd00:ec2::254"): "the AWS metadata endpoint (IPv6)",
    ip_address("100.100.100.200"): "the Alibaba Cloud metadata endpoint",
    ip_address("168.63.129.16"): "the Azure WireServer endpoint",
    ip_address("192.0.0.192"): "the Oracle Cloud metadata endpoint",
}
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

_V4_TABLE: tuple[tuple[str, str, str], ...] = (
    ("0.0.0.0/8", "unspecified", "an unspecified ('this host') address"),
    ("10.0.0.0/8", "private", "a private (RFC 1918) address"),
    ("100.64.0.0/10", "shared", "a shared carrier-grade NAT (100.64/10) address"),
    ("127.0.0.0/8", "loopback", "a loopback address"),
    ("169.254.0.0/16", "link_local", "a link-local address"),
    ("172.16.0.0/12", "private", "a private (RFC 1918) address"),
    ("192.0.0.0/24", "reserved", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "documentation", "a documentation address"),
    ("192.88.99.0/24", "reserved", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", "private", "a private (RFC 1918) address"),
    ("198.18.0.0/15", "reserved", "a benchmarking address"),
    ("198.51.100.0/24", "documentation", "a documentation address"),
    ("203.0.113.0/24", "documentation", "a documentation address"),
    ("224.0.0.0/4", "multicast", "a multicast address"),
    ("240.0.0.0/4", "reserved", "a reserved or broadcast address"),
)
_V6_TABLE: tuple[tuple[str, str, str], ...] = (
    ("::/128", "unspecified", "the unspecified address"),
    ("::1/128", "loopback", "a loopback address"),
    ("64:ff9b:1::/48", "private", "a local-use NAT64 address"),
    ("::/8", "reserved", "a reserved address (IPv4-compatible or unassigned)"),
    ("100::/64", "reserved", "a discard-only address"),
    ("2001::/32", "reserved", "a Teredo address"),
    ("2001:db8::/32", "documentation", "a documentation address"),
    ("fc00::/7", "unique_local", "a unique-local (private) address"),
    ("fe80::/10", "link_local", "a link-local address"),
    ("fec0::/10", "private", "a site-local address"),
    ("ff00::/8", "multicast", "a multicast address"),
)
_REFUSED: tuple[tuple[IPNetwork, str, str], ...] = tuple(
    (ip_network(net), reason, text) for net, reason, text in (*_V4_TABLE, *_V6_TABLE)
)
_NAT64 = IPv6Network("64:ff9b::/96")
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_HOST_CHARS = re.compile(r"[a-z0-9._-]+")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"0x[0-9a-f]*")


def _normalise_allowed_host(entry: str) -> str:
    text = entry.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ip_address(text))
    except ValueError:
        return normalise_host(text)[0]


@dataclass(frozen=True)
class OutboundPolicy:
    """What an outbound request may reach besides the public internet.

    Args:
        allow_hosts: host names or IP literals whose addresses are all admitted (an operator's
            named internal receiver). Entries are normalised like URL hosts, so ``127.1`` and
            ``127.0.0.1`` are the same entry.
        allow_networks: networks whose addresses are admitted for any host.
        require_https: refuse ``http://`` URLs.

    Metadata endpoints and unspecified addresses stay refused whatever is allowed here.
    """

    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_networks: frozenset[IPNetwork] = field(default_factory=frozenset)
    require_https: bool = False

    def __post_init__(self) -> None:
        hosts = frozenset(_normalise_allowed_host(h) for h in self.allow_hosts)
        object.__setattr__(self, "allow_hosts", hosts)

    @classmethod
    def from_strings(
        cls,
        allow_hosts: Iterable[str] = (),
        allow_networks: Iterable[str] = (),
        *,
        require_https: bool = False,
    ) -> OutboundPolicy:
        """Build a policy from configuration text (``"10.1.2.0/24"``, ``"hooks.internal"``).

        Raises:
            ValueError: a network that does not parse.
        """
        return cls(
            allow_hosts=frozenset(allow_hosts),
            allow_networks=frozenset(ip_network(n.strip(), strict=False) for n in allow_networks),
            require_https=require_https,
        )


DEFAULT_POLICY = OutboundPolicy()


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed ``check_url``, split into what a client needs to send it.

    ``host`` is ASCII and lower-case; an IP literal is in canonical form without brackets (so
    ``http://0x7f000001/`` has host ``127.0.0.1``). ``target`` is the percent-encoded path and
    query; the fragment is dropped. ``ip`` is set when the host is a literal.
    """

    url: str
    scheme: str
    host: str
    port: int
    target: str
    ip: IPAddress | None
    allowlisted: bool

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the host, bracketed if IPv6, with the port unless default."""
        host = f"[{self.host}]" if isinstance(self.ip, IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _refuse(message: str, reason: str) -> UnsafeUrl:
    return UnsafeUrl(message, reason=reason)


def _parse_ipv4_number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part) if _DIGITS.fullmatch(part) else None


def _parse_loose_ipv4(host: str) -> IPv4Address:
    """Read ``host`` as ``inet_aton`` and the WHATWG URL parser do (1 to 4 parts, octal, hex)."""
    parts = host.split(".")
    numbers = [_parse_ipv4_number(p) for p in parts]
    valid = [n for n in numbers if n is not None]
    if len(parts) > 4 or len(valid) != len(parts):
        raise _refuse(f"host {host!r} ends in a number but is not an IPv4 address", "malformed")
    *head, last = valid
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):
        raise _refuse(f"host {host!r} is an out-of-range IPv4 address", "malformed")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return IPv4Address(value)


def _ends_in_number(host: str) -> bool:
    last = host.rsplit(".", 1)[-1]
    return bool(_DIGITS.fullmatch(last) or _HEX.fullmatch(last))


def normalise_host(raw: str) -> tuple[str, IPAddress | None]:
    """Normalise a URL host: ``(ascii_host, ip_or_None)``; literals come back canonical.

    Accepts a bracketed or bare IPv6 literal, an IPv4 literal in any ``inet_aton`` spelling, or a
    name (internationalised names are IDNA-encoded, which also folds full-width digits and dots).

    Raises:
        UnsafeUrl: an empty, malformed or ambiguous host, or an IPv6 zone identifier.
    """
    text = raw
    if text.startswith("[") or ":" in text:
        inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        address, _, zone = inner.replace("%25", "%").partition("%")  # RFC 6874 zone ids
        try:
            ip6 = IPv6Address(address)
        except ValueError:
            raise _refuse(f"host {raw!r} is not a valid IPv6 literal", "malformed") from None
        if zone:
            # a zone only means something for link-local addresses, never for a public
            # destination: refuse it, and say what the address itself is
            raise _refuse(
                f"host {raw!r} carries an IPv6 zone identifier "
                f"({describe_refusal(ip6) or 'zone ids are not allowed'})",
                "zone_id",
            )
        return str(ip6), ip6
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise _refuse(f"host {raw!r} is not a valid host name", "malformed") from None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise _refuse("the URL has no host", "no_host")
    if not _HOST_CHARS.fullmatch(text) or "" in text.split("."):
        raise _refuse(f"host {raw!r} is not a valid host name", "malformed")
    if _ends_in_number(text):
        ip4 = _parse_loose_ipv4(text)
        return str(ip4), ip4
    if len(text) > 253 or any(len(label) > 63 for label in text.split(".")):
        raise _refuse(f"host {raw!r} is too long", "malformed")
    return text, None


def _embedded_ipv4(ip: IPv6Address) -> list[tuple[str, IPv4Address]]:
    found: list[tuple[str, IPv4Address]] = []
    if ip.sixtofour is not None:
        found.append(("6to4", ip.sixtofour))
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [("Teredo", client), ("Teredo", server)]
    if ip in _NAT64:
        found.append(("NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)))
    return found


def _judge(ip: IPAddress, policy: OutboundPolicy, admitted: bool) -> tuple[str, str] | None:
    """``(reason, description)`` when ``ip`` is refused, else None."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        inner = _judge(ip.ipv4_mapped, policy, admitted)
        return inner and (inner[0], f"IPv4-mapped {ip.ipv4_mapped}: {inner[1]}")
    if ip in METADATA_ADDRESSES:
        return "metadata", f"{METADATA_ADDRESSES[ip]}, which is never allowed"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified", "an unspecified address, which is never allowed"
    if admitted or any(ip in network for network in policy.allow_networks):
        return None
    if isinstance(ip, IPv6Address):
        for kind, embedded in _embedded_ipv4(ip):
            inner = _judge(embedded, policy, False)
            if inner is not None:
                return inner[0], f"{kind}-embedded {embedded}: {inner[1]}"
        if ip in _NAT64:
            return None  # NAT64 of a public IPv4 address (an IPv6-only network with DNS64)
    for network, reason, description in _REFUSED:
        if ip in network:
            return reason, description
    if not ip.is_global:
        return "not_global", "not a globally routable address"
    return None


def describe_refusal(ip: IPAddress, policy: OutboundPolicy = DEFAULT_POLICY) -> str | None:
    """Why ``ip`` is refused under ``policy`` (``"a loopback address"``), or None if allowed."""
    verdict = _judge(ip, policy, False)
    return None if verdict is None else verdict[1]


_NEVER = frozenset({"metadata", "unspecified"})


def _check_ip(ip: IPAddress, policy: OutboundPolicy, *, host: str | None, subject: str) -> None:
    verdict = _judge(ip, policy, host is not None and host in policy.allow_hosts)
    if verdict is not None:
        reason, description = verdict
        advice = (
            ""
            if reason in _NEVER
            else "; only public addresses are allowed unless the operator allowlists the host"
        )
        raise _refuse(f"{subject} {description}{advice}", reason)


def judge_address(
    ip: IPAddress, policy: OutboundPolicy = DEFAULT_POLICY, *, host: str | None = None
) -> None:
    """Refuse ``ip`` unless ``policy`` allows it (``host``, when given, may be allowlisted).

    Raises:
        UnsafeUrl: with the reason code and a message naming the host and the address.
    """
    subject = f"host {host!r} resolves to {ip}," if host and host != str(ip) else f"{ip} is"
    _check_ip(ip, policy, host=host, subject=subject)


def _judge_name(host: str, policy: OutboundPolicy) -> None:
    if host in METADATA_NAMES:
        raise _refuse(
            f"host {host!r} is a cloud metadata endpoint, which is never allowed", "metadata"
        )
    is_local = host == "localhost" or host.endswith(".localhost")
    if is_local and host not in policy.allow_hosts:
        raise _refuse(f"host {host!r} is a loopback name", "loopback")


def _split_netloc(netloc: str) -> tuple[str, str]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _refuse("the URL has an unterminated IPv6 literal", "malformed")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse("the URL has text after its IPv6 literal", "malformed")
        return host, rest[1:]
    host, sep, port = netloc.rpartition(":")
    return (host, port) if sep else (netloc, "")


def _port(text: str, scheme: str) -> int:
    if not text:
        return DEFAULT_PORTS[scheme]
    if not _DIGITS.fullmatch(text) or not 0 < int(text) < 65536:
        raise _refuse(f"port {text!r} is not a valid TCP port", "port")
    return int(text)


def check_url(url: str, policy: OutboundPolicy = DEFAULT_POLICY) -> CheckedUrl:
    """Judge a destination URL without touching the network (save time, and before each send).

    A host name is judged by name only here (``localhost``, metadata names); its addresses are
    judged by ``resolve_and_check`` when the connection is opened.

    Args:
        url: the URL as the user gave it.
        policy: the operator's allowlist.

    Returns:
        The normalised, split URL.

    Raises:
        UnsafeUrl: the URL is malformed or points somewhere the policy refuses.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"the URL is longer than {MAX_URL_LENGTH} characters", "malformed")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse("the URL contains whitespace or control characters", "malformed")
    if "\\" in url:
        raise _refuse("the URL contains a backslash", "malformed")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _refuse(f"the URL is malformed ({exc})", "malformed") from None
    scheme = parts.scheme.lower()
    allowed = ("https",) if policy.require_https else ("http", "https")
    if scheme not in allowed:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise _refuse(f"{shown} is not allowed: use {' or '.join(allowed)}", "scheme")
    if "@" in parts.netloc:
        raise _refuse(
            "the URL has user info (user:password@); put credentials in a header", "userinfo"
        )
    raw_host, raw_port = _split_netloc(parts.netloc)
    if not raw_host:
        raise _refuse("the URL has no host", "no_host")
    host, ip = normalise_host(raw_host)
    port = _port(raw_port, scheme)
    allowlisted = host in policy.allow_hosts
    if ip is not None:
        subject = f"{ip} is" if raw_host == host else f"host {raw_host!r} is {ip},"
        _check_ip(ip, policy, host=host, subject=subject)
    else:
        _judge_name(host, policy)
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if not path.startswith("/"):
        raise _refuse("the URL path must start with '/'", "malformed")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=~")
    target = f"{path}?{query}" if query else path
    checked = CheckedUrl("", scheme, host, port, target, ip, allowlisted)
    return replace(checked, url=f"{scheme}://{checked.host_header}{target}")


def _sockaddr_ip(sockaddr: tuple[Any, ...]) -> IPAddress:
    text = str(sockaddr[0]).partition("%")[0]
    return ip_address(text)


def resolve_and_check(
    host: str,
    port: int,
    policy: OutboundPolicy = DEFAULT_POLICY,
    *,
    getaddrinfo: GetAddrInfo | None = None,
) -> list[IPAddress]:
    """Resolve ``host`` and return its addresses, refusing unless EVERY one is allowed.

    Connect only to the returned addresses and do not resolve the name again: that is what
    makes the check hold at connection time (no DNS rebinding in between). An IP literal is
    judged without any lookup.

    Args:
        host: a URL host (normalised here again: ``LOCALHOST.`` is ``localhost``).
        port: the TCP port, passed to the resolver.
        policy: the operator's allowlist.
        getaddrinfo: the resolver, ``socket.getaddrinfo`` (looked up at call time) by default.

    Returns:
        The distinct addresses, in the resolver's order.

    Raises:
        UnsafeUrl: the name, or any address it resolves to, is refused.
        HostNotFound: the name did not resolve (transient: DNS may recover).
    """
    name, literal = normalise_host(host)
    if literal is not None:
        judge_address(literal, policy, host=name)
        return [literal]
    _judge_name(name, policy)
    resolver = getaddrinfo or socket.getaddrinfo
    try:
        infos = resolver(name, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise HostNotFound(f"host {name!r} did not resolve: {exc}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            address = _sockaddr_ip(info[4])
        except (ValueError, IndexError, TypeError):
            continue  # an AF_UNIX or otherwise foreign entry: nothing to connect to
        judge_address(address, policy, host=name)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostNotFound(f"host {name!r} resolved to no usable address")
    return addresses
