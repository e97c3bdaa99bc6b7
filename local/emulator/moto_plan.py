"""Adapt the translated template to what moto can create, and set aside what it cannot run.

moto's CloudFormation creates the AWS resources but not the compute glue, so the plan:

- checks the template's ``Rules`` as CloudFormation does before it creates anything (moto
  ignores them), then drops them (:func:`check_rules`);
- sets aside what moto would create but cannot wire up: the CloudWatch dashboard shows the
  stack's alarms, which moto's CloudFormation does not create (``SET_ASIDE_TYPES``);
- takes the event source mappings out (moto would swallow the messages; the emulator polls);
- takes the targets off schedule rules: the emulator plays schedules itself, and moto matches
  every event put on the bus against a rule without a pattern (AWS never does) and fails to
  deliver it to the rule's Lambda target (:func:`_unwire_schedules`);
- inlines state machine definitions (moto reads only ``DefinitionString``) and applies their
  ``DefinitionSubstitutions`` once the stack exists (:func:`install_state_machines`);
- adds hidden outputs, so moto resolves the expressions the emulator needs (ARNs, queue URLs);
- once the stack exists, does what moto's CloudFormation left undone (:func:`complete_stack`):
  the state machines, and bucket versioning, which it ignores.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
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

# Resource types left out of moto's stack, and why; outputs that name them go too.
SET_ASIDE_TYPES = {
    "AWS::CloudWatch::Dashboard": "its widgets name the stack's alarms, which moto's CloudFormation does not create",
}


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


def plan_for_moto(translated: dict[str, Any], artifacts: Artifacts, parameters: Mapping[str, str]) -> MotoPlan:
    """Check the rules, set aside what moto cannot wire up, remove event source mappings, inline
    state machine definitions, add resolver outputs. ``parameters`` are the stack's parameter values."""
    body = copy.deepcopy(translated)
    check_rules(body, parameters)
    body.pop("Rules", None)
    _set_aside(body)
    hidden = _HiddenOutputs()
    mappings = _take_event_source_mappings(body, hidden)
    _unwire_schedules(body)
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


def _unwire_schedules(body: dict[str, Any]) -> None:
    """Schedule rules stay in moto's stack (their names are the ARNs scheduled events carry),
    without targets: ``local.emulator.scheduler`` invokes the functions."""
    for resource in body["Resources"].values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Events::Rule" and "ScheduleExpression" in props:
            props.pop("Targets", None)


def _set_aside(body: dict[str, Any]) -> None:
    """Remove the resources of ``SET_ASIDE_TYPES`` and the outputs that refer to them."""
    resources = body["Resources"]
    removed = {lid for lid, res in resources.items() if res.get("Type") in SET_ASIDE_TYPES}
    for logical_id in removed:
        del resources[logical_id]
    for resource in resources.values():
        _drop_dependencies(resource, removed)
    outputs = body.get("Outputs") or {}
    for key in [key for key, output in outputs.items() if _names_any(output, removed)]:
        del outputs[key]


def _names_any(node: Any, logical_ids: set[str]) -> bool:
    """Whether an expression refers to one of ``logical_ids`` (Ref, GetAtt or Sub)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and value in logical_ids:
                return True
            if key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else str(value).split(".")[0]
                if target in logical_ids:
                    return True
            if key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                if any(name.split(".")[0] in logical_ids for name in re.findall(r"\$\{([^}!]+)\}", text)):
                    return True
            if _names_any(value, logical_ids):
                return True
    elif isinstance(node, list):
        return any(_names_any(item, logical_ids) for item in node)
    return False


def check_rules(template: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
    """Evaluate the template's ``Rules`` as CloudFormation does before creating a stack: each rule
    whose ``RuleCondition`` holds must pass every ``Assert``; a failing one is refused with its
    ``AssertDescription``. Supports the rule functions the template uses (Ref, Equals, Not, And,
    Or, Contains); any other is a start-up error rather than a rule silently skipped."""
    declared = template.get("Parameters") or {}
    values = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
    values.update({name: value for name, value in parameters.items() if name in declared})
    for name, rule in (template.get("Rules") or {}).items():
        if "RuleCondition" in rule and not _rule_value(rule["RuleCondition"], values, name):
            continue
        for assertion in rule.get("Assertions", []):
            if not _rule_value(assertion["Assert"], values, name):
                reason = assertion.get("AssertDescription", "an assertion failed")
                raise LocalStackError(f"template rule {name} refuses these parameters: {reason}")


def _rule_value(node: Any, values: Mapping[str, str], rule: str) -> Any:
    if not isinstance(node, dict):
        return node
    [(function, argument)] = node.items()
    if function == "Ref":
        if argument not in values:
            raise LocalStackError(f"template rule {rule} refers to unknown parameter {argument!r}")
        return values[argument]
    args = [_rule_value(item, values, rule) for item in argument] if isinstance(argument, list) else []
    if function == "Fn::Equals":
        return args[0] == args[1]
    if function == "Fn::Not":
        return not args[0]
    if function == "Fn::And":
        return all(args)
    if function == "Fn::Or":
        return any(args)
    if function == "Fn::Contains":
        return args[1] in args[0]
    raise LocalStackError(f"template rule {rule} uses {function}, which the local stack cannot evaluate")


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


def complete_stack(
    clients: Callable[[str], Any],
    aws: MotoAws,
    plan: MotoPlan,
    template: Mapping[str, Any],
    physical: Mapping[str, tuple[str, str]],
    outputs: Mapping[str, str],
) -> None:
    """What moto's CloudFormation leaves undone in a created stack: the state machines to its
    executing backend, and bucket versioning. ``clients`` makes a client of ``aws`` by service."""
    install_state_machines(clients("stepfunctions"), aws, plan, physical, outputs)
    apply_bucket_versioning(clients("s3"), template, physical)


def apply_bucket_versioning(s3: Any, template: Mapping[str, Any], physical: Mapping[str, tuple[str, str]]) -> None:
    """Turn on versioning where the template does: moto's CloudFormation creates the bucket but
    ignores ``VersioningConfiguration`` (and the lifecycle rules, which moto would not run
    anyway). Versions matter to correctness: an overwrite keeps the old recording, and an
    erasure must delete every version."""
    for logical_id, properties in resources_of_type(template, "AWS::S3::Bucket"):
        versioning = properties.get("VersioningConfiguration") or {}
        if versioning.get("Status") == "Enabled" and logical_id in physical:
            s3.put_bucket_versioning(Bucket=physical[logical_id][1], VersioningConfiguration={"Status": "Enabled"})
