"""The address guard of HTTP jobs: which URLs and addresses the worker may connect to.

A job row names the URL, so whoever can enqueue could aim the worker at its own network (a database, an
admin port, the cloud metadata service). ``TargetPolicy`` refuses that by default:

- ``check_url`` runs before a request: http/https only, no ``user:password@``, a host that is a DNS name
  or an IP literal, the host allowlist (``PGRELAY_HTTP_ALLOWED_HOSTS``), and the address check for IP
  literals — aiohttp connects to IP literals without asking the resolver, and legacy numeric forms
  (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) are what libc's ``inet_aton`` would make of them;
- ``GuardedResolver`` runs the address check on every address a name resolves to, at connect time, so
  the address checked is the address connected to (a name that resolves to a public address first and a
  private one later is refused the second time);
- ``refusal(address)``: private, loopback, link-local, unique-local, multicast, unspecified, reserved and
  cloud-metadata addresses, IPv4 and IPv6 (all of ``::/8``, which Python's ``is_global`` lets through), and
  IPv6 forms that embed an IPv4 address (compatible, SIIT-translated, 6to4) are judged by that IPv4 address
  too; the mapped and NAT64 forms, which reach the IPv4 address itself, are judged by it alone.
  ``PGRELAY_HTTP_ALLOW_CIDRS`` allows given ranges; cloud-metadata addresses are refused even then.

A refusal raises ``TargetRefused`` (a ``pgrelay.Permanent``): the job is dead-lettered at once, with the
rule in its message.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from .router import Permanent

__all__ = ["GuardedResolver", "TargetPolicy", "TargetRefused", "parse_cidrs", "parse_host_patterns"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_CIDRS_VARIABLE = "PGRELAY_HTTP_ALLOW_CIDRS"
ALLOWED_HOSTS_VARIABLE = "PGRELAY_HTTP_ALLOWED_HOSTS"

# Refused whatever PGRELAY_HTTP_ALLOW_CIDRS says: instance credentials live behind these.
_METADATA = [ipaddress.ip_network(n) for n in (
    "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    "169.254.170.2/32",    # AWS ECS task metadata
    "169.254.170.23/32",   # AWS EKS pod identity
    "100.100.100.200/32",  # Alibaba Cloud
    "168.63.129.16/32",    # Azure WireServer (a public-looking address)
    "192.0.0.192/32",      # Oracle Cloud (legacy)
    "fd00:ec2::254/128",   # AWS IMDS over IPv6
    "fd00:ec2::23/128",    # AWS EKS pod identity over IPv6
)]

# (network, rule) — first match wins; anything else that ipaddress says is not global is "reserved".
_RANGES: list[tuple[IPNetwork, str]] = [(ipaddress.ip_network(n), rule) for n, rule in (
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "private (shared address space, carrier-grade NAT)"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "unique-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "private (local-use NAT64)"),
    ("100::/64", "reserved (discard-only)"),
    ("2001::/32", "reserved (Teredo tunnel)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("::/96", "reserved (IPv4-compatible IPv6)"),
    ("::ffff:0:0:0/96", "reserved (IPv4-translated IPv6, SIIT)"),
    ("::/8", "reserved (IETF)"),  # Python's is_global calls most of it global
)]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
# Forms that a connection sends to the embedded IPv4 address itself: judged by that address alone.
_JUDGED_BY_IPV4 = ("IPv4-mapped", "NAT64")

# a DNS name as yarl hands it to the connector (lowercase, IDNA-encoded): labels of letters, digits, - and _
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_PATTERN = re.compile(r"^(\*\.)?([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$")


class TargetRefused(Permanent):
    """The guard refused the request's target; the message names the rule. Dead-letters the job."""

    def __init__(self, message: str, *, rule: str, host: str | None = None, address: str | None = None) -> None:
        details = {"refused": rule}
        if host is not None:
            details["host"] = host
        if address is not None:
            details["address"] = address
        super().__init__(message, details=details)
        self.rule = rule


def parse_cidrs(text: str | None) -> list[IPNetwork]:
    """``"127.0.0.0/8, 10.1.0.0/16"`` -> networks; a bare address is a /32 (/128). ValueError names a bad entry."""
    networks: list[IPNetwork] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{ALLOW_CIDRS_VARIABLE}: {item!r} is not a CIDR ({exc})") from None
    return networks


def parse_host_patterns(text: str | Iterable[str] | None, *, what: str = ALLOWED_HOSTS_VARIABLE) -> list[str]:
    """``"hooks.example.com, *.example.org"`` -> normalised patterns. ValueError names a bad entry."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    patterns: list[str] = []
    for item in items:
        pattern = item.strip().lower().rstrip(".")
        if not pattern:
            continue
        if not _PATTERN.match(pattern) and not _is_ip_literal(pattern):
            raise ValueError(
                f"{what}: {item.strip()!r} is not a host name or a *.domain pattern"
                " (write international names in their xn-- form)"
            )
        patterns.append(pattern)
    return patterns


def host_matches(host: str, pattern: str) -> bool:
    """``*.example.com`` matches any name below example.com (not example.com itself); others match exactly."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, and the form (mapped, compatible, translated, 6to4, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-compatible"
    if address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-translated"
    return None


def _range_rule(address: IPAddress) -> str | None:
    for network, rule in _RANGES:
        if address.version == network.version and address in network:
            return f"{rule} ({network})"
    if not address.is_global:
        return "reserved (not globally routable)"
    return None


