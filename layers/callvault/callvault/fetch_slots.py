"""Per-source fetch slots: at most a source's ``max_concurrent_fetches`` downloads at once,
across every fetcher instance, so one slow PBX or throttled account never holds every fetcher
and ten parallel downloads never overload a small PBX.

A slot is an item of the ledger table, ``pk = SLOTS#{source}``, ``sk = SLOT#{n}`` for ``n`` below
the source's limit, held with a lease: a conditional write takes it if it is free or its lease
ran out, and the holder frees it when its attempt ends (stored, handed to the retry workflow, or
failed). A fetcher that crashes never frees its slot: the lease does, when the invocation it was
sized for is over. Lowering a limit leaves the slots above it to run out.

A job that finds every slot taken is deferred: it goes back to the queue with a delay that grows
with each deferral (never an attempt: the retry budget is for the provider's trouble), and a
``WAIT#`` marker says since when it waits, for ``callvault stats`` and the backlog alarm.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from callvault.timefmt import iso, utc_now

SLOTS_PREFIX = "SLOTS#"
SLOT_PREFIX = "SLOT#"
WAIT_PREFIX = "WAIT#"
# A deferred job comes back after 5 s, 10 s, 20 s … at most 5 minutes: soon enough to take a slot
# freed by a short download, seldom enough that a long backlog (a backfill of thousands of calls
# on a two-slot PBX) costs few invocations: each waiting job at most one per 5 minutes.
FIRST_DEFERRAL_SECONDS = 5
MAX_DEFERRAL_SECONDS = 300


def deferral_delay(deferrals: int, most: int = MAX_DEFERRAL_SECONDS, rng: random.Random | None = None) -> int:
    """Seconds before a job deferred ``deferrals`` times before comes back: doubling from 5 s up
    to ``most``, with jitter (jobs deferred together do not all come back together)."""
    base = min(most, FIRST_DEFERRAL_SECONDS * 2 ** min(deferrals, 10))
    return max(1, int(base * (0.75 + 0.5 * (rng or random).random())))


@dataclass(frozen=True)
class Slot:
    source_id: str
    sk: str
    holder: str
    in_flight: int = 1  # the source's slots held once this one was taken (as the read before it saw)


@dataclass(frozen=True)
class SourceLoad:
    """What ``callvault stats`` shows of a source's fetches right now."""

    in_flight: int
    waiting: int
    oldest_waiting_since: str | None


class FetchSlots:
    def __init__(self, table: Any, rng: random.Random | None = None) -> None:
        self._table = table
        self._rng = rng or random.Random()  # noqa: S311 - the order slots are tried in, not a secret

    def acquire(
        self, source_id: str, limit: int, holder: str, lease_seconds: int, now: datetime | None = None
    ) -> Slot | None:
        """A free slot of the source, held until released or ``lease_seconds`` from now; None
        when all ``limit`` are taken. One read finds the slots worth trying (free, or whose lease
        ran out), tried in a random order (no hot first slot); a full source costs that read only."""
        moment = now or utc_now()
        epoch = int(moment.timestamp())
        taken = {
            str(item["sk"]) for item in self._items(source_id, SLOT_PREFIX) if int(item.get("lease_until", 0)) >= epoch
        }
        free = [f"{SLOT_PREFIX}{number:03d}" for number in range(limit)]
        free = [sk for sk in free if sk not in taken]
        self._rng.shuffle(free)
        for sk in free:
            try:
                self._table.update_item(
                    Key={"pk": SLOTS_PREFIX + source_id, "sk": sk},
                    UpdateExpression="SET #holder = :holder, #until = :until, #since = :since",
                    ConditionExpression="attribute_not_exists(#until) OR #until < :now",
                    ExpressionAttributeNames={"#holder": "holder", "#until": "lease_until", "#since": "since"},
                    ExpressionAttributeValues={
                        ":holder": holder,
                        ":until": epoch + lease_seconds,
                        ":now": epoch,
                        ":since": iso(moment),
                    },
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue  # taken since the read
            return Slot(source_id, sk, holder, in_flight=len(taken) + 1)
        return None

    def release(self, slot: Slot) -> None:
        """Free the slot, if this holder still has it (a lease that ran out may be another's now).
        Raises what DynamoDB raises; the caller decides whether it matters (the lease frees it)."""
        try:
            self._table.update_item(
                Key={"pk": SLOTS_PREFIX + slot.source_id, "sk": slot.sk},
                UpdateExpression="REMOVE #holder, #until, #since",
                ConditionExpression="#holder = :holder",
                ExpressionAttributeNames={"#holder": "holder", "#until": "lease_until", "#since": "since"},
                ExpressionAttributeValues={":holder": slot.holder},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def note_waiting(self, source_id: str, identity: str, since: str, until: datetime) -> None:
        """Record that a job of the source waits for a slot (since its first deferral); the
        marker expires on its own shortly after the job should have come back."""
        self._table.put_item(
            Item={
                "pk": SLOTS_PREFIX + source_id,
                "sk": WAIT_PREFIX + _digest(identity),
                "since": since,
                "expires_at": int(until.timestamp()),
            }
        )

    def done_waiting(self, source_id: str, identity: str) -> None:
        self._table.delete_item(Key={"pk": SLOTS_PREFIX + source_id, "sk": WAIT_PREFIX + _digest(identity)})

    def in_flight(self, source_id: str, now: datetime | None = None) -> int:
        """Slots of the source held right now (one small read: at most its limit of items)."""
        epoch = int((now or utc_now()).timestamp())
        return sum(int(item.get("lease_until", 0)) >= epoch for item in self._items(source_id, SLOT_PREFIX))

    def load(self, source_id: str, now: datetime | None = None) -> SourceLoad:
        """Slots held and jobs waiting, for ``callvault stats`` (reads every waiting job's marker:
        an operator's question, not the fetcher's)."""
        epoch = int((now or utc_now()).timestamp())
        waiting = [i for i in self._items(source_id, WAIT_PREFIX) if int(i.get("expires_at", 0)) >= epoch]
        oldest = min((str(i["since"]) for i in waiting), default=None)
        return SourceLoad(self.in_flight(source_id, now), len(waiting), oldest)

    def _items(self, source_id: str, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": SLOTS_PREFIX + source_id, ":prefix": prefix},
            "ConsistentRead": True,
        }
        while True:
            reply = self._table.query(**params)
            items += reply.get("Items", [])
            if "LastEvaluatedKey" not in reply:
                return items
            params["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:32]
