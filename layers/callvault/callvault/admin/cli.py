"""callvault: one command per operator question, against a deployed stack or the local one.

    callvault status <source> <call>              files of a call: status, reason, attempts, S3 key
    callvault failed [--source S] [--since T]     recordings given up on, and why
    callvault retry <source> <call>               retry a call's FAILED files with a fresh budget
    callvault retry --all-failed [--source S]     ... or every FAILED file
    callvault dlq list | redrive                  jobs parked in the dead-letter queue
    callvault reconcile <source> [--from --to]    reconcile now, or backfill a time range
    callvault stats [--since T]                   files by source and status, fetches now, last reconciliation
    callvault erase <source> <call> --reason R    delete every version of a call's objects (audited)
    callvault audit <source> [--since T] [--deep] do the objects hold what the ledger stored?
    callvault hash-number <source> <number>       a number as the source's sidecars and events write it

Every command takes the stack: ``--stack-name NAME [--region R] [--profile P]`` (deployed; read
through its outputs) or ``--state FILE`` (the local stack, e.g. ``.local/state.json``), and
``--json`` for machine-readable output. Exit status: 0 done, 1 done but the answer is bad news
(no such call, nothing to retry, a run failed), 2 the command could not run (usage, stack, AWS).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from callvault.admin import commands, erasure, integrity
from callvault.admin.target import StackTarget, TargetError
from callvault.errors import ConfigError, SourceNotFound
from callvault.fetch_slots import FetchSlots
from callvault.jobs import JobQueue
from callvault.ledger import RecordingLedger, Status
from callvault.reconciliation import PLAUSIBLE_YEARS, ReconcileState
from callvault.sources import SourceDirectory
from callvault.timefmt import parse_duration, utc_now

OK, BAD_NEWS, CANNOT_RUN = 0, 1, 2


class UsageError(Exception):
    """Arguments that parse but do not make sense together."""


# -- arguments ---------------------------------------------------------------------------


def _target_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    where = options.add_argument_group("stack (one of)")
    where.add_argument("--stack-name", help="a deployed callvault stack (CloudFormation name)")
    where.add_argument("--region", help="its AWS region (default: your AWS configuration's)")
    where.add_argument("--profile", help="the AWS profile to use")
    where.add_argument("--state", metavar="FILE", help="the local stack's state file (make local: .local/state.json)")
    options.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return options


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    target = _target_options()
    parser = argparse.ArgumentParser(
        prog="callvault", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands_.add_parser("status", parents=[target], help="the files of one call")
    status.add_argument("source")
    status.add_argument("call")

    failed = commands_.add_parser("failed", parents=[target], help="recordings given up on, and why")
    failed.add_argument("--source", help="only this source")
    failed.add_argument("--since", help="updated since: 24h, 7d or an ISO time (UTC unless it says)")

    retry = commands_.add_parser("retry", parents=[target], help="retry FAILED files with a fresh attempt budget")
    retry.add_argument("source", nargs="?")
    retry.add_argument("call", nargs="?")
    retry.add_argument("--all-failed", action="store_true", help="every FAILED file (of --source, if given)")
    retry.add_argument("--source", dest="only_source", metavar="SOURCE", help="with --all-failed: only this source")

    dlq = commands_.add_parser("dlq", parents=[target], help="jobs parked in the dead-letter queue")
    dlq.add_argument("action", choices=["list", "redrive"], help="list them, or move valid jobs back to the queue")
    dlq.add_argument("--limit", type=int, default=1000, help="at most this many messages (default 1000)")

    reconcile = commands_.add_parser(
        "reconcile", parents=[target], help="reconcile a source now, or backfill a time range"
    )
    reconcile.add_argument("source")
    reconcile.add_argument(
        "--from", dest="start", help="start of the range (ISO; without an offset: the source's zone)"
    )
    reconcile.add_argument("--to", dest="end", help="end of the range (same forms)")

    erase = commands_.add_parser(
        "erase", parents=[target], help="erase a call: every version of its objects, its ledger items (audited)"
    )
    erase.add_argument("source")
    erase.add_argument("call")
    erase.add_argument("--reason", required=True, help="why (the erasure request): kept in the audit record")
    erase.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    erase.add_argument(
        "--bypass-governance", action="store_true", help="delete versions under GOVERNANCE retention (needs the right)"
    )

    audit = commands_.add_parser(
        "audit", parents=[target], help="check archived objects against the ledger's sizes and sha256"
    )
    audit.add_argument("source")
    audit.add_argument("--since", default="7d", help="calls since: 24h, 7d (default) or an ISO date/time")
    audit.add_argument("--deep", action="store_true", help="read and hash objects S3 holds no SHA-256 for")

    hash_number = commands_.add_parser(
        "hash-number", parents=[target], help="a phone number as the source writes participants (to look calls up)"
    )
    hash_number.add_argument("source")
    hash_number.add_argument("number")

    stats = commands_.add_parser("stats", parents=[target], help="files by source and status")
    stats.add_argument("--since", default="7d", help="calls since: 24h, 7d (default) or an ISO date/time")
    return parser.parse_args(argv)


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return utc_now() - parse_duration(text)
    except OverflowError:
        raise UsageError(f"--since {text!r} is too far back") from None
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a duration (24h, 7d) nor an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _target(args: argparse.Namespace) -> StackTarget:
    if bool(args.state) == bool(args.stack_name):
        raise UsageError("say which stack: --stack-name NAME (deployed) or --state FILE (the local stack)")
    if args.state:
        return StackTarget.local(args.state)
    return StackTarget.deployed(args.stack_name, args.region, args.profile)


# -- output ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    cells = [[str(row.get(column, "") if row.get(column) is not None else "") for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip(), file=out)
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(), file=out)


def _emit(args: argparse.Namespace, data: Any, render: Callable[[], None], out: TextIO) -> None:
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str), file=out)
    else:
        render()


# -- commands ----------------------------------------------------------------------------


def run_status(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    files = commands.call_files(RecordingLedger(target.ledger_table()), args.source, args.call)
    if not files:
        print(
            f"no record of call {args.call!r} of source {args.source!r} (a call that just ended may not be"
            " reported yet; reconciliation finds a lost report within the source's interval)",
            file=sys.stderr,
        )
        return BAD_NEWS
    columns = ("file_name", "status", "attempts", "size", "origin", "updated_at", "s3_key", "reason")
    rows = [{**item, "file_name": str(item.get("sk", "")).removeprefix("FILE#")} for item in files]
    _emit(args, files, lambda: table(rows, columns, out), out)
    return OK


def run_failed(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    files = commands.failed_files(RecordingLedger(target.ledger_table()), args.source, _since(args.since))
    rows = [{**item, "file": str(item.get("sk", "")).removeprefix("FILE#")} for item in files]
    columns = ("source_id", "call_id", "file", "updated_at", "attempts", "reason")
    _emit(args, files, lambda: table(rows, columns, out) if rows else print("no FAILED recordings", file=out), out)
    return OK


def run_retry(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    ledger = RecordingLedger(target.ledger_table())
    if args.all_failed:
        if args.source or args.call:
            raise UsageError("retry takes <source> <call>, or --all-failed [--source S], not both")
        items = list(ledger.by_status(Status.FAILED, source_id=args.only_source))
    else:
        if not (args.source and args.call) or args.only_source:
            raise UsageError("retry takes <source> <call>, or --all-failed [--source S]")
        items = ledger.call_items(args.source, args.call)
        if not items:
            print(f"no record of call {args.call!r} of source {args.source!r}", file=sys.stderr)
            return BAD_NEWS
    outcome = commands.retry_failed(
        ledger, JobQueue(target.client("sqs"), target.outputs["FetchQueueUrl"]), items, target.caller()
    )

    def render() -> None:
        for name in outcome.files:
            print(f"retrying {name}", file=out)
        for problem in outcome.refused:
            print(f"not retried: {problem}", file=out)
        print(f"{len(outcome.files)} file(s) enqueued again ({outcome.jobs} job(s))", file=out)

    _emit(args, {"retried": outcome.files, "jobs": outcome.jobs, "not_retried": outcome.refused}, render, out)
    return OK if outcome.files else BAD_NEWS


def run_dlq(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    sqs, dlq = target.client("sqs"), target.outputs["FetchDeadLetterQueueUrl"]
    columns = ("message_id", "sent_at", "receives", "job", "problem")
    if args.action == "list":
        parked = [vars(m) for m in commands.dlq_list(sqs, dlq, args.limit)]
        _emit(args, parked, lambda: table(parked, columns, out) if parked else print("the DLQ is empty", file=out), out)
        return OK
    moved, kept = commands.dlq_redrive(sqs, dlq, target.outputs["FetchQueueUrl"], args.limit)

    def render() -> None:
        for message in moved:
            print(f"redriven {message.message_id}: {message.job}", file=out)
        for message in kept:
            print(f"left parked {message.message_id}: {message.problem}", file=out)
        print(f"{len(moved)} job(s) moved back to the fetch queue, {len(kept)} invalid message(s) left", file=out)

    _emit(args, {"redriven": [vars(m) for m in moved], "left": [vars(m) for m in kept]}, render, out)
    return OK


def run_reconcile(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    if bool(args.start) != bool(args.end):
        raise UsageError("give both --from and --to, or neither (reconcile now, as scheduled)")
    client, function = target.client("lambda"), target.outputs["ReconcilerFunctionName"]
    if not args.start:
        reports = [commands.invoke_reconciler(client, function, {"source_id": args.source})]
    else:
        try:
            start, end = datetime.fromisoformat(args.start), datetime.fromisoformat(args.end)
        except ValueError as exc:
            raise UsageError(f"--from/--to: {exc}") from None
        if (start.tzinfo is None) != (end.tzinfo is None) or not start < end:
            raise UsageError("--from must be before --to, both with a UTC offset or both without")
        if start.year not in PLAUSIBLE_YEARS or end.year not in PLAUSIBLE_YEARS:
            raise UsageError(f"--from and --to must fall in the years {PLAUSIBLE_YEARS[0]} to {PLAUSIBLE_YEARS[-1]}")
        reports = commands.reconcile_range(client, function, args.source, start, end, _progress(args, out))
    total = {key: sum(int(r.get(key, 0)) for r in reports) for key in ("calls", "found", "lost_pushes", "enqueued")}
    failed = [r for r in reports if r.get("status") == "failed"]

    def render() -> None:
        for report in failed:
            print(
                f"window {report.get('window_start')} .. {report.get('window_end')} failed: {report.get('error')}",
                file=out,
            )
        for problem in [p for r in reports for p in r.get("problems", [])]:
            print(f"note: {problem}", file=out)
        print(
            f"{args.source}: {total['calls']} call(s) listed, {total['found']} recording(s) found,"
            f" {total['lost_pushes']} whose push was lost, {total['enqueued']} enqueued"
            + (f"; {len(failed)} of {len(reports)} window(s) failed" if failed else ""),
            file=out,
        )

    _emit(args, {"total": total, "runs": reports}, render, out)
    return BAD_NEWS if failed else OK


def _progress(args: argparse.Namespace, out: TextIO) -> Callable[[int, int, dict[str, Any]], None]:
    def show(done: int, total: int, report: dict[str, Any]) -> None:
        if args.json:
            return
        bar = "#" * (20 * done // total)
        line = f"[{bar:<20}] {done}/{total} windows  {report.get('window_start', '')[:10]}  {report.get('status')}"
        ending = "\n" if done == total or not sys.stderr.isatty() else "\r"
        print(line, end=ending, file=sys.stderr, flush=True)

    return show


def run_stats(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    since = _since(args.since)
    assert since is not None
    table_ = target.ledger_table()
    source_ids = sorted(SourceDirectory(target.client("secretsmanager"), target.outputs["SourcesSecretPrefix"]).ids())
    stats = commands.source_stats(
        RecordingLedger(table_), ReconcileState(table_), FetchSlots(table_), source_ids, since
    )
    statuses = sorted({status for entry in stats.values() for status in entry["files"]})

    def render() -> None:
        rows = []
        for source_id, entry in stats.items():
            last = entry["last_reconciliation"]
            summary = (
                f"{last.get('status')} at {last.get('started_at')}, lost {last.get('lost_pushes', 0)}"
                if last
                else "never"
            )
            fetching = entry["fetching"]
            waiting = str(fetching["waiting"])
            if fetching["waiting_since"]:
                waiting += f" (since {fetching['waiting_since']})"
            rows.append(
                {
                    "source": source_id,
                    **entry["files"],
                    "fetching": fetching["in_flight"],
                    "waiting": waiting,
                    "last reconciliation": summary,
                }
            )
        print(f"calls since {since:%Y-%m-%d} (by call date); fetching and waiting: now", file=out)
        table(rows, ("source", *statuses, "fetching", "waiting", "last reconciliation"), out)

    _emit(args, {"since": since.isoformat(), "sources": stats}, render, out)
    return OK


def run_erase(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    if not args.reason.strip():
        raise UsageError("--reason must say why the call is erased")
    s3, bucket, table_ = target.client("s3"), target.outputs["RecordingsBucketName"], target.ledger_table()
    plan = erasure.plan_erasure(
        s3, bucket, RecordingLedger(table_), args.source, args.call, bypass_governance=args.bypass_governance
    )
    if not plan.known:
        print(f"no record of call {args.call!r} of source {args.source!r} (or it was erased before)", file=sys.stderr)
        return BAD_NEWS
    planned = {"files": plan.files, "versions": [vars(v) for v in plan.versions]}
    if plan.refusals:

        def render_refusals() -> None:
            for why in plan.refusals:
                print(f"refused: {why}", file=out)

        _emit(args, {"status": "refused", "refusals": plan.refusals, **planned}, render_refusals, out)
        return BAD_NEWS
    if args.dry_run:

        def render_plan() -> None:
            for version in plan.versions:
                marker = " (delete marker)" if version.delete_marker else ""
                print(f"would delete {version.key} version {version.version_id}{marker}", file=out)
            print(
                f"{len(plan.versions)} version(s), {len(plan.ledger_items)} ledger item(s); nothing deleted", file=out
            )

        _emit(args, {"status": "dry-run", **planned}, render_plan, out)
        return OK
    record = erasure.erase(
        s3,
        bucket,
        table_,
        plan,
        reason=args.reason,
        erased_by=target.caller(),
        bypass_governance=args.bypass_governance,
    )

    def render() -> None:
        print(
            f"erased call {args.call} of {args.source}: {len(plan.versions)} object version(s), "
            f"{len(plan.ledger_items)} ledger item(s); audit record {record['pk']} / {record['sk']}",
            file=out,
        )

    _emit(args, commands.plain(record), render, out)
    return OK


def run_audit(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    since = _since(args.since)
    assert since is not None
    report = integrity.audit(
        target.client("s3"),
        target.outputs["RecordingsBucketName"],
        RecordingLedger(target.ledger_table()),
        args.source,
        since.date().isoformat(),
        deep=args.deep,
    )

    def render() -> None:
        print(f"{report.intact} of {report.checked} archived files intact (calls since {since:%Y-%m-%d})", file=out)
        table(report.problems, ("key", "version", "problem"), out)

    _emit(args, report.to_dict(), render, out)
    return OK if not report.problems else BAD_NEWS


def run_hash_number(args: argparse.Namespace, target: StackTarget, out: TextIO) -> int:
    sources = SourceDirectory(target.client("secretsmanager"), target.outputs["SourcesSecretPrefix"])
    try:
        source = sources.get(args.source)
    except (SourceNotFound, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    written = source.participants.apply(args.number)
    _emit(
        args,
        {"source": source.id, "policy": source.participants.mode, "number": written},
        lambda: print(written, file=out),
        out,
    )
    return OK


RUNNERS = {
    "status": run_status,
    "failed": run_failed,
    "retry": run_retry,
    "dlq": run_dlq,
    "reconcile": run_reconcile,
    "stats": run_stats,
    "erase": run_erase,
    "audit": run_audit,
    "hash-number": run_hash_number,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parse_args(argv)
    out = out or sys.stdout
    try:
        return RUNNERS[args.command](args, _target(args), out)
    except UsageError as exc:
        print(f"callvault {args.command}: {exc}", file=sys.stderr)
        return CANNOT_RUN
    except erasure.ErasureRefused as exc:
        print(f"callvault {args.command}: refused: {exc}", file=sys.stderr)
        return BAD_NEWS
    except (TargetError, commands.ReconcileFailed) as exc:
        print(f"callvault {args.command}: {exc}", file=sys.stderr)
        return CANNOT_RUN if isinstance(exc, TargetError) else BAD_NEWS
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"callvault {args.command}: AWS refused: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return CANNOT_RUN
    except BotoCoreError as exc:
        print(f"callvault {args.command}: cannot reach AWS: {exc}", file=sys.stderr)
        return CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
