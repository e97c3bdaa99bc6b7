"""Strict simulator of an S-series-style PBX API (Yeastar S-series / OpenVox UC).

A real HTTP(S) server on loopback that follows the vendor documents (seeds 003 and 004,
``docs/providers.md`` section 2) including their unpleasant parts; the pieces:

* :mod:`local.simulators.pbx.api`: the HTTP API and its faults, answering from the recordings
  and CDR rows stored so far; :mod:`local.simulators.pbx.sessions`: logins, lockouts, tokens
  and randoms; :mod:`local.simulators.pbx.requests`: how request fields are read;
  :mod:`local.simulators.pbx.web`: the web server's ways (CORS, HEAD, byte ranges);
* :mod:`local.simulators.pbx.calls`: a call's CDR row, its NewCdr report and the CDR export;
* :mod:`local.simulators.pbx.pushes`: call reports (``NewCdr``) are pushed only while a token
  with a report URL is alive, in order, with retries;
* :mod:`local.simulators.pbx.tls`: certificates for the HTTPS mode.

Time is injectable (``clock=``) and can be moved forward with :meth:`PbxSimulator.advance_time`
so tests can expire tokens and randoms without sleeping.  Faults can be switched on for the
next N matching requests with :meth:`PbxSimulator.set_fault`.

Run standalone: ``python -m local.simulators.pbx --port 8088 --calls 5``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import ClassVar, Self

from local.simulators.pbx.api import FAULT_KINDS, PbxApiServer
from local.simulators.pbx.calls import CDR_COLUMNS, TIME_FORMAT, SimulatedCall, newcdr_report, render_cdr_csv
from local.simulators.pbx.pushes import PushRecord, ReportPusher
from local.simulators.pbx.tls import TlsFiles, make_self_signed
from local.simulators.wav import make_wav

__all__ = [
    "CDR_COLUMNS",
    "FAULT_KINDS",
    "PbxSimulator",
    "PushRecord",
    "SimulatedCall",
    "TlsFiles",
    "main",
    "make_self_signed",
    "render_cdr_csv",
]


class PbxSimulator(PbxApiServer):
    """An S-series-style PBX API server with simulated calls, event pushes and faults."""

    COUNTERS: ClassVar[tuple[str, ...]] = (
        *PbxApiServer.COUNTERS,
        "push_attempts",
        "pushes_ok",
        "pushes_failed",
        "reports_skipped",
    )

    def __init__(
        self,
        *,
        username: str = "api",
        password: str = "apipass",  # noqa: S107 - the simulator's documented default
        host: str = "127.0.0.1",
        port: int = 0,
        sn: str = "3631A2124788",
        api_versions: tuple[str, ...] = ("v0.0.1", "v1.1.0", "v2.0.0"),
        token_ttl: float = 1800.0,
        random_ttl: float = 30.0,
        report_style: str = "v1",
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.time,
        tz: dt.tzinfo = dt.UTC,
        lockout_threshold: int = 5,
        lockout_s: float = 600.0,
        cdr_random_single_use: bool = True,
        honour_range: bool = False,
        push_attempts: int = 3,
        push_backoff_s: float = 0.2,
        push_timeout_s: float = 5.0,
    ) -> None:
        """Configure the simulator; nothing listens until :meth:`start`.

        ``password`` is the plain API password (clients send its md5).  ``clock`` returns
        epoch seconds and drives every expiry and call timestamp; ``tz`` is the PBX's local
        time zone used in ``timestart`` and recording names.  ``report_style`` is ``"v1"``
        (``"action": "NewCdr"``) or ``"v2"`` (``"event": "NewCdr"``). ``honour_range``: serve
        ``Range`` on recording downloads (default: ignore it, see ``local.simulators.pbx.api``).
        """
        if report_style not in ("v1", "v2"):
            raise ValueError("report_style must be 'v1' or 'v2'")
        super().__init__(
            username=username,
            password=password,
            host=host,
            port=port,
            api_versions=api_versions,
            token_ttl=token_ttl,
            random_ttl=random_ttl,
            tls=tls,
            clock=clock,
            lockout_threshold=lockout_threshold,
            lockout_s=lockout_s,
            cdr_random_single_use=cdr_random_single_use,
            honour_range=honour_range,
        )
        self.sn = sn
        self.report_style = report_style
        self.tz = tz
        self.push_attempts = max(1, push_attempts)
        self.push_backoff_s = push_backoff_s
        self.push_timeout_s = push_timeout_s
        self._calls: list[SimulatedCall] = []
        self._skipped: list[dict[str, str]] = []
        # One worker delivers reports in order, retries included, like the PBX's event queue.
        self._pusher = ReportPusher(self, self._count)
        self._seq = 1771  # so the first call gets ".1772", like the seed
        self._cdrid = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind and serve in a background thread; returns self."""
        self._pusher.resume()
        return super().start()

    def stop(self) -> None:
        """Abandon pending push retries and stop serving."""
        self._pusher.stop()
        super().stop()

    # ------------------------------------------------------------------ observation

    @property
    def pushes(self) -> list[PushRecord]:
        """Every push attempt so far, in order."""
        return self._pusher.pushes

    @property
    def skipped_reports(self) -> list[dict[str, str]]:
        """Reports not pushed because no token with a report URL was alive."""
        with self._lock:
            return list(self._skipped)

    @property
    def calls(self) -> list[SimulatedCall]:
        """Calls placed so far."""
        with self._lock:
            return list(self._calls)

    # ------------------------------------------------------------------ calls and reports

    def place_call(
        self,
        caller: str = "101",
        callee: str = "106",
        *,
        duration_s: float = 30.0,
        ring_s: float = 5.0,
        recorded: bool = True,
        status: str = "ANSWERED",
        call_type: str = "Internal",
        start: dt.datetime | None = None,
        channels: int = 1,
        sample_rate: int = 8000,
        src_trunk: str | None = None,
        dest_trunk: str | None = None,
        did: str = "",
        push: bool = True,
    ) -> SimulatedCall:
        """Simulate a finished call: recording, CDR row and (if ``push``) a NewCdr report.

        ``duration_s`` is the talk time and the audio length; ``callduraction`` adds
        ``ring_s``.  ``talkduraction`` is 0 for NO ANSWER / BUSY / FAILED.  Without
        ``start`` the call ends "now" on the simulated clock.  The report goes out in a
        background thread; see :meth:`wait_pushes`.
        """
        total = ring_s + duration_s
        with self._lock:
            if start is None:
                start = dt.datetime.fromtimestamp(self.now() - total, self.tz)
            elif start.tzinfo is None:
                start = start.replace(tzinfo=self.tz)
            start = start.astimezone(self.tz).replace(microsecond=0)
            self._seq += 1
            self._cdrid += 1
            seq, cdrid = self._seq, str(self._cdrid)
        epoch = int(start.timestamp())
        callid = f"{epoch}.{seq}"
        talk = 0 if status in ("NO ANSWER", "BUSY", "FAILED") else round(duration_s)
        if src_trunk is None:
            src_trunk = "SIPTrunk1" if call_type == "Inbound" else ""
        if dest_trunk is None:
            dest_trunk = "SIPTrunk1" if call_type == "Outbound" else ""

        name: str | None = None
        audio = b""
        if recorded:
            name = f"exten-{caller}-{callee}-{start:%Y%m%d}-{start:%H%M%S}-{callid}.wav"
            audio = make_wav(duration_s, seed=f"{self.sn}:{callid}", sample_rate=sample_rate, channels=channels)

        cdr = {
            "callid": callid,
            "timestart": start.strftime(TIME_FORMAT),
            "callfrom": caller,
            "callto": callee,
            "callduraction": str(round(total)),
            "talkduraction": str(talk),
            "srctrunkname": src_trunk,
            "desttrunkname": dest_trunk,
            "status": status,
            "type": call_type,
            "recording": name or "",
            "didnumber": did,
            "sn": self.sn,
        }
        call = SimulatedCall(
            callid=callid,
            cdrid=cdrid,
            recording=name,
            size=len(audio),
            sha256=hashlib.sha256(audio).hexdigest() if name else None,
            report=newcdr_report(cdr, cdrid, self.report_style),
            cdr=cdr,
            timestart=start,
        )
        with self._lock:
            self._store_call(start.replace(tzinfo=None), cdr, audio if name is not None else None)
            self._calls.append(call)
        if push:
            self.push_report(call)
        return call

    def push_report(self, call: SimulatedCall) -> int:
        """(Re)send ``call.report`` to every live report URL, in the background and in order.

        Returns how many URLs it was queued for; 0 means no live token had a report URL and
        the report was recorded in :attr:`skipped_reports` instead.
        """
        urls = list(dict.fromkeys(self._sessions.live_report_urls(self.now())))
        if not urls:
            with self._lock:
                self._skipped.append(dict(call.report))
            self._count("reports_skipped")
            return 0
        self._pusher.enqueue(urls, call.callid, call.report)
        return len(urls)

    def wait_pushes(self, timeout: float = 5.0) -> bool:
        """Wait until every queued push (retries included) is done; True if all were."""
        return self._pusher.wait(timeout)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run the simulator standalone until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m local.simulators.pbx", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--username", default="api")
    parser.add_argument("--password", default="apipass", help="plain API password (clients send its md5)")
    parser.add_argument("--sn", default="3631A2124788")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated certificate")
    parser.add_argument("--report-style", choices=("v1", "v2"), default="v1")
    parser.add_argument("--token-ttl", type=float, default=1800.0)
    parser.add_argument("--calls", type=int, default=0, help="place N calls, one every --interval seconds")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0, help="talk seconds per simulated call")
    args = parser.parse_args(argv)

    tls: TlsFiles | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.tls:
        tmp = tempfile.TemporaryDirectory(prefix="pbx-sim-tls-")
        tls = make_self_signed(tmp.name, args.host)
    sim = PbxSimulator(
        username=args.username,
        password=args.password,
        host=args.host,
        port=args.port,
        sn=args.sn,
        token_ttl=args.token_ttl,
        report_style=args.report_style,
        tls=tls,
    )
    sim.start()

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so SIGTERM also stops cleanly and removes the TLS temp dir

    signal.signal(signal.SIGTERM, _on_term)
    print(sim.base_url, flush=True)
    print(
        f"username={sim.username} password md5={sim.password_md5} versions={','.join(sim.api_versions)}",
        file=sys.stderr,
    )
    if tls is not None:
        print(f"CA bundle: {tls.ca_path}", file=sys.stderr)
    try:
        placed = 0
        while True:
            if placed < args.calls:
                time.sleep(args.interval)
                call = sim.place_call(
                    caller=str(101 + placed % 5), callee=str(106 + placed % 3), duration_s=args.duration
                )
                placed += 1
                print(
                    f"call {call.callid} recording={call.recording} size={call.size} "
                    f"report_url={sim.report_url or '-'}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0
