"""Where a provider-supplied download link may point: the SSRF guard.

CCC and Dyplsapi answer with signed object-storage links that the fetcher opens from inside the
customer's AWS account, maybe in a VPC next to private services. A link is a provider string
like any other, so before it is opened (``DownloadHosts.check``):

- it must be a plain http(s) URL that every parser on the way reads alike: no user info, no
  backslash, space or control character, a port from 1 to 65535, and a host that is an IP
  address or a name of ASCII letters, digits, dots and dashes (a name IDNA would remap, or a
  number like ``2130706433`` that a resolver reads as an address, could pass a text match and
  reach another place);
- its host must be named in the source's ``download_hosts``: exactly (``oss.example.com``,
  ``127.0.0.1``), or under a suffix entry (``.aliyuncs.com``: any subdomain);
- a host allowed only by a suffix entry must be a public name on the scheme's default port:
  not an IP address, no other port, and resolving to public addresses only (loopback,
  private, link-local, shared and reserved addresses are refused). An exactly named host,
  or any allowed host of a source with ``allow_private_network: true``, is trusted with any
  address and port: the operator said so.

Every refusal is a ``PermanentFailure`` with a readable reason (a fresh link would come from
the same provider with the same problem); only a name that does not resolve is retried.
The entries themselves are checked when the sources file is read (``parse_download_hosts``):
an entry that allows too much (``.``, ``.com``, ``com``, ``.com.cn``, ``*.example.com``) or is
no host at all (a URL, a path, user info, a port) is refused with a message that says why.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from callvault.errors import ConfigError, PermanentFailure, RetryKind, RetryLater
from callvault.validation import boolean

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[IpAddress]]

DEFAULT_PORTS = {"http": 80, "https": 443}
# A signed OSS link is a few hundred characters; anything far longer is not one.
MAX_LINK_CHARS = 8192
HOST_NAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
# The one single-label name an exact entry may be: the loopback name every machine has.
SINGLE_LABEL_NAMES = frozenset({"localhost"})
# Public suffixes of more than one label, where anyone can register a name (the common ones of
# the public suffix list; single labels, the top-level domains, are refused on their own).
PUBLIC_SUFFIXES = frozenset(
    {
        *(f"{second}.cn" for second in ("com", "net", "org", "gov", "edu", "ac")),
        *(f"{second}.hk" for second in ("com", "net", "org", "edu", "gov")),
        *(f"{second}.tw" for second in ("com", "net", "org", "edu", "gov")),
        *(f"{second}.uk" for second in ("co", "org", "ac", "gov", "me", "ltd", "plc")),
        *(f"{second}.jp" for second in ("co", "ne", "or", "ac", "go")),
        *(f"{second}.au" for second in ("com", "net", "org", "edu", "gov")),
        "com.sg",
        "com.my",
        "co.kr",
        "co.nz",
        "co.in",
        "com.br",
        "com.mx",
        "co.za",
        "com.tr",
    }
)


@dataclass(frozen=True)
class DownloadLink:
    """A parsed download link; ``host`` is lower-case, an IP address in its canonical form."""

    url: str
    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def file_name(self) -> str:
        """The last part of the path ("" when the path ends with a slash)."""
        return self.path.rsplit("/", 1)[-1]


def resolve_addresses(host: str) -> list[IpAddress]:
    """Every address ``host`` resolves to, as the connection will look them up."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    # An IPv6 link-local address comes with its zone ("fe80::1%eth0"): the address is before it.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


