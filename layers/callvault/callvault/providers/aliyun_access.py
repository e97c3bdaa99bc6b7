"""What every Alibaba Cloud source (CCC, Dyplsapi) says about reaching its API.

Shared by the providers that speak the RPC API: access key (optionally STS), endpoint, region,
the hosts their signed download links may point at (``callvault.download_hosts``), and the
read timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from callvault.download_hosts import DownloadHosts, parse_download_hosts
from callvault.errors import ConfigError
from callvault.http import DEFAULT_READ_TIMEOUT, ResponseStream
from callvault.providers.alibaba_rpc import AlibabaRpcClient, RpcCredentials
from callvault.signed_download import open_signed_url
from callvault.validation import number, optional_text

if TYPE_CHECKING:
    # Imported where a request is made (see callvault.http): the webhook imports this module
    # to parse sources and events, and never calls a provider.
    import requests

ACCESS_FIELDS = frozenset(
    {
        "access_key_id",
        "access_key_secret",
        "security_token",
        "endpoint",
        "region",
        "download_hosts",
        "allow_private_network",
        "read_timeout_seconds",
    }
)
# The access key pair (and STS token): kept out of the webhook's copy of a source.
CREDENTIAL_FIELDS = frozenset({"access_key_id", "access_key_secret", "security_token"})
# OSS buckets of both services live under aliyuncs.com (e.g. *.oss-cn-shanghai.aliyuncs.com).
DEFAULT_DOWNLOAD_HOSTS = (".aliyuncs.com",)


@dataclass(frozen=True)
class RpcAccess:
    endpoint: str
    credentials: RpcCredentials | None  # None in the webhook's copy of a source
    region: str | None
    download_hosts: DownloadHosts
    read_timeout_seconds: float

    def client(self, version: str, http: requests.Session) -> AlibabaRpcClient:
        if self.credentials is None:
            raise ConfigError("this copy of the source has no access key (the webhook's): it cannot call the API")
        return AlibabaRpcClient(
            self.endpoint,
            version,
            self.credentials,
            http,
            region_id=self.region,
            read_timeout=self.read_timeout_seconds,
        )

    def open_link(self, http: requests.Session, url: str, offset: int = 0) -> AbstractContextManager[ResponseStream]:
        """Open a signed recording link of this source (host-checked, streamed) from byte ``offset``."""
        return open_signed_url(
            http, url, hosts=self.download_hosts, read_timeout=self.read_timeout_seconds, offset=offset
        )


def parse_rpc_access(
    raw: Mapping[str, Any], *, where: str, default_endpoint: str, credentials: bool = True
) -> RpcAccess:
    """Validate the access part of a provider section; errors name the field.
    ``credentials=False``: the webhook's copy, without the access key."""
    access_key = _parse_credentials(raw, where=where) if credentials else None
    region = optional_text(raw, "region", where, hint="a region id like cn-shanghai")
    endpoint = str(raw.get("endpoint") or default_endpoint.format(region=region or "cn-shanghai")).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ConfigError(f"{where}: endpoint must look like https://ccc.cn-shanghai.aliyuncs.com, got {endpoint!r}")
    download_hosts = parse_download_hosts(raw, DEFAULT_DOWNLOAD_HOSTS, where=where)
    read_timeout = number(raw, "read_timeout_seconds", DEFAULT_READ_TIMEOUT, where, low=1, high=120)
    return RpcAccess(
        endpoint=endpoint,
        credentials=access_key,
        region=region,
        download_hosts=download_hosts,
        read_timeout_seconds=read_timeout,
    )


def _parse_credentials(raw: Mapping[str, Any], *, where: str) -> RpcCredentials:
    key_id, secret = raw.get("access_key_id"), raw.get("access_key_secret")
    if not isinstance(key_id, str) or not key_id or not isinstance(secret, str) or not secret:
        raise ConfigError(f"{where}: access_key_id and access_key_secret are required")
    token = optional_text(raw, "security_token", where, hint="the STS token text")
    return RpcCredentials(access_key_id=key_id, access_key_secret=secret, security_token=token)
