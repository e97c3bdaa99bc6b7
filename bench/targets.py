"""The targets of issue 9, judged from one run of the transfer benchmark.

- callvault ≥ 0.9 × upload-only at 100 MiB and up, ≥ 1.0 × below; ahead of smart_open at every size;
- callvault's peak RSS grows ≤ 64 MiB from the smallest to the largest file; its CPU per GiB at
  the largest file ≤ smart_open's;
- after a break at 50 % (ranges honoured), < 10 % of the file re-downloaded, sha256 intact (a
  run whose stored sha256 differs stops the benchmark: it never reaches this table);
- the webhook's import + first invocation ≤ 1.15 × the baseline's, the fetcher's ≤ 1.3 ×.
A target whose sizes were not run (``--sizes``, ``--break-at 0``) is left out.
"""

from __future__ import annotations

from typing import Any

from bench.transfer_summary import size_label

LARGE_MIB = 100


def evaluate(transfer: list[dict[str, Any]], cold_start: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the figure it is judged on and whether it is met."""
    rows = {(row["size_mib"], row["label"]): row for row in transfer}
    sizes = sorted({row["size_mib"] for row in transfer})
    targets: list[dict[str, Any]] = []

    def judge(target: str, figure: str, met: bool) -> None:
        targets.append({"target": target, "figure": figure, "met": met})

    for size in sizes:
        callvault, smart_open = rows[(size, "callvault")], rows[(size, "smart_open")]
        needed = 0.9 if size >= LARGE_MIB else 1.0
        judge(
            f"callvault ≥ {needed} × upload-only at {size_label(size)}",
            f"{callvault['vs_upload_only']:.2f} ×",
            callvault["vs_upload_only"] >= needed,
        )
        judge(
            f"callvault ahead of smart_open at {size_label(size)}",
            f"{callvault['mib_per_s']:.1f} vs {smart_open['mib_per_s']:.1f} MiB/s",
            callvault["mib_per_s"] > smart_open["mib_per_s"],
        )
    if len(sizes) > 1:
        smallest, largest = rows[(sizes[0], "callvault")], rows[(sizes[-1], "callvault")]
        growth = largest["peak_rss_mib"] - smallest["peak_rss_mib"]
        judge(
            f"callvault peak RSS growth {size_label(sizes[0])} → {size_label(sizes[-1])} ≤ 64 MiB",
            f"{growth:+.0f} MiB ({smallest['peak_rss_mib']:.0f} → {largest['peak_rss_mib']:.0f})",
            growth <= 64,
        )
    largest_cpu = rows[(sizes[-1], "callvault")]["cpu_s_per_gib"], rows[(sizes[-1], "smart_open")]["cpu_s_per_gib"]
    judge(
        f"callvault CPU per GiB ≤ smart_open's at {size_label(sizes[-1])}",
        f"{largest_cpu[0]:.2f} vs {largest_cpu[1]:.2f} s/GiB",
        largest_cpu[0] <= largest_cpu[1],
    )
    for row in transfer:
        if row["break_at"]:
            judge(
                f"{row['label']} at {size_label(row['size_mib'])}: < 10 % re-downloaded, sha256 intact",
                f"{row['redownloaded_percent']:.1f} % in {row['attempts']} attempt(s), sha256 intact",
                row["redownloaded_percent"] < 10,
            )
    ratios = {row["function"]: row["vs_baseline"] for row in cold_start}
    for function, limit in (("webhook", 1.15), ("fetcher", 1.3)):
        judge(
            f"{function} import + first invocation ≤ {limit} × baseline",
            f"{ratios[function]:.2f} ×",
            ratios[function] <= limit,
        )
    return targets


def targets_table(targets: list[dict[str, Any]]) -> str:
    lines = ["| target (issue 9) | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else 'no'} |" for t in targets]
    return "\n".join(lines)
