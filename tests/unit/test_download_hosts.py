"""The SSRF guard: where a CCC or Dyplsapi download link may point, and which entries may say so.

Links are checked with a stand-in resolver (a dict of names to addresses), so no test depends
on DNS. The sources are read the way a sources file is read: parse_source.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from callvault.download_hosts import DownloadHosts, IpAddress, parse_link
from callvault.errors import ConfigError, PermanentFailure, RetryKind, RetryLater
from callvault.sources import parse_source
from tests.conftest import dypls_source_document

TRUST = "name the host exactly in download_hosts, or set allow_private_network: true"
NOT_A_HOST = "has a host that is neither a plain name (letters, digits, dots, dashes) nor an IP address"
DNS = {
    "rec.oss-cn-shanghai.aliyuncs.com": ["47.102.1.10"],
    "internal.aliyuncs.com": ["10.0.3.7"],
    "metadata.aliyuncs.com": ["169.254.169.254"],
    "rebound.aliyuncs.com": ["47.102.1.11", "127.0.0.1"],
    "mapped.aliyuncs.com": ["::ffff:192.168.1.2"],
    "shared.aliyuncs.com": ["100.64.0.9"],
    "oss.example.com": ["10.9.9.9"],
}


def resolve(host: str) -> list[IpAddress]:
    if host not in DNS:
        raise OSError(f"[Errno -2] Name or service not known: {host}")
    return [ipaddress.ip_address(address) for address in DNS[host]]


def hosts(**dypls: Any) -> DownloadHosts:
    document = dypls_source_document()
    document["dypls"] = {**document["dypls"], **dypls}
    return parse_source(document).settings.access.download_hosts  # type: ignore[no-any-return]


def refusal(link: str, guard: DownloadHosts) -> str:
    with pytest.raises(PermanentFailure) as refused:
        guard.check(link, resolve)
    return refused.value.reason


# ------------------------------------------------------------------------- the sources file


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("", "is empty"),
        (".", "is not a host name"),
        ("com", "is a top-level domain or a single label"),
        (".com", "is a top-level domain or a single label"),
        (".com.cn", "is a public suffix"),
        ("co.uk", "is a public suffix"),
        ("*.aliyuncs.com", "is a wildcard: '.example.com' allows every subdomain"),
        ("https://oss.example.com", "is a URL: give the host only"),
        ("oss.example.com/recordings", "has a path"),
        ("user@oss.example.com", "has user info"),
        ("oss.example.com:8443", "has a port"),
        ("oss example.com", "contains spaces"),
        (".0.0.1", "looks like an IP address but is not one"),
        ("127.1", "looks like an IP address but is not one"),
        ("bücher.example.com", "is not a host name"),
        (17, "is empty"),
    ],
)
def test_a_download_hosts_entry_that_allows_too_much_or_is_no_host_is_refused(entry: Any, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        hosts(download_hosts=[".aliyuncs.com", entry])

    assert str(refused.value).startswith(f"source 'privacy-pool', dypls: download_hosts entry {entry!r} {why}")


def test_allow_private_network_is_true_or_false() -> None:
    with pytest.raises(ConfigError, match="allow_private_network must be true or false"):
        hosts(allow_private_network="yes")


def test_entries_read_as_exact_hosts_addresses_and_suffixes() -> None:
    guard = hosts(download_hosts=[".Aliyuncs.com", "OSS.example.com", "127.0.0.1", "[::1]", "localhost"])

    assert guard.suffixes == (".aliyuncs.com",)
    assert guard.exact == {"oss.example.com", "127.0.0.1", "::1", "localhost"}
    assert guard.allow_private_network is False
    assert hosts().suffixes == (".aliyuncs.com",) and hosts().exact == frozenset()  # the default


# ------------------------------------------------------------------------- links


def test_a_public_oss_link_under_the_default_suffix_is_allowed() -> None:
    link = hosts().check("http://rec.oss-cn-shanghai.aliyuncs.com/a/b/x.mp3?Expires=1&Signature=s", resolve)

    assert (link.host, link.port, link.file_name) == ("rec.oss-cn-shanghai.aliyuncs.com", None, "x.mp3")


def test_a_host_the_source_does_not_name_is_refused() -> None:
    assert refusal("https://evil.example.net/x.mp3", hosts()) == (
        "provider returned a download link to host 'evil.example.net', which the source does not allow (download_hosts)"
    )
    # A suffix entry is a dot-boundary match: "aliyuncs.com.evil.net" and "xaliyuncs.com" are not under it.
    assert "does not allow" in refusal("https://aliyuncs.com.evil.net/x", hosts())
    assert "does not allow" in refusal("https://xaliyuncs.com/x", hosts())


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("internal.aliyuncs.com", "10.0.3.7"),
        ("metadata.aliyuncs.com", "169.254.169.254"),
        ("rebound.aliyuncs.com", "127.0.0.1"),
        ("mapped.aliyuncs.com", "::ffff:c0a8:102"),
        ("shared.aliyuncs.com", "100.64.0.9"),
    ],
)
def test_a_suffix_matched_name_that_resolves_to_a_non_public_address_is_refused(host: str, address: str) -> None:
    assert refusal(f"https://{host}/x.mp3", hosts()) == (
        f"download host {host!r} resolves to {address}, which is not a public address; {TRUST}"
    )


def test_a_suffix_matched_name_on_another_port_is_refused() -> None:
    assert refusal("https://rec.oss-cn-shanghai.aliyuncs.com:8443/x.mp3", hosts()) == (
        "provider returned a download link to 'rec.oss-cn-shanghai.aliyuncs.com' on port 8443,"
        f" not https's 443; {TRUST}"
    )
    assert hosts().check("https://rec.oss-cn-shanghai.aliyuncs.com:443/x.mp3", resolve).port == 443


def test_an_exactly_named_host_is_trusted_with_any_address_and_port() -> None:
    # The local stack's sources: simulators on loopback, on ports picked at start.
    guard = hosts(download_hosts=["127.0.0.1", "oss.example.com"])

    assert guard.check("http://127.0.0.1:40123/bucket/x.mp3?Expires=1", resolve).host == "127.0.0.1"
    assert guard.check("https://oss.example.com:8443/x.mp3", resolve).host == "oss.example.com"  # 10.9.9.9
    assert "does not allow" in refusal("http://127.0.0.2:40123/x.mp3", guard)
    assert "does not allow" in refusal("http://localhost:40123/x.mp3", guard)


def test_allow_private_network_trusts_every_allowed_host_but_allows_no_more_hosts() -> None:
    guard = hosts(download_hosts=[".aliyuncs.com"], allow_private_network=True)

    assert guard.check("http://internal.aliyuncs.com:8080/x.mp3", resolve).port == 8080
    assert "does not allow" in refusal("http://10.0.3.7/x.mp3", guard)


def test_a_name_that_does_not_resolve_is_tried_again_later() -> None:
    with pytest.raises(RetryLater) as later:
        hosts().check("https://gone.aliyuncs.com/x.mp3", resolve)

    assert later.value.kind is RetryKind.PROVIDER_UNAVAILABLE
    assert later.value.reason == "download host 'gone.aliyuncs.com' does not resolve"


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("", "is empty"),
        ("http://[127.0.0.1/x.mp3", "cannot be parsed as a URL"),
        ("http://rec.aliyuncs.com:99999/x.mp3", "cannot be parsed as a URL"),
        ("http://rec.aliyuncs.com:http/x.mp3", "cannot be parsed as a URL"),
        ("http://rec.aliyuncs.com:0/x.mp3", "has port 0"),
        ("ftp://rec.aliyuncs.com/x.mp3", "is not an http or https URL"),
        ("file:///etc/passwd", "is not an http or https URL"),
        ("http:///x.mp3", "has no host"),
        ("http://user:pw@rec.aliyuncs.com/x.mp3", "carries user info"),
        ("http://evil.net\\@rec.aliyuncs.com/x.mp3", "contains spaces, control characters or backslashes"),
        ("http://rec.aliyuncs.com/x y.mp3", "contains spaces, control characters or backslashes"),
        ("http://rec.aliyuncs.com\r\nHost: evil/x.mp3", "contains spaces, control characters or backslashes"),
        ("http://%72ec.aliyuncs.com/x.mp3", "names its host ambiguously"),
        ("http://2130706433/x.mp3", NOT_A_HOST),
        ("http://0x7f.1/x.mp3", NOT_A_HOST),
        ("http://rec.aliyuncs.com./x.mp3", NOT_A_HOST),
        ("http://ｒｅｃ.aliyuncs.com/x.mp3", "cannot be parsed as a URL"),
        ("https://x" + "y" * 9000, "is longer than 8192 characters"),
    ],
)
def test_a_link_that_is_not_a_plain_http_url_is_refused_as_such(link: str, problem: str) -> None:
    with pytest.raises(PermanentFailure) as refused:
        parse_link(link)

    assert refused.value.reason == f"provider returned a download link that {problem}"
    assert refusal(link, hosts()) == refused.value.reason  # the guard parses first
