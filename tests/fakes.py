"""In-memory stand-ins for the AWS resources the core writes to, for fast unit tests (no moto).

``FakeTable`` is a DynamoDB table as boto3's Table resource shows it: items by (pk, sk), the
condition, update, key-condition, filter and projection expressions the ledger uses (evaluated,
not ignored: a condition that fails raises ConditionalCheckFailedException), and the global
secondary indexes of the ledger table in ``template.yaml`` (sparse: an item without an index's
key attributes is not in it). ``FakeS3`` keeps objects and multipart uploads in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import yaml
from botocore.exceptions import ClientError

from tests.conftest import ROOT

_TOKEN = re.compile(r"\s*(#\w+|:\w+|<>|<=|>=|[=<>(),+\-]|[A-Za-z_]\w*)")
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "SET", "REMOVE"}


def _conditional_check_failed() -> ClientError:
    return ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "condition"}}, "UpdateItem")


def ledger_indexes() -> dict[str, tuple[str, str]]:
    """The ledger table's indexes as the template declares them: name → (hash key, range key)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass
    indexes = template["Resources"]["LedgerTable"]["Properties"]["GlobalSecondaryIndexes"]
    return {
        index["IndexName"]: (
            next(k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "HASH"),
            next(k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "RANGE"),
        )
        for index in indexes
    }


