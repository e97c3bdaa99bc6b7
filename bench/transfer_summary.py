"""The transfer benchmark's runs as medians per size and peer, and as a markdown table.

Throughput is the file's size over the median time of the timed transfer (for callvault: from
its download's first open to the close after the upload; its whole job, with the ledger claim,
the link and the ledger record, is the last column). Its ratio to
upload-only is that of the medians; the range beside it is the lowest and highest ratio of one
round (the peers of a round run one after another, under much the same load). CPU is the
process's user + system seconds during the timed transfer, per GiB of the file; peak RSS is the
whole process's; re-downloaded is what the file server sent beyond the file's size.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

GIB_IN_MIB = 1024


def peer_label(peer: str, break_at: float) -> str:
    return f"{peer}, break at {break_at * 100:.0f} %" if break_at else peer


def size_label(size_mib: int) -> str:
    return f"{size_mib // GIB_IN_MIB} GiB" if size_mib % GIB_IN_MIB == 0 else f"{size_mib} MiB"


def summarise(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (size, peer, break) in the order first run: medians of its runs."""
    groups: dict[tuple[int, str, float], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["size_mib"], run["peer"], run["break_at"]), []).append(run)
    rows = []
    for (size_mib, peer, break_at), group in groups.items():
        baseline = {run["round"]: run["seconds"] for run in groups.get((size_mib, "upload-only", 0.0), [])}
        seconds = statistics.median(run["seconds"] for run in group)
        round_ratios = [baseline[run["round"]] / run["seconds"] for run in group if run["round"] in baseline]
        downloads = [run["redownloaded_bytes"] for run in group if run["redownloaded_bytes"] is not None]
        redownloaded = statistics.median(downloads) if downloads else None
        rows.append(
            {
                "size_mib": size_mib,
                "peer": peer,
                "break_at": break_at,
                "label": peer_label(peer, break_at),
                "runs": len(group),
                "seconds": round(seconds, 3),
                "mib_per_s": round(size_mib / seconds, 1),
                # The whole call: for callvault the whole job (claim, link, transfer, record).
                "job_mib_per_s": round(size_mib / statistics.median(run["call_seconds"] for run in group), 1),
                "vs_upload_only": round(statistics.median(baseline.values()) / seconds, 2) if baseline else None,
                "vs_upload_only_range": [round(min(round_ratios), 2), round(max(round_ratios), 2)]
                if round_ratios
                else None,
                "peak_rss_mib": round(statistics.median(run["peak_rss_mib"] for run in group), 1),
                "cpu_s_per_gib": round(
                    statistics.median(run["cpu_seconds"] for run in group) * GIB_IN_MIB / size_mib, 2
                ),
                "redownloaded_mib": None if redownloaded is None else round(redownloaded / 2**20, 1),
                "redownloaded_percent": None
                if redownloaded is None
                else round(100 * redownloaded / (size_mib * 2**20), 1),
                "attempts": max(run.get("attempts", 1) for run in group),
            }
        )
    return rows


def transfer_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| file | peer | MiB/s | × upload-only (per-round range) | peak RSS | CPU s/GiB | re-downloaded "
        "| whole job MiB/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "" if row["vs_upload_only"] is None else f"{row['vs_upload_only']:.2f}"
        spread = row["vs_upload_only_range"]
        if spread and row["runs"] > 1 and row["peer"] != "upload-only":
            ratio += f" ({spread[0]:.2f}–{spread[1]:.2f})"
        attempts = f", {row['attempts']} attempts" if row["attempts"] > 1 else ""
        redownloaded = (
            "—"
            if row["redownloaded_mib"] is None
            else f"{row['redownloaded_mib']:.1f} MiB ({row['redownloaded_percent']:.0f} %){attempts}"
        )
        lines.append(
            f"| {size_label(row['size_mib'])} | {row['label']} | {row['mib_per_s']:.1f} | {ratio} "
            f"| {row['peak_rss_mib']:.0f} MiB | {row['cpu_s_per_gib']:.2f} "
            f"| {redownloaded} | {row['job_mib_per_s'] if row['peer'] == 'callvault' else '—'} |"
        )
    return "\n".join(lines)
