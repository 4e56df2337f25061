# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a guest sees during a storage-head failover: a sequential writer, a verifier and an analyser.

Runs on the initiator node (Python 3.11 stdlib only, plus qemu-utils + qemu-block-extra) and
talks to the LUN through QEMU's libiscsi client, the path Proxmox's QEMU takes for iscsi:// disks.

``write``
    Starts ONE long-lived ``qemu-io --image-opts OPTS`` and feeds it commands on stdin, so there is
    one iSCSI session, which libiscsi reconnects by itself when the portal goes away and comes
    back (as a VM's disk would).  It writes block after block, one write at a time: write number
    ``seq`` goes to block ``first_block + seq % blocks`` (offset ``block * block_size``) filled
    with the byte ``seq % 255 + 1`` (never 0, the content of a fresh sparse LUN; ``--blocks`` may
    not be a multiple of 255, so two consecutive writes to one block always differ).  Every
    command's result is appended to LOG as one JSON line, flushed at once:

    - ``{"type": "start", ...}``: the run's parameters (verify takes the layout from it);
    - ``{"type": "write", "seq", "block", "offset", "pattern", "t_issue", "t_done", "ok", "error"}``;
    - ``{"type": "flush", "n", "last_write_seq", "t_issue", "t_done", "ok", "error"}`` with
      ``--flush-every K``: a flush after every K writes; it covers every write up to
      ``last_write_seq`` (all of them were acknowledged before the flush was issued);
    - ``{"type": "stderr", "t", "text"}``: what qemu-io/libiscsi printed on stderr, with its time;
    - ``{"type": "stop", "t", "reason", "writes", "in_flight"}`` at the end.

    Times are ``time.time()`` (the orchestrator's clock).  SIGTERM/SIGINT: the write in flight is
    given ``--stop-timeout`` seconds to complete (then it is logged with ``in_flight: true`` and
    ``ok: false``), qemu-io gets ``quit``, exit 0.  Exit 1 if qemu-io cannot open the LUN or dies.

``verify``
    Reads every block back in one qemu-io session (``read -P <pattern> <offset> <block_size>``;
    "Pattern verification failed" = mismatch) and prints one JSON object.  The rule, per block,
    over the write records of that block in ``seq`` order:

    - A = the last write with ``ok: true`` (acknowledged).  A block without one is not checked.
    - The block must hold A's pattern, or the pattern of a write issued AFTER A that failed or
      was in flight at the end ("ambiguous" blocks): a failed write may or may not have reached
      the disk (a SCSI write that ends in an error leaves its range undefined), so both are fine.
      When the log has no ``stop`` record (the writer was killed), the write after the last
      logged one may have been in flight too and counts as such.
    - Anything else is LOST: A's acknowledged data is gone (an older pattern: the write was
      dropped, e.g. a write-back cache lost in the failover) or was overwritten by a write that
      failed BEFORE A (a stale request that landed late, e.g. on a head that was not fenced).
    - With flushes in the log, D = the last acknowledged write on the block covered by a
      successful flush (``seq <= last_write_seq``).  A block is LOST_DURABLE when it holds neither
      D's pattern nor that of any write after D: data the guest had flushed is gone.  Losing
      acknowledged but unflushed writes is allowed by SCSI with a write-back cache (lost - lost_durable).

    Output: ``acked`` (acknowledged writes), ``checked`` (blocks checked), ``lost``,
    ``lost_blocks`` (the first 20), ``lost_detail`` (first 20: expected and found byte),
    ``ambiguous`` (checked blocks with a failed/in-flight write after A), ``ambiguous_landed``
    (of those, the later write's pattern was found), ``flushes_ok``, ``lost_durable``,
    ``unreadable`` (read errors).  Exit 0: nothing lost; 1: lost or unreadable blocks; 2: cannot verify.

``analyse`` (and ``analyse(records, failure_time)`` for importers)
    Prints what the writes looked like around the failure injected at time T (see analyse()).

A LOG may hold several runs (it is appended to); verify and analyse use the last one.

What QEMU 7.2 + libiscsi 1.19 (Debian 12) do when the portal goes away (measured with this tool,
service/tests/test_ha_iowriter.py): the write in flight just stalls and is replayed on the new
session; no error reaches qemu-io (a guest would see a slow write, not EIO).  The session is
rebuilt when the connection breaks (RST), when 3 NOP-Outs (one per 5 s) go unanswered (15-20 s;
"iSCSI: NOP timeout. Reconnecting..."), or after ``timeout=N`` seconds (an --image-opts option of
the iscsi driver).  libiscsi then reconnects for ever; refused attempts back off 1, 2, 3 ... s
(5-15 s random after 10 tries, at most 30 s), and one attempt to an address that drops SYNs lasts
as long as the kernel's SYN retries (1+2+4+... s), so the write may resume long after the portal
is back (a 40 s outage without RST: resumed 13.6 s after the portal came back; with ``timeout=2``
30 s after).  ``LIBISCSI_TCP_SYNCNT=1`` in the writer's environment bounds each attempt to ~3 s
(the same outage: resumed 0.25 s after).
``LIBISCSI_DEBUG=1`` makes libiscsi log its reconnect attempts, which land in LOG as stderr records.

Usage:
    python3 ha_iowriter.py write --image-opts OPTS [--secret-file F] --log LOG [--block-size 4096]
        [--first-block 0] [--blocks 1024] [--interval 0] [--flush-every 0] [--stop-timeout 10]
    python3 ha_iowriter.py verify --image-opts OPTS [--secret-file F] --log LOG
    python3 ha_iowriter.py analyse --log LOG --failure-time T
OPTS: driver=iscsi,transport=tcp,portal=IP:3260,target=IQN,lun=1,initiator-name=IQN[,user=U,password-secret=chap]
(--secret-file F adds ``--object secret,id=chap,file=F``).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

PROMPT = b"qemu-io> "
WROTE = re.compile(r"^wrote (\d+)/(\d+) bytes at offset (\d+)$", re.M)
READ = re.compile(r"^read (\d+)/(\d+) bytes at offset (\d+)$", re.M)
FAILED = re.compile(r"^.*failed.*$", re.M | re.I)


def pattern_of(seq: int) -> int:
    """The byte write ``seq`` fills its block with: 1..255 (0 is what a fresh LUN reads)."""
    return seq % 255 + 1


# ------------------------------------------------------------------------------------ qemu-io
class QemuIoError(Exception):
    """qemu-io could not open the image or exited."""


class Abandoned(Exception):
    """A command's result was given up on (the writer was told to stop and the command hung)."""


class QemuIo:
    """One qemu-io process driven over pipes.

    With a non-tty stdin qemu-io still prints its prompt ``qemu-io> `` (no newline) and flushes
    stdout each time it is ready for the next command, so the prompt frames the output: the text
    between two prompts is the previous command's output.  That text is empty for a successful
    ``flush``; a write prints ``wrote N/N bytes at offset O`` and a stats line, or
    ``write failed: <strerror>``; ``read -P`` adds ``Pattern verification failed at offset O, N
    bytes`` before its ``read`` line.  qemu-io's and libiscsi's messages (unknown commands, QEMU's
    iSCSI retry/reconnect reports) go to stderr, which is read by a thread and handed to ``on_stderr``.
    """

    def __init__(self, image_opts: str, secret_file: str | None = None, on_stderr=None, open_timeout: float = 120):
        argv = ["qemu-io"]
        if secret_file:
            argv += ["--object", "secret,id=chap,file=%s" % secret_file]
        argv += ["--image-opts", image_opts]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        self.stderr_tail: list[str] = []
        self._on_stderr = on_stderr
        self._buf = b""
        self._err_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._err_thread.start()
        deadline = time.monotonic() + open_timeout
        try:
            self._until_prompt(lambda: time.monotonic() > deadline)  # the first prompt: the LUN is open
        except Abandoned:
            self.kill()
            raise QemuIoError("qemu-io did not open the image within %s s" % open_timeout) from None

    def _pump_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr_tail = (self.stderr_tail + [line])[-20:]
            if self._on_stderr:
                self._on_stderr(line)

    def _until_prompt(self, give_up=None) -> str:
        """The output up to the next prompt; ``give_up()`` is polled while waiting."""
        fd = self.proc.stdout.fileno()
        while PROMPT not in self._buf:
            if give_up is not None and give_up():
                raise Abandoned()
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait()
                self._err_thread.join(timeout=2)
                tail = " | ".join(self.stderr_tail[-5:])
                raise QemuIoError("qemu-io exited with status %s: %s" % (self.proc.returncode, tail))
            self._buf += chunk
        out, self._buf = self._buf.split(PROMPT, 1)
        return out.decode(errors="replace").strip("\n")

    def command(self, line: str, give_up=None) -> str:
        with contextlib.suppress(BrokenPipeError):  # it died: _until_prompt reads EOF and says how
            self.proc.stdin.write(line.encode() + b"\n")
        return self._until_prompt(give_up)

    def quit(self, timeout: float = 10):
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.kill()
        self._err_thread.join(timeout=2)  # its last lines are logged before the log is closed

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err_thread.join(timeout=2)


def parse_result(out: str, verb: str) -> tuple[bool, str | None]:
    """(ok, error) of a qemu-io ``write``/``read``/``flush`` output (see QemuIo)."""
    failed = FAILED.search(out)
    if failed:
        return False, failed.group(0).strip()
    if verb == "flush":
        return (True, None) if not out.strip() else (False, out.strip())
    done = (WROTE if verb == "write" else READ).search(out)
    if done and done.group(1) == done.group(2):
        return True, None
    return False, out.strip() or "no result from qemu-io"


# ------------------------------------------------------------------------------------ the log
class Log:
    """Appends JSON lines, one write+flush each (so a killed writer leaves every line it wrote)."""

    def __init__(self, path: str):
        self._fh = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()  # the stderr thread logs too

    def __call__(self, **record):
        line = json.dumps(record, sort_keys=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self):
        self._fh.close()


def read_log(path: str) -> list[dict]:
    """The records of the last run in LOG (after its last ``start`` record); a torn last line is skipped."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type") == "start":
                records = []
            records.append(rec)
    return records


def redact(image_opts: str) -> str:
    return re.sub(r"(password=)[^,]*", r"\1***", image_opts)


# ------------------------------------------------------------------------------------ write
def cmd_write(args) -> int:
    if args.blocks < 1 or args.blocks % 255 == 0:
        sys.exit("--blocks must be positive and not a multiple of 255 (patterns repeat every 255 writes)")
    stop = {"at": None}

    def on_signal(signum, _frame):
        if stop["at"] is None:
            stop["at"] = time.monotonic()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log = Log(args.log)
    log(type="start", t=time.time(), pid=os.getpid(), image_opts=redact(args.image_opts), block_size=args.block_size,
        first_block=args.first_block, blocks=args.blocks, interval=args.interval, flush_every=args.flush_every)

    def on_stderr(line):
        log(type="stderr", t=time.time(), text=line)

    try:
        qio = QemuIo(args.image_opts, args.secret_file, on_stderr=on_stderr)
    except QemuIoError as exc:
        log(type="stop", t=time.time(), reason="open failed: %s" % exc, writes=0, in_flight=None)
        print(exc, file=sys.stderr)
        return 1

    def give_up():
        # once told to stop, the command in flight gets --stop-timeout seconds to finish
        return stop["at"] is not None and time.monotonic() - stop["at"] > args.stop_timeout

    def run(command):
        """(ok, error, fate): fate is None, "in flight" (given up on after the stop signal) or "died"."""
        try:
            return (*parse_result(qio.command(command, give_up), command.split()[0]), None)
        except Abandoned:
            return False, "no result within --stop-timeout after the stop signal", "in flight"
        except QemuIoError as exc:
            return False, str(exc), "died"

    seq = flushes = 0
    fate = in_flight = None
    while stop["at"] is None:
        block = args.first_block + seq % args.blocks
        offset, pattern = block * args.block_size, pattern_of(seq)
        t_issue = time.time()
        ok, error, fate = run("write -P %d %d %d" % (pattern, offset, args.block_size))
        # a write without a result may or may not have landed: verify treats it as in flight
        extra = {"in_flight": True} if fate else {}
        log(type="write", seq=seq, block=block, offset=offset, pattern=pattern, t_issue=t_issue, t_done=time.time(),
            ok=ok, error=error, **extra)
        if fate:
            in_flight = seq
            break
        seq += 1
        if args.flush_every and seq % args.flush_every == 0:
            t_issue = time.time()
            ok, error, fate = run("flush")
            log(type="flush", n=flushes, last_write_seq=seq - 1, t_issue=t_issue, t_done=time.time(), ok=ok, error=error)
            flushes += 1
            if fate:
                break
        end = time.monotonic() + args.interval
        while stop["at"] is None and time.monotonic() < end:
            time.sleep(min(0.05, end - time.monotonic()))
    if fate:
        qio.kill()  # quit would queue behind the command that hangs
    else:
        qio.quit()
    reason = "qemu-io died" if fate == "died" else "signal"
    log(type="stop", t=time.time(), reason=reason, writes=seq + (in_flight is not None), in_flight=in_flight)
    log.close()
    return 1 if fate == "died" else 0


# ------------------------------------------------------------------------------------ verify
def expectations(records: list[dict]) -> dict:
    """Per block: what it may hold, by the rule in the module docstring (no I/O; see verify).

    Returns ``{"blocks": {block: {"last_ok": rec, "after": [recs], "durable": rec|None,
    "durable_after": [recs]}}, "acked": n, "flushes_ok": n, "never_acked": n}``.
    """
    start = next((r for r in records if r.get("type") == "start"), {})
    writes = sorted((r for r in records if r.get("type", "write") == "write"), key=lambda r: r["seq"])
    if writes and start and not any(r.get("type") == "stop" for r in records):
        # the writer was killed: the write after the last logged one may have been in flight
        seq = writes[-1]["seq"] + 1
        block = start["first_block"] + seq % start["blocks"]
        writes.append({"type": "write", "seq": seq, "block": block, "offset": block * start["block_size"],
                       "pattern": pattern_of(seq), "ok": False, "in_flight": True, "error": "not logged"})
    covered = max((f["last_write_seq"] for f in records if f.get("type") == "flush" and f["ok"]), default=-1)
    per_block: dict[int, list[dict]] = {}
    for w in writes:
        per_block.setdefault(w["block"], []).append(w)
    blocks, never = {}, 0
    for block, ws in per_block.items():
        ok_idx = [i for i, w in enumerate(ws) if w["ok"]]
        if not ok_idx:
            never += 1
            continue
        durable_idx = [i for i in ok_idx if ws[i]["seq"] <= covered]
        d = durable_idx[-1] if durable_idx else None
        blocks[block] = {"last_ok": ws[ok_idx[-1]], "after": ws[ok_idx[-1] + 1:],
                         "durable": ws[d] if d is not None else None,
                         "durable_after": ws[d + 1:] if d is not None else []}
    return {"blocks": blocks, "acked": sum(1 for w in writes if w["ok"]), "never_acked": never,
            "flushes_ok": sum(1 for f in records if f.get("type") == "flush" and f["ok"])}


def judge(exp: dict, read_matches) -> dict:
    """Apply the rule: ``read_matches(block_rec, pattern)`` -> True/False (None: unreadable)."""
    result = {"acked": exp["acked"], "checked": 0, "lost": 0, "lost_blocks": [], "lost_detail": [],
              "ambiguous": 0, "ambiguous_landed": 0, "flushes_ok": exp["flushes_ok"], "lost_durable": 0,
              "lost_durable_blocks": [], "unreadable": 0, "never_acked": exp["never_acked"]}
    for block in sorted(exp["blocks"]):
        e = exp["blocks"][block]
        last_ok, after = e["last_ok"], e["after"]
        result["checked"] += 1
        if after:
            result["ambiguous"] += 1
        found = read_matches(last_ok, last_ok["pattern"])
        if found is None:
            result["unreadable"] += 1
            continue
        if found:
            continue
        # not A's pattern: one of the unacknowledged writes after it?  then the block is fine
        landed = next((w for w in after if read_matches(w, w["pattern"])), None)
        if landed is not None:
            result["ambiguous_landed"] += 1
            continue
        result["lost"] += 1
        if len(result["lost_blocks"]) < 20:
            result["lost_blocks"].append(block)
            result["lost_detail"].append({"block": block, "seq": last_ok["seq"], "expected": last_ok["pattern"],
                                          "t_done": last_ok.get("t_done")})
        # flushed data gone too?  (acknowledged writes between D and A may have landed instead)
        d = e["durable"]
        if d is not None and not any(read_matches(w, w["pattern"]) for w in [d] + e["durable_after"]):
            result["lost_durable"] += 1
            if len(result["lost_durable_blocks"]) < 20:
                result["lost_durable_blocks"].append(block)
    return result


def cmd_verify(args) -> int:
    records = read_log(args.log)
    start = next((r for r in records if r.get("type") == "start"), None)
    if start is None:
        print(json.dumps({"error": "no start record in %s" % args.log}))
        return 2
    bs = start["block_size"]
    try:
        qio = QemuIo(args.image_opts, args.secret_file)
    except QemuIoError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2

    def read_matches(rec, pattern):
        out = qio.command("read -P %d %d %d" % (pattern, rec["offset"], bs))
        if "Pattern verification failed" in out:
            return False
        return True if parse_result(out, "read")[0] else None

    try:
        result = judge(expectations(records), read_matches)
        for detail in result["lost_detail"]:
            # what is there instead: the first byte (a pattern names the write that put it there)
            out = qio.command("read -v %d 1" % (detail["block"] * bs))
            m = re.search(r"^[0-9a-f]{8}:\s+([0-9a-f]{2})", out, re.M)
            detail["found_first_byte"] = int(m.group(1), 16) if m else None
    except QemuIoError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    qio.quit()
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["unreadable"] == 0 else 1


# ------------------------------------------------------------------------------------ analyse
def analyse(records: list[dict], failure_time: float) -> dict:
    """What the writes in ``records`` (log records; those without ``type`` count as writes) looked like
    around a failure injected at ``failure_time`` T (time.time() seconds).

    - ``writes_before`` / ``ok_before``: writes issued before T / of them acknowledged;
    - ``writes_after`` / ``ok_after``: writes issued at or after T / of them acknowledged;
    - ``errors_after``: failed writes that completed at or after T; ``first_errors``: the first 5
      of them (seq, t_done - T, message);
    - ``recovery_seconds``: t_done of the first successful write ISSUED at or after T, minus T
      (None: no write issued after T succeeded).  Take T when the failure has taken effect:
      writes issued between T and that moment succeed at once and make this near 0 (``stall_to``
      does not have that problem);
    - ``stall_seconds``: the longest gap between the completions (t_done) of consecutive successful
      writes, among the gaps that end at or after T (gaps entirely before T are the normal
      rhythm; the last successful write before T opens the first gap), with ``stall_from`` /
      ``stall_to`` (relative to T); None without a successful write after T;
    - ``max_latency_seconds`` (t_done - t_issue over all writes, ``max_latency_seq``) and
      ``max_latency_after_seconds`` (writes completing at or after T);
    - ``flushes`` / ``flush_errors_after``: flush records in all / failed ones completing at or after T;
    - ``in_flight``: the seq of a write logged as in flight at the stop, if any.
    """
    t0 = failure_time
    writes = sorted((r for r in records if r.get("type", "write") == "write"), key=lambda r: r["seq"])
    flushes = [r for r in records if r.get("type") == "flush"]
    before = [w for w in writes if w["t_issue"] < t0]
    after = [w for w in writes if w["t_issue"] >= t0]
    errors = [w for w in writes if not w["ok"] and w["t_done"] >= t0]
    first_ok_after = next((w for w in after if w["ok"]), None)
    ok_done = sorted(w["t_done"] for w in writes if w["ok"])
    stall = None
    for prev, nxt in itertools.pairwise(ok_done):
        if nxt >= t0 and (stall is None or nxt - prev > stall[1] - stall[0]):
            stall = (prev, nxt)
    if stall is None and ok_done and ok_done[0] >= t0:
        stall = (t0, ok_done[0])  # nothing succeeded before T: count from T
    lat = [(w["t_done"] - w["t_issue"], w) for w in writes]
    lat_after = [x for x, w in lat if w["t_done"] >= t0]
    worst = max(lat, key=lambda x: x[0], default=None)
    return {
        "failure_time": t0,
        "writes": len(writes),
        "writes_before": len(before),
        "ok_before": sum(1 for w in before if w["ok"]),
        "writes_after": len(after),
        "ok_after": sum(1 for w in after if w["ok"]),
        "errors_after": len(errors),
        "first_errors": [{"seq": w["seq"], "at": round(w["t_done"] - t0, 3), "error": w.get("error")} for w in errors[:5]],
        "recovery_seconds": first_ok_after["t_done"] - t0 if first_ok_after else None,
        "stall_seconds": stall[1] - stall[0] if stall else None,
        "stall_from": round(stall[0] - t0, 3) if stall else None,
        "stall_to": round(stall[1] - t0, 3) if stall else None,
        "max_latency_seconds": worst[0] if worst else None,
        "max_latency_seq": worst[1]["seq"] if worst else None,
        "max_latency_after_seconds": max(lat_after, default=None),
        "flushes": len(flushes),
        "flush_errors_after": sum(1 for f in flushes if not f["ok"] and f["t_done"] >= t0),
        "in_flight": next((w["seq"] for w in writes if w.get("in_flight")), None),
    }


def cmd_analyse(args) -> int:
    print(json.dumps(analyse(read_log(args.log), args.failure_time)))
    return 0


# ------------------------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def target_args(sp):
        sp.add_argument("--image-opts", required=True, help="qemu-io --image-opts string (driver=iscsi,...)")
        sp.add_argument("--secret-file", help="file with the CHAP password (OPTS say password-secret=chap)")
        sp.add_argument("--log", required=True, help="JSON-lines log of the writer")

    w = sub.add_parser("write", help="write until SIGTERM/SIGINT, logging every write")
    target_args(w)
    w.add_argument("--block-size", type=int, default=4096)
    w.add_argument("--first-block", type=int, default=0)
    w.add_argument("--blocks", type=int, default=1024, help="blocks written in turn before wrapping (default 1024)")
    w.add_argument("--interval", type=float, default=0.0, help="seconds between writes (default 0)")
    w.add_argument("--flush-every", type=int, default=0, help="flush after every K writes (default 0: never)")
    w.add_argument("--stop-timeout", type=float, default=10.0,
                   help="seconds the write in flight gets to finish after SIGTERM (default 10)")
    v = sub.add_parser("verify", help="read back every block's last acknowledged write")
    target_args(v)
    a = sub.add_parser("analyse", help="JSON summary of the writes around a failure at time T")
    a.add_argument("--log", required=True)
    a.add_argument("--failure-time", type=float, required=True, help="time.time() of the failure injection")
    args = p.parse_args(argv)
    return {"write": cmd_write, "verify": cmd_verify, "analyse": cmd_analyse}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
