"""The SAM template as the tests read it: plain YAML with CloudFormation's short tags in their long
form (so tests pin what is written), and its offline translation to CloudFormation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "statemachine" / "retry.asl.json"
REGION = "us-east-1"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` into {"Ref": x} and `!Sub ...` into {"Fn::Sub": ...}."""


def _cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{tag_suffix}", node.start_mark)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == resource_type}


def function_property(template: dict[str, Any], function: str, prop: str) -> Any:
    """A function's property, falling back to Globals as SAM does."""
    props = template["Resources"][function]["Properties"]
    return props.get(prop, template.get("Globals", {}).get("Function", {}).get(prop))


def environment_of(template: dict[str, Any], function: str) -> dict[str, Any]:
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {**global_vars, **own}


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """What `sam package` + CloudFormation's transform make of the template, offline."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if key in props:
                props[key] = f"s3://callvault-artifacts/{name}.zip"
    return transform(template, {}, NoManagedPolicies())


def translated_template() -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return translate(load_template())
