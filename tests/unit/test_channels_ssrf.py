"""SSRF checks (S8): every spelling of an internal address is refused at save and at send time."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

import pytest
from hypothesis import given, strategies as st

from relevo.channels.errors import HostNotFound, UnsafeUrl
from relevo.channels.ssrf import (
    DEFAULT_POLICY,
    OutboundPolicy,
    check_url,
    describe_refusal,
    judge_address,
    normalise_host,
    resolve_and_check,
)
from relevo.errors import ValidationError


class FakeResolver:
    """A getaddrinfo stand-in: answers from a table, records every lookup."""

    def __init__(self, answers: dict[str, Sequence[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    def __call__(
        self, host: str, port: int, family: int = 0, type: int = 0, proto: int = 0
    ) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[Any, ...]] = []
        for address in self.answers[host]:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out


def never_called(*args: object) -> list[tuple[Any, ...]]:
    raise AssertionError("an IP literal must be judged without a DNS lookup")


# the S8 matrix: (url, reason)
S8_MATRIX = [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://10.255.255.255/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://100.64.0.1/", "shared"),
    ("http://100.127.255.254/", "shared"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "scheme"),
]

MORE_REFUSED = [
    ("http://LOCALHOST./", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://metadata.goog/", "metadata"),
    ("http://METADATA.google.internal./", "metadata"),
    ("http://instance-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://169.254.1.1/", "link_local"),
    ("http://[fe80::1]/", "link_local"),
    ("http://[fe80::1%25eth0]/", "zone_id"),
    ("http://[::1%25lo]/", "zone_id"),
    ("http://224.0.0.251/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "reserved"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.10/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[fc00::1]/", "unique_local"),
    ("http://[fd12:3456::1]/", "unique_local"),
    ("http://[fec0::1]/", "private"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[::127.0.0.1]/", "reserved"),  # IPv4-compatible (deprecated)
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://[2002:c0a8:101::]/", "private"),  # 6to4 of 192.168.1.1
    ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
    ("http://[64:ff9b:1::1]/", "private"),  # local-use NAT64
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "documentation"),  # Teredo
    ("http://0x7f.1/", "loopback"),
    ("http://0x7F.0.0.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0xa.0xa.0xa.0xa/", "private"),
    ("http://167772161/", "private"),  # 10.0.0.1
    ("http://3232235777/", "private"),  # 192.168.1.1
    ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "loopback"),  # full-width
    ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stops
    ("http://127.0.0.1./", "loopback"),
    ("ftp://example.com/", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("//example.com/", "scheme"),
    ("example.com/hook", "scheme"),
    ("http://user:pw@example.com/", "userinfo"),
    ("http://example.com@127.0.0.1/", "userinfo"),
    ("http://127.0.0.1:80@example.com/", "userinfo"),
    ("http://example.com\\@127.0.0.1/", "malformed"),
    ("http://exa mple.com/", "malformed"),
    ("http://example.com/\n", "malformed"),
    (" http://example.com/", "malformed"),
    ("http://example.com\t/", "malformed"),
    ("http:///path", "no_host"),
    ("http://:80/", "no_host"),
    ("http://[::1/", "malformed"),
    ("http://[::1]x/", "malformed"),
    ("http://[not-ip]/", "malformed"),
    ("http://a..b/", "malformed"),
    ("http://exa%6dple.com/", "malformed"),
    ("http://example.123/", "malformed"),
    ("http://1.2.3.4.5/", "malformed"),
    ("http://256.0.0.1/", "malformed"),
    ("http://08.0.0.1/", "malformed"),
    ("http://4294967296/", "malformed"),
    ("http://example.com:0/", "port"),
    ("http://example.com:65536/", "port"),
    ("http://example.com:+80/", "port"),
    ("http://example.com:8o/", "port"),
    ("http://" + "a" * 2100 + ".com/", "malformed"),
]


@pytest.mark.parametrize(("url", "reason"), S8_MATRIX + MORE_REFUSED)
def test_refused_at_save_time(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url)
    assert caught.value.reason == reason, caught.value.message


@pytest.mark.parametrize(("url", "reason"), S8_MATRIX + MORE_REFUSED)
def test_unsafe_url_is_a_validation_error_with_a_detail(url: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url)
    assert caught.value.code == "unsafe_url"
    assert caught.value.details[0].code == reason
    assert caught.value.details[0].location == "url"


def test_messages_name_the_host_the_address_and_the_reason() -> None:
    with pytest.raises(UnsafeUrl, match=r"'0x7f000001' is 127\.0\.0\.1, a loopback address"):
        check_url("http://0x7f000001/")
    with pytest.raises(UnsafeUrl, match="IPv4-mapped 127.0.0.1: a loopback address"):
        check_url("http://[::ffff:127.0.0.1]/")
    with pytest.raises(UnsafeUrl, match="metadata endpoint.*never allowed"):
        check_url("http://169.254.169.254/")
    with pytest.raises(UnsafeUrl, match="gopher:// is not allowed"):
        check_url("gopher://x/")


LITERAL_HOSTS = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("0x7f000001", "loopback"),
    ("2130706433", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("::1", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("169.254.169.254", "metadata"),
    ("10.1.2.3", "private"),
    ("172.20.0.1", "private"),
    ("192.168.10.1", "private"),
    ("100.64.1.1", "shared"),
]


@pytest.mark.parametrize(("host", "reason"), LITERAL_HOSTS)
def test_refused_at_send_time_without_any_lookup(host: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        resolve_and_check(host, 443, getaddrinfo=never_called)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.20",
        "100.64.0.9",
        "169.254.169.254",
        "169.254.10.10",
        "fe80::1",
        "fd00::1",
        "::ffff:192.168.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_a_name_that_resolves_to_an_internal_address_is_refused(address: str) -> None:
    resolver = FakeResolver({"hooks.example.com": [address]})
    with pytest.raises(UnsafeUrl, match=r"host 'hooks\.example\.com' resolves to"):
        resolve_and_check("hooks.example.com", 443, getaddrinfo=resolver)


def test_every_resolved_address_must_be_allowed() -> None:
    # a public answer first does not excuse a private one after it
    resolver = FakeResolver({"mixed.example.com": ["93.184.216.34", "10.0.0.1"]})
    with pytest.raises(UnsafeUrl) as caught:
        resolve_and_check("mixed.example.com", 443, getaddrinfo=resolver)
    assert caught.value.reason == "private"
    assert "10.0.0.1" in caught.value.message


def test_public_names_resolve_to_their_distinct_addresses_in_order() -> None:
    resolver = FakeResolver(
        {"example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]}
    )
    addresses = resolve_and_check("Example.COM.", 443, getaddrinfo=resolver)
    assert addresses == [
        ip_address("93.184.216.34"),
        ip_address("2606:2800:220:1:248:1893:25c8:1946"),
    ]
    assert resolver.calls == ["example.com"]  # normalised before the lookup


def test_names_refused_by_name_are_never_looked_up() -> None:
    for host in ("localhost", "metadata.google.internal", "sub.localhost."):
        with pytest.raises(UnsafeUrl):
            resolve_and_check(host, 80, getaddrinfo=never_called)


def test_a_name_that_does_not_resolve_is_a_transient_error() -> None:
    with pytest.raises(HostNotFound, match="did not resolve"):
        resolve_and_check("nowhere.example.com", 443, getaddrinfo=FakeResolver())
    empty = FakeResolver({"empty.example.com": []})
    with pytest.raises(HostNotFound, match="no usable address"):
        resolve_and_check("empty.example.com", 443, getaddrinfo=empty)


def test_resolved_ipv6_scope_ids_are_ignored_for_judging() -> None:
    resolver = FakeResolver({"ll.example.com": ["fe80::1%eth0"]})
    with pytest.raises(UnsafeUrl) as caught:
        resolve_and_check("ll.example.com", 80, getaddrinfo=resolver)
    assert caught.value.reason == "link_local"


ALLOWED = [
    ("https://example.com/hooks", "https://example.com/hooks"),
    ("HTTPS://Example.COM:443/a?b=1#frag", "https://example.com/a?b=1"),
    ("http://example.com", "http://example.com/"),
    ("http://example.com.:8080/x", "http://example.com:8080/x"),
    ("https://bücher.de/ü?q=é", "https://xn--bcher-kva.de/%C3%BC?q=%C3%A9"),
    ("http://93.184.216.34/", "http://93.184.216.34/"),
    ("http://1572395042/", "http://93.184.216.34/"),
    ("http://[2606:4700:4700::1111]:8443/", "http://[2606:4700:4700::1111]:8443/"),
    ("http://[::ffff:8.8.8.8]/", "http://[::ffff:808:808]/"),
    ("http://[64:ff9b::808:808]/", "http://[64:ff9b::808:808]/"),  # NAT64 of a public address
    ("http://[2002:808:808::1]/", "http://[2002:808:808::1]/"),  # 6to4 of a public address
    ("https://hooks_1.example-2.com/p%20q", "https://hooks_1.example-2.com/p%20q"),
]


@pytest.mark.parametrize(("url", "normalised"), ALLOWED)
def test_public_urls_pass_and_are_normalised(url: str, normalised: str) -> None:
    assert check_url(url).url == normalised


def test_checked_url_parts() -> None:
    checked = check_url("https://[2606:4700:4700::1111]:8443/x?y=1")
    assert checked.scheme == "https"
    assert checked.host == "2606:4700:4700::1111"
    assert checked.port == 8443
    assert checked.target == "/x?y=1"
    assert checked.host_header == "[2606:4700:4700::1111]:8443"
    assert checked.ip == ip_address("2606:4700:4700::1111")
    assert not checked.allowlisted
    named = check_url("https://Example.com/")
    assert (named.host, named.port, named.ip, named.host_header) == (
        "example.com",
        443,
        None,
        "example.com",
    )


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0000.0.01", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("0xc0.0xa8.0x1.0x1", "192.168.1.1"),
        ("192.11010305", "192.168.1.1"),
        ("0x", "0.0.0.0"),
        ("1.2.3.4", "1.2.3.4"),
        ("[::FFFF:127.0.0.1]", "::ffff:7f00:1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
    ],
)
def test_ip_literals_in_every_spelling_are_parsed(spelling: str, canonical: str) -> None:
    host, ip = normalise_host(spelling)
    assert host == canonical
    assert ip == ip_address(canonical)


def _spellings(value: int) -> list[str]:
    a, b, c, d = IPv4Address(value).packed
    return [
        str(IPv4Address(value)),
        str(value),
        hex(value),
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"{a}.{b}.{(c << 8) | d}",
        f"0{a:o}.0{b:o}.0{c:o}.0{d:o}",
        f"{a:#x}.{b:#x}.{c:#x}.{d:#x}",
    ]


SPECIAL_V4 = [ip_network(n) for n in ("10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16")]


@given(
    st.one_of(
        st.integers(0, 2**32 - 1),
        st.sampled_from(SPECIAL_V4).flatmap(
            lambda n: st.integers(int(n.network_address), int(n.broadcast_address))
        ),
    )
)
def test_every_spelling_of_an_address_gets_the_same_verdict(value: int) -> None:
    expected = describe_refusal(IPv4Address(value))
    for spelling in _spellings(value):
        _, ip = normalise_host(spelling)
        assert ip == IPv4Address(value), spelling
        try:
            check_url(f"http://{spelling}/")
            verdict = None
        except UnsafeUrl as exc:
            verdict = exc.reason
        assert (verdict is None) == (expected is None), spelling


@given(st.integers(0, 2**32 - 1))
def test_ipv4_mapped_and_nat64_forms_get_the_verdict_of_their_ipv4_address(value: int) -> None:
    v4 = describe_refusal(IPv4Address(value))
    mapped = describe_refusal(ip_address(f"::ffff:{IPv4Address(value)}"))
    nat64 = describe_refusal(ip_address(f"64:ff9b::{IPv4Address(value)}"))
    assert (v4 is None) == (mapped is None) == (nat64 is None)


# --- the operator allowlist ---------------------------------------------------------------


def test_the_allowlist_admits_a_named_internal_host() -> None:
    policy = OutboundPolicy(allow_hosts=frozenset({"127.0.0.1", "Hooks.Internal."}))
    assert policy.allow_hosts == {"127.0.0.1", "hooks.internal"}
    checked = check_url("http://127.0.0.1:8080/hook", policy)
    assert checked.allowlisted
    assert check_url("http://127.1:8080/", policy).allowlisted  # same address, same entry
    resolver = FakeResolver({"hooks.internal": ["10.0.0.7", "10.0.0.8"]})
    assert resolve_and_check("hooks.internal", 80, policy, getaddrinfo=resolver) == [
        ip_address("10.0.0.7"),
        ip_address("10.0.0.8"),
    ]


def test_the_allowlist_admits_only_what_it_names() -> None:
    policy = OutboundPolicy(allow_hosts=frozenset({"127.0.0.1"}))
    for url in ("http://localhost/", "http://127.0.0.2/", "http://[::1]/", "http://10.0.0.1/"):
        with pytest.raises(UnsafeUrl):
            check_url(url, policy)
    # a name that resolves to the allowlisted address is not the allowlisted host
    resolver = FakeResolver({"rebind.example.com": ["127.0.0.1"]})
    with pytest.raises(UnsafeUrl, match="loopback"):
        resolve_and_check("rebind.example.com", 80, policy, getaddrinfo=resolver)


def test_allowlisted_networks_admit_addresses_for_any_host() -> None:
    policy = OutboundPolicy.from_strings(allow_networks=["10.1.2.0/24", "fd00:1::/64"])
    resolver = FakeResolver(
        {"a.corp": ["10.1.2.3"], "b.corp": ["10.1.3.1"], "c.corp": ["fd00:1::5"]}
    )
    assert resolve_and_check("a.corp", 80, policy, getaddrinfo=resolver) == [ip_address("10.1.2.3")]
    assert resolve_and_check("c.corp", 80, policy, getaddrinfo=resolver)
    with pytest.raises(UnsafeUrl):
        resolve_and_check("b.corp", 80, policy, getaddrinfo=resolver)
    check_url("http://10.1.2.200/", policy)
    check_url("http://[::ffff:10.1.2.9]/", policy)  # mapped form of an admitted address


def test_metadata_and_unspecified_addresses_are_never_admitted() -> None:
    policy = OutboundPolicy.from_strings(
        allow_hosts=["169.254.169.254", "metadata.google.internal", "0.0.0.0", "meta.corp"],
        allow_networks=["169.254.0.0/16", "0.0.0.0/8", "fd00::/8"],
    )
    for url in (
        "http://169.254.169.254/",
        "http://metadata.google.internal/",
        "http://0.0.0.0/",
        "http://[fd00:ec2::254]/",
    ):
        with pytest.raises(UnsafeUrl):
            check_url(url, policy)
    resolver = FakeResolver({"meta.corp": ["169.254.169.254"]})
    with pytest.raises(UnsafeUrl, match="never allowed"):
        resolve_and_check("meta.corp", 80, policy, getaddrinfo=resolver)
    check_url("http://169.254.1.1/", policy)  # the rest of the link-local range is admitted


def test_localhost_can_be_allowlisted_by_name() -> None:
    policy = OutboundPolicy(allow_hosts=frozenset({"localhost"}))
    assert check_url("http://localhost:9000/", policy).allowlisted
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"]})
    assert len(resolve_and_check("localhost", 9000, policy, getaddrinfo=resolver)) == 2


def test_require_https() -> None:
    policy = OutboundPolicy(require_https=True)
    check_url("https://example.com/", policy)
    with pytest.raises(UnsafeUrl, match="use https"):
        check_url("http://example.com/", policy)


def test_judge_address_directly() -> None:
    judge_address(ip_address("8.8.8.8"))
    with pytest.raises(UnsafeUrl, match="host 'x.example' resolves to 10.0.0.1"):
        judge_address(ip_address("10.0.0.1"), host="x.example")
    assert DEFAULT_POLICY.allow_hosts == frozenset()


@pytest.mark.parametrize(
    "factory",
    [
        lambda: OutboundPolicy.from_strings(allow_networks=["not-a-network"]),
    ],
)
def test_bad_policy_configuration_is_refused(factory: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        factory()
