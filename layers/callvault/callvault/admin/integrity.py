"""``callvault audit``: does every archived object still hold what the ledger says was stored?

For each STORED file of a source's calls since a day (the ledger's ByCallDate index), the object
version the ledger names is asked for its size and for the checksum S3 itself verified and keeps
(``HeadObject`` with ``ChecksumMode=ENABLED``): the SHA-256 of a single ``PutObject`` is compared
with the ledger's sha256 directly. A multipart object's S3 checksum is a CRC32 of its parts, not
comparable with a whole-file SHA-256: for it, the sha256 the fetcher tagged the version with is
compared, and the object is reported ``unverifiable`` if the tag is missing (``--deep`` then
reads it back and hashes it).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from callvault.ledger import RecordingLedger, Status

READ_SIZE = 1024 * 1024


@dataclass
class AuditReport:
    checked: int = 0
    intact: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)  # key, version, problem

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "intact": self.intact, "problems": self.problems}


def audit(
    s3: Any, bucket: str, ledger: RecordingLedger, source_id: str, first_day: str, *, deep: bool = False
) -> AuditReport:
    report = AuditReport()
    for item in ledger.by_call_date(source_id, first_day, "9999-12-31"):
        if item.get("status") != Status.STORED.value:
            continue
        report.checked += 1
        problem = _problem_of(s3, bucket, item, deep)
        if problem:
            report.problems.append(
                {"key": str(item["s3_key"]), "version": str(item.get("version_id") or ""), "problem": problem}
            )
        else:
            report.intact += 1
    return report


def _problem_of(s3: Any, bucket: str, item: dict[str, Any], deep: bool) -> str | None:
    key, version = str(item["s3_key"]), str(item.get("version_id") or "")
    expected, size = str(item["sha256"]), int(item["size"])
    where = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    try:
        head = s3.head_object(**where, ChecksumMode="ENABLED")
    except ClientError as exc:
        return f"missing ({exc.response.get('Error', {}).get('Code')})"
    if int(head.get("ContentLength", -1)) != size:
        return f"size {head.get('ContentLength')} but the ledger stored {size}"
    stored_sha = head.get("ChecksumSHA256")
    if stored_sha and "-" not in stored_sha:
        actual = base64.b64decode(stored_sha).hex()
        return None if actual == expected else f"S3's SHA-256 {actual} is not the ledger's {expected}"
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(**where).get("TagSet", [])}
    if deep:
        digest = hashlib.sha256()
        body = s3.get_object(**where)["Body"]
        for chunk in iter(lambda: body.read(READ_SIZE), b""):
            digest.update(chunk)
        return None if digest.hexdigest() == expected else f"its bytes hash to {digest.hexdigest()}, not {expected}"
    if "sha256" not in tags:
        return "unverifiable without reading it: no SHA-256 checksum or sha256 tag (--deep reads it)"
    return None if tags["sha256"] == expected else f"its sha256 tag {tags['sha256']} is not the ledger's {expected}"
