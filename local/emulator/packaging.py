"""What ``sam package`` does: upload the template's code and definitions, point it at ``s3://``.

Function and layer directories are zipped reproducibly and state machine definitions (SAM's
``DefinitionUri``, a plain state machine's ``DefinitionS3Location``) uploaded as they are, into an
artifact bucket in moto. :class:`Artifacts` remembers which local path
each S3 key came from: the handlers run from their source tree, not from the zip.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.emulator.errors import LocalStackError
from local.emulator.template import function_globals, resources_of_type

ARTIFACT_BUCKET = "callvault-local-artifacts"


@dataclass(frozen=True)
class Artifacts:
    """Where each uploaded artifact came from, keyed by its S3 key in the artifact bucket."""

    bucket: str
    sources: Mapping[str, Path]


def local_artifact_path(template_dir: Path, uri: Any, owner: str, prop: str) -> Path:
    """Resolve a local CodeUri/ContentUri/DefinitionUri; anything else cannot be run locally."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        raise LocalStackError(f"{owner}.{prop} must be a local path for the local runtime, got {uri!r}")
    path = (template_dir / uri).resolve()
    if not path.exists():
        raise LocalStackError(f"{owner}.{prop} points to {path}, which does not exist")
    return path


def zip_directory(directory: Path) -> bytes:
    """Zip a code directory reproducibly (sorted, fixed timestamps, no bytecode caches)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def package_template(template: dict[str, Any], template_dir: Path, s3: Any, bucket: str) -> Artifacts:
    """Upload function/layer code and state machine definitions; rewrite their URIs to ``s3://``.

    Mutates ``template`` in place, like ``sam package`` writing the packaged template.
    """
    sources: dict[str, Path] = {}

    def upload(logical_id: str, path: Path, body: bytes, suffix: str) -> str:
        key = f"{logical_id}/{hashlib.sha256(body).hexdigest()[:16]}{suffix}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        sources[key] = path
        return f"s3://{bucket}/{key}"

    code_default = function_globals(template).get("CodeUri")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        if "InlineCode" in props:
            raise LocalStackError(f"{logical_id} uses InlineCode, which the local runtime cannot import")
        path = local_artifact_path(template_dir, props.get("CodeUri", code_default), logical_id, "CodeUri")
        props["CodeUri"] = upload(logical_id, path, zip_directory(path), ".zip")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::LayerVersion"):
        path = local_artifact_path(template_dir, props.get("ContentUri"), logical_id, "ContentUri")
        props["ContentUri"] = upload(logical_id, path, zip_directory(path), ".zip")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::StateMachine"):
        if "DefinitionUri" in props:
            path = local_artifact_path(template_dir, props["DefinitionUri"], logical_id, "DefinitionUri")
            props["DefinitionUri"] = upload(logical_id, path, path.read_bytes(), path.suffix)
    # A plain state machine names its local definition file in DefinitionS3Location; `sam package`
    # turns it into {Bucket, Key}.
    for logical_id, props in resources_of_type(template, "AWS::StepFunctions::StateMachine"):
        if isinstance(props.get("DefinitionS3Location"), str):
            location = props["DefinitionS3Location"]
            path = local_artifact_path(template_dir, location, logical_id, "DefinitionS3Location")
            key = upload(logical_id, path, path.read_bytes(), path.suffix).removeprefix(f"s3://{bucket}/")
            props["DefinitionS3Location"] = {"Bucket": bucket, "Key": key}
    return Artifacts(bucket=bucket, sources=sources)
