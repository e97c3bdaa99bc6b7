"""Which stack an operator command talks to: a deployed one, or the local stack.

A deployed stack is found by name (``--stack-name``, ``--region``, ``--profile``) and read
through its CloudFormation outputs; the local stack by its state file (``--state``), which
carries the same outputs plus the loopback endpoints that stand in for AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Every output the commands use; a stack deployed from an older template may lack some.
OUTPUTS = (
    "LedgerTableName",
    "FetchQueueUrl",
    "FetchDeadLetterQueueUrl",
    "ReconcilerFunctionName",
    "SourcesSecretPrefix",
)
# Backfills invoke the reconciler synchronously: give a run its whole Lambda timeout.
LAMBDA_READ_TIMEOUT = 330


class TargetError(Exception):
    """The stack cannot be reached or is not a callvault stack."""


@dataclass(frozen=True)
class StackTarget:
    name: str
    outputs: dict[str, str]
    session: boto3.Session
    endpoint_url: str | None = None  # the local stack's stand-in for every AWS service
    lambda_endpoint_url: str | None = None  # the local stack's Lambda Invoke API

    @classmethod
    def deployed(cls, stack_name: str, region: str | None, profile: str | None) -> StackTarget:
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
            stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            raise TargetError(f"stack {stack_name!r}: {exc.response['Error'].get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise TargetError(f"cannot reach AWS: {exc}") from None
        outputs = {o["OutputKey"]: str(o.get("OutputValue", "")) for o in stacks[0].get("Outputs", [])}
        return cls(stack_name, _checked(outputs, f"stack {stack_name!r}"), session)

    @classmethod
    def local(cls, state_file: str | Path) -> StackTarget:
        path = Path(state_file)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TargetError(f"no local stack state at {path}: start one with `make local`") from None
        except (OSError, ValueError) as exc:
            raise TargetError(f"{path} is not a local stack state file: {exc}") from None
        if not isinstance(state, dict) or not isinstance(state.get("outputs"), dict):
            raise TargetError(f"{path} is not a local stack state file (no outputs)")
        # moto accepts any credentials; fixed ones keep a machine's own AWS profile out of it.
        session = boto3.Session(
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - moto's, not a secret
            region_name=str(state.get("region")),
        )
        return cls(
            str(state.get("stack_name", "local")),
            _checked({k: str(v) for k, v in state["outputs"].items()}, f"local stack {path}"),
            session,
            endpoint_url=str(state.get("aws_endpoint_url")),
            lambda_endpoint_url=str(state.get("lambda_endpoint_url") or state.get("aws_endpoint_url")),
        )

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    def client(self, service: str) -> Any:
        endpoint = self.lambda_endpoint_url if service == "lambda" else self.endpoint_url
        config = Config(read_timeout=LAMBDA_READ_TIMEOUT, retries={"max_attempts": 0}) if service == "lambda" else None
        return self.session.client(service, endpoint_url=endpoint, config=config)  # type: ignore[call-overload]

    def ledger_table(self) -> Any:
        return self.session.resource("dynamodb", endpoint_url=self.endpoint_url).Table(self.outputs["LedgerTableName"])

    def caller(self) -> str:
        """Who is acting, for the record: the AWS identity, or the local user."""
        if self.is_local:
            import getpass

            return f"{getpass.getuser()} (local stack)"
        try:
            return str(self.client("sts").get_caller_identity()["Arn"])
        except (ClientError, BotoCoreError):
            return "unknown caller"


def _checked(outputs: dict[str, str], where: str) -> dict[str, str]:
    missing = [name for name in OUTPUTS if not outputs.get(name)]
    if missing:
        raise TargetError(f"{where} has no output {', '.join(missing)}: is it a callvault stack of this version?")
    return outputs
