"""Per-source retention classes: every object of a source (recordings, sidecars) carries the tag
``callvault-retention`` with its source's class, and the bucket's lifecycle rules (template.yaml,
parameters ``ArchiveAfterDays`` and ``ExpireAfterDays``) act on the tag:

- ``standard`` (the default): kept in S3 Standard until erased;
- ``archive``: moved to S3 Glacier Instant Retrieval after ``ArchiveAfterDays``, kept;
- ``archive-then-expire``: archived the same way, and deleted after ``ExpireAfterDays`` (a
  version Object Lock still protects is kept until its retention ends: S3 never expires it early).
"""

from __future__ import annotations

from urllib.parse import urlencode

RETENTION_TAG = "callvault-retention"
RETENTION_CLASSES = ("standard", "archive", "archive-then-expire")
DEFAULT_RETENTION_CLASS = "standard"


def object_tags(retention_class: str | None, **more: str) -> dict[str, str]:
    return {RETENTION_TAG: retention_class or DEFAULT_RETENTION_CLASS, **more}


def tagging(tags: dict[str, str]) -> str:
    """The ``Tagging`` parameter of PutObject and CreateMultipartUpload (URL query form)."""
    return urlencode(tags)