@dataclass(frozen=True)
class TargetPolicy:
    """What HTTP jobs may reach. ``from_env()`` reads PGRELAY_HTTP_ALLOWED_HOSTS and PGRELAY_HTTP_ALLOW_CIDRS."""

    allowed_hosts: tuple[str, ...] = ()
    allow_cidrs: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def create(cls, allowed_hosts: str | Iterable[str] | None = None,
               allow_cidrs: str | Iterable[str | IPNetwork] | None = None) -> TargetPolicy:
        if isinstance(allow_cidrs, str) or allow_cidrs is None:
            networks = parse_cidrs(allow_cidrs)
        else:
            networks = [n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else parse_cidrs(n)[0]
                        for n in allow_cidrs]
        return cls(tuple(parse_host_patterns(allowed_hosts)), tuple(networks))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TargetPolicy:
        return cls.create(environ.get(ALLOWED_HOSTS_VARIABLE), environ.get(ALLOW_CIDRS_VARIABLE))

    # -- addresses ----------------------------------------------------------------------------

    def _allowed(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.allow_cidrs)

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why connecting to ``address`` is refused (the rule, for the message), or None when it is allowed."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            address = ipaddress.IPv6Address(int(address))  # fe80::1%eth0 -> fe80::1
        embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        for candidate in (address, embedded[0] if embedded else None):
            if candidate is not None and any(candidate in n for n in _METADATA):
                return f"{candidate} is a cloud metadata address (always refused)"
        if self._allowed(address):
            return None
        if embedded is not None and embedded[1] == "IPv4-mapped" and self._allowed(embedded[0]):
            return None  # connecting to ::ffff:a.b.c.d is connecting to a.b.c.d
        if embedded is not None:
            inner = _range_rule(embedded[0])
            if inner is not None:
                return f"{address} is {embedded[1]} IPv6 for {embedded[0]}, which is {inner}"
            if embedded[1] in _JUDGED_BY_IPV4:
                return None  # ::ffff:a.b.c.d and 64:ff9b::a.b.c.d of a public a.b.c.d
        rule = _range_rule(address)
        return f"{address} is {rule}" if rule else None

    def check_address(self, address: str, *, host: str | None = None) -> None:
        try:
            rule = self.refusal(address)
        except ValueError:
            rule = f"{address!r} is not an IP address"
        if rule is not None:
            raise TargetRefused(
                f"refused by the address guard: {rule}"
                + (f" (host {host})" if host and host != address else "")
                + (f"; allow the range with {ALLOW_CIDRS_VARIABLE}" if "metadata" not in rule else ""),
                rule=rule, host=host, address=address,
            )

    # -- URLs ---------------------------------------------------------------------------------

    def check_url(self, url: str | URL) -> URL:
        """The parsed URL to request (the very object the connector uses), or TargetRefused naming the rule."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError) as exc:
            raise TargetRefused(f"refused: the url cannot be parsed ({exc})", rule="invalid url") from None
        if parsed.scheme not in ("http", "https"):
            raise TargetRefused(f"refused: scheme {parsed.scheme!r} is not http or https", rule="scheme")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise TargetRefused("refused: the url carries user:password@ (send credentials in a header)",
                                rule="userinfo")
        host = parsed.raw_host
        if not host:
            raise TargetRefused("refused: the url has no host", rule="no host")
        literal = self._literal_address(host)
        if literal is None and not self._valid_name(host):
            raise TargetRefused(f"refused: host {host!r} is not a DNS name or an IP address", rule="invalid host",
                                host=host)
        if self.allowed_hosts and not any(host_matches(host, p) for p in self.allowed_hosts):
            raise TargetRefused(f"refused: host {host} is not in {ALLOWED_HOSTS_VARIABLE}", rule="allowed hosts",
                                host=host)
        if literal is not None:
            address, canonical = literal
            self.check_address(str(address), host=host)
            if not canonical:
                raise TargetRefused(
                    f"refused: host {host!r} is a non-canonical numeric form of {address};"
                    " write the address in dotted-decimal",
                    rule="non-canonical numeric host", host=host, address=str(address),
                )
        return parsed

    @staticmethod
    def _valid_name(host: str) -> bool:
        name = host[:-1] if host.endswith(".") else host
        return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))

    @staticmethod
    def _literal_address(host: str) -> tuple[IPAddress, bool] | None:
        """An IP literal host and whether it is written canonically; None for a DNS name.

        Canonical forms are what ``ipaddress`` parses; legacy IPv4 forms (a single number, fewer than four
        parts, hex or octal parts) are what libc's ``inet_aton`` — and so ``getaddrinfo`` — makes of them.
        """
        bare = host[:-1] if host.endswith(".") else host
        try:
            return ipaddress.ip_address(bare), bare == host
        except ValueError:
            pass
        if ":" in bare:
            return None  # not an IPv6 address (yarl has already refused malformed brackets)
        try:
            packed = socket.inet_aton(bare)
        except (OSError, ValueError):  # ValueError: an embedded NUL
            return None
        return ipaddress.IPv4Address(packed), False


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses a name if any address it resolves to is refused by the policy.

    aiohttp asks the resolver each time it opens a connection to a name (the executor turns its DNS cache
    off), and connects only to the addresses returned, so the address checked is the address connected to.
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self.policy.check_address(result["host"], host=host)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def describe(policy: TargetPolicy) -> dict[str, Any]:
    """The policy for a log line (no secrets in it)."""
    return {"allowed_hosts": list(policy.allowed_hosts) or "any",
            "allow_cidrs": [str(n) for n in policy.allow_cidrs]}
