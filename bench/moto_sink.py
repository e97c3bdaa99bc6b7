"""The write side of the transfer benchmark: moto in server mode, in a process of its own.

``python -m bench.moto_sink`` starts the local stack's moto server (``local.emulator``: an
ephemeral loopback port, DynamoDB item operations atomic), prints its endpoint URL on its first
line of output and serves until its standard input closes. A process of its own, so a measured
transfer process holds only its own side of the copy.
"""

from __future__ import annotations

import sys

from local.emulator.moto_server import MotoAws


def main() -> int:
    aws = MotoAws()
    aws.start()
    print(aws.endpoint_url, flush=True)
    sys.stdin.read()  # returns when the parent closes our stdin (or ends)
    aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
