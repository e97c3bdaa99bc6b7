"""How CCC's two API versions shape their replies and errors.

2017-07-05 replies carry ``HttpStatusCode``, ``Success`` and ``Code`` beside the data, and its
errors repeat ``HttpStatusCode`` and ``Success: false``; 2020-07-01 wraps the data in
``Data`` with ``Code``, ``HttpStatusCode`` and ``Message``, and its errors use their own codes
(``Parameter.Blank``, ``NotExists.InstanceId``, ...).
"""

from __future__ import annotations

from local.simulators.aliyun.gateway import JsonDict, RpcContext, RpcError

__all__ = ["check_instance_2017", "error_2017", "reply_2017", "required", "v2_error", "v2_instance", "v2_reply"]


def required(ctx: RpcContext, *names: str) -> list[str]:
    """The values of ``names``; ``Missing{Name}`` for the first one absent."""
    missing = [n for n in names if n not in ctx.params]
    if missing:
        raise RpcError.missing(missing[0])
    return [ctx.params[n] for n in names]


def error_2017(code: str, message: str, status: int = 404) -> RpcError:
    """A 2017-07-05 business error."""
    return RpcError(status, code, message, HttpStatusCode=status, Success=False)


def reply_2017(ctx: RpcContext, data: JsonDict) -> JsonDict:
    """A 2017-07-05 success: ``data`` between the status fields, in the vendor's order."""
    return {"HttpStatusCode": 200, "RequestId": ctx.request_id, **data, "Success": True, "Code": "OK"}


def check_instance_2017(asked: str, instance_id: str) -> None:
    """``NotExist.Instance`` unless ``asked`` is the simulator's ``instance_id``."""
    if asked != instance_id:
        raise error_2017("NotExist.Instance", f"Call center instance '{asked}' does not exist")


def v2_error(status: int, code: str, message: str) -> RpcError:
    """A 2020-07-01 business error."""
    return RpcError(status, code, message, HttpStatusCode=status)


def v2_instance(ctx: RpcContext, instance_id: str, *names: str) -> list[str]:
    """Required ``InstanceId`` plus ``names``: none blank, and the instance must be ``instance_id``."""
    values = required(ctx, "InstanceId", *names)
    for name, value in zip(("InstanceId", *names), values, strict=True):
        if not value.strip():
            raise v2_error(400, "Parameter.Blank", f"The parameter {name} may not be null or blank.")
    if values[0] != instance_id:
        raise v2_error(404, "NotExists.InstanceId", f"The specified instance {values[0]} does not exist.")
    return values


def v2_reply(ctx: RpcContext, data: JsonDict | None) -> JsonDict:
    """A 2020-07-01 success: ``data`` (None when there is nothing yet) in ``Data``."""
    return {"Code": "OK", "HttpStatusCode": 200, "Message": "无", "RequestId": ctx.request_id, "Data": data}
