"""Adapt the translated template to what moto can create, and set aside what it cannot run.

moto's CloudFormation creates the AWS resources but not the compute glue, so the plan:

- takes the event source mappings out (moto would swallow the messages; the emulator polls);
- inlines state machine definitions (moto reads only ``DefinitionString``) and applies their
  ``DefinitionSubstitutions`` once the stack exists (:func:`install_state_machines`);
- adds hidden outputs, so moto resolves the expressions the emulator needs (ARNs, queue URLs).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from local.emulator.errors import LocalStackError, one_line
from local.emulator.moto_server import MotoAws
from local.emulator.packaging import Artifacts
from local.emulator.template import resources_of_type

# Output keys this module adds to the template to let moto resolve expressions for it.
HIDDEN_OUTPUT_PREFIX = "LocalRuntimeExpr"


@dataclass
class MotoPlan:
    """The CloudFormation body for moto plus everything set aside for the runtime."""

    body: dict[str, Any]
    event_source_mappings: dict[str, dict[str, Any]]
    # Output key → expression, for values moto must resolve (ARNs, queue URLs, substitutions).
    hidden_outputs: dict[str, Any]
    # State machine logical id → {placeholder: output key or literal value}.
    substitutions: dict[str, dict[str, str]]


class _HiddenOutputs:
    """Collects expressions to resolve through extra stack outputs."""

    def __init__(self) -> None:
        self.outputs: dict[str, Any] = {}

    def add(self, expression: Any, condition: str | None = None) -> str:
        """Register an expression; return the output key under which its value will appear."""
        key = f"{HIDDEN_OUTPUT_PREFIX}{len(self.outputs)}"
        output: dict[str, Any] = {"Value": expression}
        if condition:
            output["Condition"] = condition
        self.outputs[key] = output
        return key


def plan_for_moto(translated: dict[str, Any], artifacts: Artifacts) -> MotoPlan:
    """Remove event source mappings, inline state machine definitions, add resolver outputs."""
    body = copy.deepcopy(translated)
    hidden = _HiddenOutputs()
    mappings = _take_event_source_mappings(body, hidden)
    substitutions = _inline_state_machines(body, artifacts, hidden)
    body.setdefault("Outputs", {}).update(hidden.outputs)
    return MotoPlan(body, mappings, hidden.outputs, substitutions)


def _take_event_source_mappings(body: dict[str, Any], hidden: _HiddenOutputs) -> dict[str, dict[str, Any]]:
    """Pull every event source mapping out of the template (moto would swallow the messages).

    The mapping's source ARN is kept as a hidden output so moto resolves it for the poller.
    """
    resources = body["Resources"]
    mappings: dict[str, dict[str, Any]] = {}
    for logical_id in [lid for lid, res in resources.items() if res.get("Type") == "AWS::Lambda::EventSourceMapping"]:
        resource = resources.pop(logical_id)
        props = dict(resource.get("Properties", {}))
        props["_SourceArnOutput"] = hidden.add(props.get("EventSourceArn"), resource.get("Condition"))
        props["_FunctionOutput"] = hidden.add(props.get("FunctionName"), resource.get("Condition"))
        mappings[logical_id] = props
    for resource in resources.values():
        _drop_dependencies(resource, set(mappings))
    return mappings


def _drop_dependencies(resource: dict[str, Any], removed: set[str]) -> None:
    """Remove DependsOn entries that point at resources taken out of the template."""
    depends = resource.get("DependsOn")
    if isinstance(depends, str) and depends in removed:
        del resource["DependsOn"]
    elif isinstance(depends, list):
        resource["DependsOn"] = [name for name in depends if name not in removed]


def _inline_state_machines(
    body: dict[str, Any], artifacts: Artifacts, hidden: _HiddenOutputs
) -> dict[str, dict[str, str]]:
    """Give moto a DefinitionString it reads; defer DefinitionSubstitutions to after creation.

    moto's StateMachine reads only ``DefinitionString``. Substitution values (queue URLs, table
    names...) exist only once the stack does, so they become hidden outputs; the definition is
    substituted and updated right after creation (see :func:`install_state_machines`).
    """
    substitutions: dict[str, dict[str, str]] = {}
    for logical_id, props in resources_of_type(body, "AWS::StepFunctions::StateMachine"):
        location = props.pop("DefinitionS3Location", None)
        if location is not None:
            props["DefinitionString"] = _definition_text(artifacts.sources[location["Key"]])
        elif "Definition" in props:
            props["DefinitionString"] = json.dumps(props.pop("Definition"))
        values = props.pop("DefinitionSubstitutions", None) or {}
        condition = body["Resources"][logical_id].get("Condition")
        substitutions[logical_id] = {
            name: value if isinstance(value, str) else hidden.add(value, condition) for name, value in values.items()
        }
    return substitutions


def _definition_text(path: Path) -> str:
    """Read an ASL file as JSON text (Step Functions also accepts YAML definitions in S3)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        return json.dumps(yaml.safe_load(text))
    return text


def substitute_definition(definition: str, values: Mapping[str, str]) -> str:
    """Apply DefinitionSubstitutions: replace each ``${Name}`` that has a value, leave the rest."""

    def replace(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return re.sub(r"\$\{([A-Za-z0-9_.:-]+)\}", replace, definition)


def unsupported_types(body: Mapping[str, Any]) -> list[str]:
    """Resource types of a template that moto's CloudFormation skips (created as nothing)."""
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    supported = set(get_model_map()) | set(NULL_MODELS)
    types = {res.get("Type", "") for res in body.get("Resources", {}).values() if isinstance(res, dict)}
    return sorted(t for t in types if t not in supported and not t.startswith("Custom::"))


def install_state_machines(
    sfn: Any, aws: MotoAws, plan: MotoPlan, physical: Mapping[str, tuple[str, str]], outputs: Mapping[str, str]
) -> None:
    """Move the stack's state machines to moto's executing backend, definitions substituted.

    moto's CloudFormation creates state machines in its plain Step Functions backend, but
    with ``execute_state_machine`` on, the API serves (and runs) only its parser backend's.
    So: read each definition while execution is still off, switch it on, and create the
    machine again under the same name, hence the same ARN the outputs and env already hold.
    ``sfn`` is a Step Functions client of ``aws``; ``physical`` and ``outputs`` are the created stack's.
    """
    aws.execute_state_machines(False)  # a previous stack in this process may have left it on
    machines = []
    for logical_id, (resource_type, arn) in physical.items():
        if resource_type != "AWS::StepFunctions::StateMachine":
            continue
        described = sfn.describe_state_machine(stateMachineArn=arn)
        placeholders = plan.substitutions.get(logical_id, {})
        values = {name: outputs.get(ref, ref) for name, ref in placeholders.items()}
        machines.append((described, substitute_definition(described["definition"], values)))
    aws.execute_state_machines(True)
    for described, definition in machines:
        try:
            sfn.create_state_machine(
                name=described["name"],
                definition=definition,
                roleArn=described["roleArn"],
                type=described.get("type", "STANDARD"),
            )
        except ClientError as error:
            raise LocalStackError(f"state machine {described['name']} rejected: {one_line(error)}") from error
