"""Handler cold starts on their own: ``python -m bench.cold_start`` (``make bench-cold-start``).

The same measurement as the last part of ``bench.transfer`` (``bench.handlers_cold_start``), with
the interpreter to run the handlers under (``--python``: the Lambda runtime's Python 3.13 after
``make python313``) and the layer compiled as ``make build`` ships it, left as sources, or both
(``--layer-bytecode``), which is what bytecode in the layer saves. Prints one table per layer
kind and writes ``bench/results/cold_start.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.handlers_cold_start import cold_start_table, measure_cold_starts
from bench.processes import ROOT

LAYER_KINDS = {"yes": (True,), "no": (False,), "both": (True, False)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the handlers (default: this one)")
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per handler (median)")
    parser.add_argument("--layer-bytecode", choices=sorted(LAYER_KINDS), default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cold_start.json")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    version = subprocess.run(  # noqa: S603 - the interpreter the user named
        [args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()

    results = []
    for bytecode in LAYER_KINDS[args.layer_bytecode]:
        measured = measure_cold_starts(args.runs, args.python, layer_bytecode=bytecode)
        kind = "layer compiled (as `make build` ships it)" if bytecode else "layer as sources (no bytecode)"
        print(f"\n### Python {version}, {kind}, median of {args.runs}\n")
        print(cold_start_table(measured["summary"]))
        results.append({"layer_bytecode": bytecode, **measured})

    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": version, "interpreter": args.python, "platform": platform.platform()},
        "runs": args.runs,
        "results": results,
    }
    args.out.write_text(json.dumps(document, indent=2))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
