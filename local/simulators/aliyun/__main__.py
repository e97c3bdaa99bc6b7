"""Run the Alibaba Cloud simulators standalone: a CCC and a Dyplsapi, each with its file server.

``python -m local.simulators.aliyun --ccc-port 8091 --dypls-port 8092``.  The gateway they sit
behind is :mod:`local.simulators.aliyun.gateway`, its signature
:mod:`local.simulators.aliyun.signature`, the products :mod:`local.simulators.ccc` and
:mod:`local.simulators.dypls`, their file server :mod:`local.simulators.oss`.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import time

from local.simulators.aliyun.gateway import DEFAULT_CREDENTIALS
from local.simulators.ccc import CccSimulator
from local.simulators.dypls import DyplsSimulator

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run a CCC and a Dyplsapi simulator standalone until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m local.simulators.aliyun", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ccc-port", type=int, default=8091)
    parser.add_argument("--dypls-port", type=int, default=8092)
    parser.add_argument("--access-key-id", default=next(iter(DEFAULT_CREDENTIALS)))
    parser.add_argument("--access-key-secret", default=None, help="default: a random secret, printed")
    parser.add_argument("--calls", type=int, default=0, help="place N calls on each simulator")
    args = parser.parse_args(argv)
    secret = args.access_key_secret or secrets.token_urlsafe(18)
    creds = {args.access_key_id: secret}
    ccc = CccSimulator(credentials=creds, host=args.host, port=args.ccc_port, not_ready_seconds=0)
    dypls = DyplsSimulator(credentials=creds, host=args.host, port=args.dypls_port, not_ready_seconds=0)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    with ccc, dypls:
        print(f"ccc   {ccc.endpoint} instance={ccc.instance_id} files={ccc.oss.base_url}", flush=True)
        print(f"dypls {dypls.endpoint} pool_keys={','.join(sorted(dypls.pool_keys))}", flush=True)
        print(f"AccessKeyId={args.access_key_id} AccessKeySecret={secret}", file=sys.stderr, flush=True)
        for i in range(args.calls):
            c = ccc.place_call(transferred_legs=i % 2, duration_s=20)
            d = dypls.place_call(duration_s=20)
            print(f"ccc contact {c.contact_id} files={list(c.file_names)}; dypls call {d.call_id}", file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