class _Expression:
    """A parsed DynamoDB expression over one item, with its #names and :values."""

    def __init__(self, text: str, names: Mapping[str, str], values: Mapping[str, Any]) -> None:
        self.tokens = [match for match in _TOKEN.findall(text) if match.strip()]
        self.position = 0
        self.names = names
        self.values = values

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.tokens[self.position]
        if expected is not None and token.upper() != expected:
            raise ValueError(f"expected {expected}, got {token}")
        self.position += 1
        return token

    def path(self, token: str) -> str:
        return self.names[token] if token.startswith("#") else token

    # -- conditions

    def condition(self, item: Mapping[str, Any]) -> bool:
        result = self._or(item)
        if self.peek() is not None:
            raise ValueError(f"unparsed: {self.tokens[self.position :]}")
        return result

    def _or(self, item: Mapping[str, Any]) -> bool:
        result = self._and(item)
        while (self.peek() or "").upper() == "OR":
            self.take()
            right = self._and(item)
            result = result or right
        return result

    def _and(self, item: Mapping[str, Any]) -> bool:
        result = self._not(item)
        while (self.peek() or "").upper() == "AND":
            self.take()
            right = self._not(item)
            result = result and right
        return result

    def _not(self, item: Mapping[str, Any]) -> bool:
        if (self.peek() or "").upper() == "NOT":
            self.take()
            return not self._not(item)
        return self._primary(item)

    def _primary(self, item: Mapping[str, Any]) -> bool:
        token = self.take()
        if token == "(":
            result = self._or(item)
            self.take(")")
            return result
        if token in ("attribute_exists", "attribute_not_exists", "begins_with"):
            self.take("(")
            attribute = self.path(self.take())
            argument = None
            if token == "begins_with":
                self.take(",")
                argument = self.operand(self.take(), item)
            self.take(")")
            if token == "begins_with":
                return isinstance(item.get(attribute), str) and str(item[attribute]).startswith(str(argument))
            return (attribute in item) == (token == "attribute_exists")
        left = self.operand(token, item)
        operator = self.take()
        if operator.upper() == "BETWEEN":
            low = self.operand(self.take(), item)
            self.take("AND")
            high = self.operand(self.take(), item)
            return left is not None and low <= left <= high
        right = self.operand(self.take(), item)
        if left is None or right is None:
            return operator == "<>" and left != right
        return {
            "=": left == right,
            "<>": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[operator]

    def operand(self, token: str, item: Mapping[str, Any]) -> Any:
        return self.values[token] if token.startswith(":") else item.get(self.path(token))

    # -- updates

    def apply_update(self, item: dict[str, Any]) -> None:
        clause = ""
        while self.peek() is not None:
            token = self.peek() or ""
            if token.upper() in ("SET", "REMOVE"):
                clause = self.take().upper()
                continue
            if token == ",":
                self.take()
                continue
            attribute = self.path(self.take())
            if clause == "REMOVE":
                item.pop(attribute, None)
                continue
            self.take("=")
            value = self._value(item)
            while self.peek() in ("+", "-"):
                sign = self.take()
                other = self._value(item)
                value = value + other if sign == "+" else value - other
            item[attribute] = value

    def _value(self, item: Mapping[str, Any]) -> Any:
        token = self.take()
        if token == "if_not_exists":
            self.take("(")
            attribute = self.path(self.take())
            self.take(",")
            default = self.operand(self.take(), item)
            self.take(")")
            return item.get(attribute, default)
        return self.operand(token, item)


@dataclass
class _Meta:
    client: Any


@dataclass
class FakeTable:
    """A DynamoDB table with key (pk, sk) and the ledger's indexes; thread-safe like the service."""

    name: str = "ledger"
    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    indexes: dict[str, tuple[str, str]] = field(default_factory=ledger_indexes)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self.meta = _Meta(client=self)

    @staticmethod
    def _key(key: Mapping[str, Any]) -> tuple[str, str]:
        return str(key["pk"]), str(key["sk"])

    def _check(self, item: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        condition = params.get("ConditionExpression")
        if condition is None:
            return
        expression = _Expression(
            condition, params.get("ExpressionAttributeNames", {}), params.get("ExpressionAttributeValues", {})
        )
        if not expression.condition(item):
            raise _conditional_check_failed()

    def get_item(self, *, Key: Mapping[str, Any], ConsistentRead: bool = False) -> dict[str, Any]:
        with self._lock:
            item = self.items.get(self._key(Key))
            return {"Item": dict(item)} if item is not None else {}

    def put_item(self, *, Item: Mapping[str, Any], **params: Any) -> dict[str, Any]:
        with self._lock:
            self._check(self.items.get(self._key(Item), {}), params)
            self.items[self._key(Item)] = dict(Item)
        return {}

    def update_item(self, *, Key: Mapping[str, Any], UpdateExpression: str, **params: Any) -> dict[str, Any]:
        with self._lock:
            current = self.items.get(self._key(Key))
            self._check(current or {}, params)
            item = dict(current or Key)
            _Expression(
                UpdateExpression,
                params.get("ExpressionAttributeNames", {}),
                params.get("ExpressionAttributeValues", {}),
            ).apply_update(item)
            self.items[self._key(Key)] = item
        return {}

    def delete_item(self, *, Key: Mapping[str, Any], **params: Any) -> dict[str, Any]:
        with self._lock:
            self._check(self.items.get(self._key(Key), {}), params)
            self.items.pop(self._key(Key), None)
        return {}

    def query(self, **params: Any) -> dict[str, Any]:
        names, values = params.get("ExpressionAttributeNames", {}), params.get("ExpressionAttributeValues", {})
        hash_key, range_key = self.indexes[params["IndexName"]] if "IndexName" in params else ("pk", "sk")
        with self._lock:
            candidates = [dict(item) for item in self.items.values() if hash_key in item and range_key in item]
        matched = [
            item
            for item in candidates
            if _Expression(params["KeyConditionExpression"], names, values).condition(item)
            and (
                "FilterExpression" not in params
                or _Expression(params["FilterExpression"], names, values).condition(item)
            )
        ]
        matched.sort(key=lambda item: (item[range_key], item["pk"], item["sk"]))
        if "ProjectionExpression" in params:
            wanted = [names.get(part.strip(), part.strip()) for part in params["ProjectionExpression"].split(",")]
            matched = [{name: item[name] for name in wanted if name in item} for item in matched]
        return {"Items": matched}

    def batch_get_item(self, *, RequestItems: Mapping[str, Any]) -> dict[str, Any]:
        request = RequestItems[self.name]
        with self._lock:
            found = [dict(self.items[self._key(key)]) for key in request["Keys"] if self._key(key) in self.items]
        return {"Responses": {self.name: found}, "UnprocessedKeys": {}}

    def item(self, pk: str, sk: str) -> dict[str, Any]:
        """An item by key, for assertions (KeyError if absent)."""
        return self.items[(pk, sk)]


@dataclass
class FakeS3:
    """Objects and multipart uploads of one versioned bucket, in memory, checked like S3 checks
    them: a part or object whose declared checksum (CRC32 of a part, SHA-256 of a PutObject)
    does not match its bytes is refused with BadDigest, and completing checks the listed parts.
    Thread-safe (uploads come from several threads). ``refuse_part`` makes S3 refuse that part
    number once (InternalError); while ``parts_held`` is clear, upload_part waits for it."""

    objects: dict[str, list[bytes]] = field(default_factory=dict)  # key → versions, oldest first
    uploads: dict[str, dict[int, bytes]] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # upload id → create parameters
    checksums: dict[str, dict[str, str]] = field(default_factory=dict)  # key → checksum of the object
    part_checksums: dict[str, dict[int, str]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # key → tags of its newest version
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (key, version id) deleted
    requests: list[str] = field(default_factory=list)
    refuse_part: int | None = None
    parts_held: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.parts_held.set()

    def create_multipart_upload(
        self, *, Key: str, Metadata: Mapping[str, str] | None = None, **params: Any
    ) -> dict[str, str]:
        upload_id = uuid.uuid4().hex
        with self._lock:
            self.requests.append("CreateMultipartUpload")
            self.uploads[upload_id] = {}
            self.part_checksums[upload_id] = {}
            self.metadata[upload_id] = dict(Metadata or {})
            self.created[upload_id] = {"Key": Key, **params}
        return {"UploadId": upload_id}

    def upload_part(self, *, UploadId: str, PartNumber: int, Body: bytes, **params: Any) -> dict[str, str]:
        self.parts_held.wait()
        data = bytes(Body)
        with self._lock:
            self.requests.append(f"UploadPart {PartNumber}")
            if self.refuse_part == PartNumber:
                self.refuse_part = None
                raise _s3_error("InternalError", "UploadPart")
            if UploadId not in self.uploads:
                raise _s3_error("NoSuchUpload", "UploadPart")
            declared = params.get("ChecksumCRC32")
            if declared is not None and declared != crc32_b64(data):
                raise _s3_error("BadDigest", "UploadPart")
            self.uploads[UploadId][PartNumber] = data
            if declared is not None:
                self.part_checksums[UploadId][PartNumber] = declared
        return {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}

    def complete_multipart_upload(
        self, *, Key: str, UploadId: str, MultipartUpload: Mapping[str, Any], **_: Any
    ) -> dict[str, str]:
        with self._lock:
            self.requests.append("CompleteMultipartUpload")
            parts = self.uploads.pop(UploadId)
            checksums = self.part_checksums.pop(UploadId)
            listed = MultipartUpload["Parts"]
            for part in listed:
                data = parts.get(part["PartNumber"])
                if data is None or part["ETag"] != f'"{hashlib.md5(data).hexdigest()}"':
                    raise _s3_error("InvalidPart", "CompleteMultipartUpload")
                if checksums.get(part["PartNumber"]) != part.get("ChecksumCRC32"):
                    raise _s3_error("InvalidPart", "CompleteMultipartUpload")
            self.objects.setdefault(Key, []).append(b"".join(parts[part["PartNumber"]] for part in listed))
            self.tags[Key] = _tags_of(self.created[UploadId].get("Tagging"))
            if self.created[UploadId].get("ChecksumAlgorithm") == "CRC32":
                combined = b"".join(base64.b64decode(checksums[part["PartNumber"]]) for part in listed)
                self.checksums[Key] = {"ChecksumCRC32": f"{crc32_b64(combined)}-{len(listed)}"}
            return {"VersionId": f"v{len(self.objects[Key])}"}

    def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, str]:
        with self._lock:
            self.requests.append("AbortMultipartUpload")
            self.uploads.pop(UploadId, None)
            self.aborted.append(UploadId)
        return {}

    def put_object(self, *, Key: str, Body: bytes, **params: Any) -> dict[str, str]:
        data = bytes(Body)
        with self._lock:
            self.requests.append("PutObject")
            declared = params.get("ChecksumSHA256")
            if declared is not None and declared != base64.b64encode(hashlib.sha256(data).digest()).decode():
                raise _s3_error("BadDigest", "PutObject")
            self.objects.setdefault(Key, []).append(data)
            self.metadata[Key] = dict(params.get("Metadata") or {})
            self.tags[Key] = _tags_of(params.get("Tagging"))
            if declared is not None:
                self.checksums[Key] = {"ChecksumSHA256": declared}
            return {"VersionId": f"v{len(self.objects[Key])}"}

    def delete_object(self, *, Key: str, VersionId: str | None = None, **_: Any) -> dict[str, str]:
        """Deletes the version named (``v{n}``, as this fake numbers them) for good."""
        with self._lock:
            self.requests.append("DeleteObject")
            versions = self.objects.get(Key, [])
            index = int(VersionId[1:]) - 1 if VersionId else len(versions) - 1
            if 0 <= index < len(versions):
                versions[index] = b""  # keeps the numbering of the later versions
                self.deleted.append((Key, VersionId or f"v{index + 1}"))
        return {}

    def put_object_tagging(self, *, Key: str, Tagging: Mapping[str, Any], **_: Any) -> dict[str, str]:
        with self._lock:
            self.requests.append("PutObjectTagging")
            if Key not in self.objects:
                raise _s3_error("NoSuchKey", "PutObjectTagging")
            self.tags[Key] = {tag["Key"]: tag["Value"] for tag in Tagging["TagSet"]}
        return {}

    def list_multipart_uploads(self, **_: Any) -> dict[str, Any]:
        with self._lock:
            return {"Uploads": [{"UploadId": upload_id} for upload_id in self.uploads]}

    def list_parts(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        with self._lock:
            if UploadId not in self.uploads:
                raise _s3_error("NoSuchUpload", "ListParts")
            return {"Parts": [{"PartNumber": number} for number in sorted(self.uploads[UploadId])]}


def _tags_of(tagging: str | None) -> dict[str, str]:
    """The ``Tagging`` parameter of PutObject and CreateMultipartUpload (URL query form)."""
    return dict(parse_qsl(tagging or "", keep_blank_values=True))


def crc32_b64(data: bytes) -> str:
    """A CRC32 as S3 writes it: base64 of the four big-endian bytes."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _s3_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@dataclass
class FakeEvents:
    """EventBridge's PutEvents: the entries it accepted, in order; ``refuse`` makes it fail
    (raise, like an unreachable endpoint) while set."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    refuse: bool = False

    def put_events(self, *, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.refuse:
            raise _s3_error("InternalException", "PutEvents")
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(uuid.uuid4())} for _ in Entries]}

    def details(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(entry["Detail"]) for entry in self.entries if entry["DetailType"] == kind]
