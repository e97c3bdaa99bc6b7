"""Phone numbers of a call's participants are personal data: each source chooses how they leave
callvault (``participants:`` in its document), the same for every output that carries them —
the sidecar ``call.json``, the ``RecordingArchived``/``RecordingFailed`` events, and through them
the Athena table. Logs and alerts never carry participants at all (``without_phone_numbers``
masks any long digit run an alert's free text may hold).

- ``keep``: the number as the provider reported it;
- ``mask`` (the default): only its last four digits, ``***1234``;
- ``hash``: ``hmac-sha256:<hex>`` of the number's digits (and a leading ``+``) under the source's
  ``participants_hash_key``: the same number always gives the same value, so "every call of this
  number" is still one lookup (``callvault hash-number``), while the number itself cannot be read
  back nor guessed without the key.

Providers may also write the numbers into a recording's file name (a PBX names its files
``exten-13800138000-02161234567-….wav``). Unless the source keeps numbers, such a file is stored
and announced under its name with each number masked (``exten-xxxxxxx8000-xxxxxxx4567-….wav``,
``name_for_archive``; the same under ``hash``: a file name needs no lookup by number, the
participants do that): the S3 key, the ``file_name`` of sidecars and events. Log lines mask them
whatever the policy. The ledger keeps the provider's name as the file's identity.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from callvault.errors import ConfigError

KEEP, MASK, HASH = "keep", "mask", "hash"
POLICIES = (KEEP, MASK, HASH)
DEFAULT_POLICY = MASK
MIN_HASH_KEY_LENGTH = 16
HASH_PREFIX = "hmac-sha256:"
_NOT_DIALLED = re.compile(r"[^0-9+]")


def normalised(number: str) -> str:
    """What is hashed: the digits, with a leading ``+`` if the number had one ("+86 138-0013"
    and "+861380013" are one number; "861380013" without the plus is another, as dialled)."""
    kept = _NOT_DIALLED.sub("", number)
    return ("+" if kept.startswith("+") else "") + kept.replace("+", "")


@dataclass(frozen=True)
class ParticipantPolicy:
    """How one source's participant numbers are written out."""

    mode: str = DEFAULT_POLICY
    hash_key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ConfigError(f"participants must be one of {', '.join(POLICIES)}, got {self.mode!r}")

    def apply(self, number: str) -> str:
        if self.mode == KEEP:
            return number
        if self.mode == MASK:
            digits = re.sub(r"\D", "", number)
            return "***" + digits[-4:] if len(digits) > 4 else "***"
        if not self.hash_key:
            # The webhook's copy of a source has no key; it never writes participants out.
            raise ConfigError("participants: hash needs participants_hash_key (absent from this copy of the source)")
        digest = hmac.new(self.hash_key.encode(), normalised(number).encode(), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest


# Shorter digit runs are extensions (101), not personal numbers.
MIN_NUMBER_DIGITS = 7


def name_for_archive(name: str, numbers: list[str], policy: ParticipantPolicy) -> str:
    """``name`` with every participant number in it masked, unless the source keeps numbers."""
    if policy.mode == KEEP:
        return name
    for number in sorted({re.sub(r"\D", "", n) for n in numbers}, key=len, reverse=True):
        if len(number) >= MIN_NUMBER_DIGITS:
            name = name.replace(number, "x" * (len(number) - 4) + number[-4:])
    return name


def parse_policy(raw_mode: object, raw_key: object, *, where: str, credentials: bool) -> ParticipantPolicy:
    """The ``participants`` and ``participants_hash_key`` fields of a source document."""
    mode = DEFAULT_POLICY if raw_mode is None else raw_mode
    if mode not in POLICIES:
        raise ConfigError(f"{where}: participants must be one of {', '.join(POLICIES)}, got {raw_mode!r}")
    if raw_key is not None and (not isinstance(raw_key, str) or len(raw_key) < MIN_HASH_KEY_LENGTH):
        raise ConfigError(
            f"{where}: participants_hash_key must be a string of at least {MIN_HASH_KEY_LENGTH} characters"
        )
    if raw_key is not None and not credentials:
        raise ConfigError(f"{where}: the webhook's copy of a source must not hold participants_hash_key")
    if mode == HASH and raw_key is None and credentials:
        raise ConfigError(
            f"{where}: participants: hash needs participants_hash_key (at least {MIN_HASH_KEY_LENGTH} characters)"
        )
    return ParticipantPolicy(str(mode), raw_key if isinstance(raw_key, str) else None)
