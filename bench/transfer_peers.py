"""One measured transfer, in a fresh process: ``python -m bench.transfer_peers TASK_JSON RESULT_PATH``.

The five ways the transfer benchmark moves a generated file from the file server into S3 (moto):

- ``download-only``: ``requests`` streams the URL and drops the bytes (the read side's limit);
- ``upload-only``: boto3 ``upload_fileobj`` of the same bytes from a generator-backed file object,
  default transfer settings (the write side's limit);
- ``naive``: ``requests.get(url).content`` then ``put_object`` (the whole file in memory);
- ``smart_open``: ``smart_open.open(url, "rb")`` copied into ``smart_open.open("s3://…", "wb")``
  (default settings), the library a user would reach for;
- ``callvault``: the real ``Fetcher`` processing a Dypls job (``bench.callvault_fetch``).

Each peer imports only what it uses, so the process's peak RSS is that peer's. A first transfer
of a small file warms the clients (botocore loads its models and endpoint rules on first use;
that belongs to cold start, measured on its own); the second one, the task's, is timed. The
result: seconds, CPU seconds of the whole process during the timed transfer (user + system, all
threads), the process's peak RSS, and what the peer reports (key, size, sha256, attempts;
callvault its transfer window, and its whole job as ``call_seconds``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from typing import IO, Any, cast

from bench.generated_data import BLOCK, GeneratedFile
from bench.processes import cpu_seconds, process_usage, task_arguments

Item = dict[str, Any]
Copy = Callable[[Item], Item]
READ_SIZE = BLOCK
HTTP_TIMEOUT = (5.0, 60.0)


def download_only(task: Item) -> Copy:
    import requests

    session = requests.Session()

    def copy(item: Item) -> Item:
        received = 0
        with session.get(item["url"], stream=True, timeout=HTTP_TIMEOUT) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=READ_SIZE):
                received += len(chunk)
        return {"size": received}

    return copy


def upload_only(task: Item) -> Copy:
    import boto3

    s3 = boto3.client("s3")

    def copy(item: Item) -> Item:
        # upload_fileobj reads a non-seekable source through read() alone.
        source = cast("IO[bytes]", GeneratedFile(item["size"]))
        s3.upload_fileobj(source, task["bucket"], item["key"])
        return {"key": item["key"]}

    return copy


def naive(task: Item) -> Copy:
    import boto3
    import requests

    s3 = boto3.client("s3")

    def copy(item: Item) -> Item:
        body = requests.get(item["url"], timeout=HTTP_TIMEOUT).content
        s3.put_object(Bucket=task["bucket"], Key=item["key"], Body=body)
        return {"key": item["key"]}

    return copy


def smart_open_copy(task: Item) -> Copy:
    import boto3
    import smart_open

    s3 = boto3.client("s3")

    def copy(item: Item) -> Item:
        target = f"s3://{task['bucket']}/{item['key']}"
        with (
            smart_open.open(item["url"], "rb") as source,
            smart_open.open(target, "wb", transport_params={"client": s3}) as sink,
        ):
            shutil.copyfileobj(source, sink, READ_SIZE)
        return {"key": item["key"]}

    return copy


def callvault(task: Item) -> Copy:
    from bench.callvault_fetch import fetcher_copy

    return fetcher_copy(task)


PEERS: dict[str, Callable[[Item], Copy]] = {
    "download-only": download_only,
    "upload-only": upload_only,
    "naive": naive,
    "smart_open": smart_open_copy,
    "callvault": callvault,
}


def main() -> int:
    task, result_path = task_arguments()
    copy = PEERS[task["peer"]](task)
    copy(task["warmup"])
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    outcome = copy(task["timed"])
    call = {"call_seconds": time.perf_counter() - started, "call_cpu_seconds": cpu_seconds() - cpu_before}
    usage = process_usage()
    result = {
        # A peer's transfer is its whole call, unless it timed its transfer itself (callvault's
        # job also claims, resolves and records: its call is the whole job).
        "seconds": call["call_seconds"],
        "cpu_seconds": call["call_cpu_seconds"],
        **call,
        "process_cpu_seconds": usage["cpu_seconds"],
        "peak_rss_mib": usage["peak_rss_mib"],
        **outcome,
    }
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
