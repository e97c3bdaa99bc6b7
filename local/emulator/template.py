"""Reading ``template.yaml``: CloudFormation YAML, resources by type, and the SAM translation.

The template is parsed with CloudFormation's short intrinsic tags (``!Ref``, ``!GetAtt``...)
turned into their long form, and translated to plain CloudFormation offline with
``aws-sam-translator``, as the SAM transform does in ``sam deploy``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from local.emulator.errors import LocalStackError, one_line


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML loader for CloudFormation: short intrinsic tags, and no timestamp conversion."""


# CloudFormation keeps "2010-09-09" a string; plain YAML would turn an unquoted one into a date.
_CloudFormationLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """Turn ``!Name value`` into the long form ``{"Fn::Name": value}`` (``Ref``/``Condition`` bare)."""
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        # The short form "Resource.Attribute" may itself contain dots after the first one.
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template (YAML or JSON) into plain long-form dicts."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CloudFormationLoader)  # noqa: S506
    except FileNotFoundError as error:
        raise LocalStackError(f"template not found: {path}") from error
    except (OSError, yaml.YAMLError) as error:
        raise LocalStackError(f"template {path} is not valid YAML: {one_line(error)}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise LocalStackError(f"template {path} has no Resources section")
    return document


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(logical_id, properties)`` of every resource of one type."""
    for logical_id, resource in template.get("Resources", {}).items():
        if isinstance(resource, dict) and resource.get("Type") == resource_type:
            yield logical_id, resource.setdefault("Properties", {})


def function_globals(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``Globals.Function`` section, which may supply CodeUri/Handler/Layers."""
    return (template.get("Globals") or {}).get("Function") or {}


class _MotoManagedPolicies:
    """Managed policy name → ARN map for the translator, from moto's copy of the AWS list."""

    def load(self) -> dict[str, str]:
        """Return every AWS managed policy moto knows, as the translator's loader must."""
        from moto.iam.aws_managed_policies import aws_managed_policies_data

        policies = json.loads(aws_managed_policies_data)
        return {name: f"arn:aws:iam::aws:policy{data['Path']}{name}" for name, data in policies.items()}


def translate_template(template: dict[str, Any], parameters: Mapping[str, str]) -> dict[str, Any]:
    """Translate a packaged SAM template into plain CloudFormation, offline."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    try:
        return transform(copy.deepcopy(template), dict(parameters), _MotoManagedPolicies())
    except InvalidDocumentException as error:
        causes = "; ".join(one_line(cause) for cause in error.causes)
        raise LocalStackError(f"template does not translate: {causes}") from error