@dataclass(frozen=True)
class DownloadHosts:
    """The ``download_hosts`` and ``allow_private_network`` settings of a source."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    allow_private_network: bool = False

    def check(self, url: str, resolve: Resolver = resolve_addresses) -> DownloadLink:
        """The link, parsed, if the source allows it; else a PermanentFailure saying why."""
        link = parse_link(url)
        host = link.host
        if host in self.exact:
            return link
        if not any(host.endswith(suffix) for suffix in self.suffixes):
            raise PermanentFailure(
                f"provider returned a download link to host {host!r}, which the source does not allow (download_hosts)"
            )
        if self.allow_private_network:
            return link
        trust = "name the host exactly in download_hosts, or set allow_private_network: true"
        if _ip(host) is not None:
            raise PermanentFailure(f"provider returned a download link to the IP address {host}; {trust}")
        if link.port is not None and link.port != DEFAULT_PORTS[link.scheme]:
            raise PermanentFailure(
                f"provider returned a download link to {host!r} on port {link.port}, not {link.scheme}'s"
                f" {DEFAULT_PORTS[link.scheme]}; {trust}"
            )
        try:
            addresses = resolve(host)
        except OSError:
            raise RetryLater(RetryKind.PROVIDER_UNAVAILABLE, f"download host {host!r} does not resolve") from None
        for address in addresses:
            if not _is_public(address):
                raise PermanentFailure(
                    f"download host {host!r} resolves to {address}, which is not a public address; {trust}"
                )
        return link


def parse_link(url: str) -> DownloadLink:
    """A provider's download link, or a PermanentFailure saying why it cannot be one."""
    if not isinstance(url, str) or not url:
        raise _unusable("is empty")
    if len(url) > MAX_LINK_CHARS:
        raise _unusable(f"is longer than {MAX_LINK_CHARS} characters")
    if any(char <= " " or char == "\x7f" for char in url) or "\\" in url:
        raise _unusable("contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
        # requests connects where urllib3 says: both must read the same host.
        urllib3_host = parse_url(url).host or ""
    except (ValueError, LocationParseError):
        raise _unusable("cannot be parsed as a URL") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise _unusable("is not an http or https URL")
    if "@" in parts.netloc:
        raise _unusable("carries user info")
    host = parts.hostname or ""
    if not host:
        raise _unusable("has no host")
    if urllib3_host.strip("[]").lower() != host:
        raise _unusable("names its host ambiguously")
    if port == 0:
        raise _unusable("has port 0")
    address = _ip(host)
    if address is not None:
        host = str(address)
    elif not HOST_NAME.match(host) or _looks_numeric(host):
        raise _unusable("has a host that is neither a plain name (letters, digits, dots, dashes) nor an IP address")
    return DownloadLink(url=url, scheme=parts.scheme, host=host, port=port, path=parts.path)


def parse_download_hosts(raw: Mapping[str, Any], default: tuple[str, ...], *, where: str) -> DownloadHosts:
    """``download_hosts`` (a list of host names, addresses and ``.suffix`` entries) and
    ``allow_private_network`` of a provider section; an entry that allows too much is refused."""
    entries = raw.get("download_hosts", list(default))
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: download_hosts must be a list of host names ('.example.com' allows subdomains)")
    exact: set[str] = set()
    suffixes: list[str] = []
    for entry in entries:
        host, is_suffix = _entry(entry, where)
        if is_suffix:
            suffixes.append(host)
        else:
            exact.add(host)
    allow_private = boolean(raw, "allow_private_network", False, where)
    return DownloadHosts(exact=frozenset(exact), suffixes=tuple(suffixes), allow_private_network=allow_private)


def _entry(entry: Any, where: str) -> tuple[str, bool]:
    """One ``download_hosts`` entry: (the host or ``.suffix``, whether it is a suffix)."""

    def refused(why: str) -> ConfigError:
        return ConfigError(f"{where}: download_hosts entry {entry!r} {why}")

    if not isinstance(entry, str) or not entry.strip():
        raise refused("is empty: give a host name ('oss.example.com') or a domain ('.example.com')")
    text = entry.lower()
    if any(char.isspace() for char in text):
        raise refused("contains spaces")
    if "://" in text or text.startswith(("http:", "https:")):
        raise refused("is a URL: give the host only ('oss.example.com')")
    if "/" in text:
        raise refused("has a path: give the host only ('oss.example.com')")
    if "@" in text:
        raise refused("has user info: give the host only ('oss.example.com')")
    if "*" in text or "?" in text:
        raise refused("is a wildcard: '.example.com' allows every subdomain of example.com")
    address = _ip(text.strip("[]") if text.startswith("[") and text.endswith("]") else text)
    if address is not None:
        return str(address), False
    if ":" in text:
        raise refused("has a port: give the host only (an exactly named host may use any port)")
    is_suffix = text.startswith(".")
    name = text[1:] if is_suffix else text
    if not HOST_NAME.match(name):
        raise refused("is not a host name (ASCII letters, digits, dots and dashes)")
    if _looks_numeric(name):
        raise refused("looks like an IP address but is not one: write the address as 192.0.2.10")
    if "." not in name and not (name in SINGLE_LABEL_NAMES and not is_suffix):
        raise refused("is a top-level domain or a single label: name a host ('oss.example.com') or a domain")
    if name in PUBLIC_SUFFIXES:
        raise refused("is a public suffix, under which anyone can register a name")
    return ("." + name if is_suffix else name), is_suffix


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _looks_numeric(name: str) -> bool:
    # No top-level domain is numeric; resolvers read "127.1", "2130706433" or "0x7f.1" as addresses.
    last = name.rsplit(".", 1)[-1]
    return last.isdigit() or bool(re.fullmatch(r"0x[0-9a-f]*", last))


def _is_public(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _unusable(problem: str) -> PermanentFailure:
    return PermanentFailure(f"provider returned a download link that {problem}")
