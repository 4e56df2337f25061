"""bench/ha_iowriter.py, the initiator-side writer/verifier/analyser of the storage HA tests.

For real: a private tgtd exporting a sparse file LUN (with CHAP, the password given to qemu-io as a
secret object), the writer riding out a tgtd crash and restart on the same portal (libiscsi
reconnects, the write in flight is replayed), and a target that hangs while the writer is told to
stop.  On synthetic logs: analyse() and verify's rule for blocks whose last write failed.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import Tgtd, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "ha_iowriter.py")
IQN = "iqn.2026-11.org.pvesan.test:ha-iowriter"
INITIATOR = "iqn.2026-11.org.pvesan.test:client"
CHAP_USER, CHAP_PASSWORD = "hauser", "ha-secret-0123456789"
TOOLS = ("tgtd", "tgtadm", "qemu-io")

_spec = importlib.util.spec_from_file_location("ha_iowriter", SCRIPT)
ha = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ha)

needs_tgt = pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
                               reason="needs root, tgt and qemu-utils/qemu-block-extra")


# ------------------------------------------------------------------------------------ helpers
def export(tgtd, backing):
    """Target IQN, LUN 1 = ``backing``, any initiator address, CHAP required (as the service exports)."""
    tgtd.tgtadm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", IQN)
    tgtd.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", backing)
    tgtd.tgtadm("--mode", "account", "--op", "new", "--user", CHAP_USER, "--password", CHAP_PASSWORD)
    tgtd.tgtadm("--mode", "account", "--op", "bind", "--tid", "1", "--user", CHAP_USER)
    tgtd.tgtadm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")


def restart(tgtd):
    """A new tgtd on the same portal and control port, as a failover's new head brings one up."""
    for suffix in ("", ".lock"):  # the crashed one's control socket (Tgtd.stop cleans it up, kill does not)
        path = "/var/run/tgtd/socket.%d%s" % (tgtd.control, suffix)
        if os.path.exists(path):
            os.unlink(path)
    tgtd.start()


@pytest.fixture
def lun(tmp_path):
    """(tgtd, --image-opts, secret file, backing file): a 64 MiB sparse file exported by a private tgtd."""
    backing = tmp_path / "lun.img"
    with open(backing, "wb") as fh:
        fh.truncate(64 << 20)
    secret = tmp_path / "chap.secret"
    secret.write_text(CHAP_PASSWORD)
    tgtd = Tgtd()
    tgtd.start()
    try:
        export(tgtd, str(backing))
        opts = ("driver=iscsi,transport=tcp,portal=127.0.0.1:%d,target=%s,lun=1,initiator-name=%s,"
                "user=%s,password-secret=chap" % (tgtd.port, IQN, INITIATOR, CHAP_USER))
        yield tgtd, opts, str(secret), str(backing)
    finally:
        tgtd.stop()


class Writer:
    """``ha_iowriter.py write`` in the background."""

    def __init__(self, opts, secret, log, *extra):
        self.log = log
        self.stderr = open(log + ".stderr", "wb")
        self.proc = subprocess.Popen([sys.executable, SCRIPT, "write", "--image-opts", opts, "--secret-file", secret,
                                      "--log", log, *extra], stdout=subprocess.DEVNULL, stderr=self.stderr)

    def records(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]

    def writes(self):
        return [r for r in self.records() if r["type"] == "write"]

    def wait_ok(self, n, after=0.0, timeout=120):
        """Until ``n`` successful writes issued at or after ``after`` are logged."""
        def enough():
            assert self.proc.poll() is None, "the writer exited: %s" % open(self.log + ".stderr").read()
            return sum(1 for w in self.writes() if w["ok"] and w["t_issue"] >= after) >= n
        wait_until(enough, timeout=timeout, step=0.1, what="%d successful writes" % n)

    def stop(self, timeout=60):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()


def run_tool(*args):
    r = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300, check=False)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def check_log(records, flush_every=0):
    """Every line of a cleanly stopped run parsed, in order, and consistent with the layout."""
    assert records[0]["type"] == "start" and records[-1]["type"] == "stop"
    start, writes = records[0], [r for r in records if r["type"] == "write"]
    assert [w["seq"] for w in writes] == list(range(len(writes)))
    for w in writes:
        assert w["block"] == start["first_block"] + w["seq"] % start["blocks"]
        assert w["offset"] == w["block"] * start["block_size"] and w["pattern"] == w["seq"] % 255 + 1
        assert w["t_issue"] <= w["t_done"]
    assert records[-1]["writes"] == len(writes)
    if flush_every:
        flushes = [r for r in records if r["type"] == "flush"]
        assert [f["last_write_seq"] for f in flushes] == list(range(flush_every - 1, len(writes), flush_every))[:len(flushes)]
    return writes


# ------------------------------------------------------------------------------------ for real
@pytest.mark.e2e
@needs_tgt
def test_plain_run_writes_and_verifies(lun, tmp_path):
    _tgtd, opts, secret, _backing = lun
    log = str(tmp_path / "writes.jsonl")
    # 100 blocks: the run wraps, so verify checks the last of several writes per block
    writer = Writer(opts, secret, log, "--blocks", "100", "--first-block", "8", "--flush-every", "7")
    writer.wait_ok(300)
    time.sleep(2)
    assert writer.stop() == 0
    records = writer.records()
    writes = check_log(records, flush_every=7)
    assert all(w["ok"] and w["error"] is None for w in writes)
    assert records[-1]["reason"] == "signal" and records[-1]["in_flight"] is None
    assert all(f["ok"] for f in records if f["type"] == "flush")

    rc, result, err = run_tool("verify", "--image-opts", opts, "--secret-file", secret, "--log", log)
    assert rc == 0, err
    assert result["lost"] == 0 and result["unreadable"] == 0 and result["ambiguous"] == 0
    assert result["acked"] == len(writes) and result["checked"] == 100
    rc, summary, err = run_tool("analyse", "--log", log, "--failure-time", str(time.time()))
    assert rc == 0 and summary["writes_before"] == len(writes) and summary["recovery_seconds"] is None


@pytest.mark.e2e
@needs_tgt
def test_verify_finds_a_lost_write(lun, tmp_path):
    """The negative control: a block overwritten behind the writer's back (its last acknowledged
    write "lost") is reported, with what was found there."""
    _tgtd, opts, secret, backing = lun
    log = str(tmp_path / "writes.jsonl")
    writer = Writer(opts, secret, log, "--blocks", "50")
    writer.wait_ok(120)
    assert writer.stop() == 0
    with open(backing, "r+b") as fh:  # tgtd's rdwr backing store goes through the same page cache
        fh.seek(7 * 4096)
        fh.write(b"\xee" * 4096)
    rc, result, err = run_tool("verify", "--image-opts", opts, "--secret-file", secret, "--log", log)
    assert rc == 1, err
    assert result["lost"] == 1 and result["lost_blocks"] == [7]
    assert result["lost_detail"][0]["found_first_byte"] == 0xEE


@pytest.mark.e2e
@needs_tgt
def test_writer_rides_out_a_tgtd_crash_and_restart(lun, tmp_path):
    """kill -9 tgtd, 2 s without a target, a new tgtd on the same portal with the same LUN: the one
    qemu-io session reconnects and the write in flight is replayed; no write fails, none is lost."""
    tgtd, opts, secret, backing = lun
    log = str(tmp_path / "writes.jsonl")
    writer = Writer(opts, secret, log, "--blocks", "1000", "--flush-every", "16")
    writer.wait_ok(200)
    tgtd.kill()
    t_fail = time.time()  # tgtd is gone (kill waited for it): nothing can succeed from here on
    time.sleep(2)
    t_restart = time.time()
    restart(tgtd)
    export(tgtd, backing)
    writer.wait_ok(200, after=t_restart)
    assert writer.stop() == 0
    records = writer.records()
    writes = check_log(records, flush_every=16)

    summary = ha.analyse(records, t_fail)
    print("tgtd restart:", json.dumps(summary))
    assert summary["recovery_seconds"] is not None
    assert summary["recovery_seconds"] >= t_restart - t_fail  # no write succeeded without a target
    assert summary["stall_seconds"] >= t_restart - t_fail
    assert summary["errors_after"] == 0 and all(w["ok"] for w in writes)
    assert summary["ok_after"] >= 200
    rc, cli_summary, _err = run_tool("analyse", "--log", log, "--failure-time", repr(t_fail))
    assert rc == 0 and cli_summary == json.loads(json.dumps(summary))

    rc, result, err = run_tool("verify", "--image-opts", opts, "--secret-file", secret, "--log", log)
    assert rc == 0, err
    assert result["lost"] == 0 and result["lost_durable"] == 0
    assert result["checked"] == len({w["block"] for w in writes}) and result["acked"] == len(writes)


@pytest.mark.e2e
@needs_tgt
def test_stop_while_the_target_hangs(lun, tmp_path):
    """SIGTERM while the write in flight hangs (tgtd stopped): the writer gives up after
    --stop-timeout, logs that write as in flight, exits 0; verify accepts either content for it."""
    tgtd, opts, secret, _backing = lun
    log = str(tmp_path / "writes.jsonl")
    writer = Writer(opts, secret, log, "--blocks", "64", "--stop-timeout", "1")
    writer.wait_ok(100)
    os.kill(tgtd.proc.pid, signal.SIGSTOP)
    try:
        n = len(writer.writes())
        time.sleep(1)
        assert len(writer.writes()) <= n + 1  # at most the write that was in flight at SIGSTOP completed
        assert writer.stop() == 0
    finally:
        os.kill(tgtd.proc.pid, signal.SIGCONT)
    records = writer.records()
    writes = check_log(records)
    assert writes[-1]["in_flight"] is True and writes[-1]["ok"] is False
    assert records[-1]["in_flight"] == writes[-1]["seq"]
    assert all(w["ok"] for w in writes[:-1])
    assert ha.analyse(records, writes[-1]["t_issue"])["in_flight"] == writes[-1]["seq"]

    rc, result, err = run_tool("verify", "--image-opts", opts, "--secret-file", secret, "--log", log)
    assert rc == 0, err
    assert result["lost"] == 0 and result["ambiguous"] == 1


@pytest.mark.e2e
@needs_tgt
def test_qemu_io_dying_ends_the_run_with_status_1(lun, tmp_path):
    _tgtd, opts, secret, _backing = lun
    log = str(tmp_path / "writes.jsonl")
    writer = Writer(opts, secret, log, "--blocks", "64")
    writer.wait_ok(50)
    child = subprocess.run(["pgrep", "-P", str(writer.proc.pid), "-x", "qemu-io"], capture_output=True, text=True,
                           check=True).stdout.split()
    assert len(child) == 1
    os.kill(int(child[0]), signal.SIGKILL)
    assert writer.proc.wait(timeout=30) == 1
    writer.stderr.close()
    records = writer.records()
    writes = check_log(records)
    assert records[-1]["reason"] == "qemu-io died" and records[-1]["in_flight"] == writes[-1]["seq"]
    assert writes[-1]["in_flight"] is True and "exited" in writes[-1]["error"]
    rc, result, err = run_tool("verify", "--image-opts", opts, "--secret-file", secret, "--log", log)
    assert rc == 0 and result["lost"] == 0, err


def test_write_rejects_blocks_that_repeat_patterns(tmp_path):
    rc = subprocess.run([sys.executable, SCRIPT, "write", "--image-opts", "driver=null-co", "--log",
                         str(tmp_path / "log"), "--blocks", "510"], capture_output=True, text=True, check=False)
    assert rc.returncode != 0 and "multiple of 255" in rc.stderr


# ------------------------------------------------------------------------------------ synthetic
# qemu-io 7.2's output between two prompts, as captured (stats lines shortened)
WROTE = "wrote 4096/4096 bytes at offset 8192\n4 KiB, 1 ops; 00.00 sec (2.173 MiB/sec and 556.3121 ops/sec)"
PATTERN_FAILED = ("Pattern verification failed at offset 4096, 4096 bytes\nread 4096/4096 bytes at offset 4096\n"
                  "4 KiB, 1 ops; 00.00 sec (22.354 MiB/sec and 5722.5589 ops/sec)")


def test_parse_result():
    assert ha.parse_result(WROTE, "write") == (True, None)
    assert ha.parse_result("write failed: Input/output error", "write") == (False, "write failed: Input/output error")
    assert ha.parse_result("wrote 512/4096 bytes at offset 0", "write")[0] is False
    assert ha.parse_result("", "write") == (False, "no result from qemu-io")
    assert ha.parse_result("", "flush") == (True, None)
    assert ha.parse_result("flush failed: Input/output error", "flush") == (False, "flush failed: Input/output error")
    assert ha.parse_result(PATTERN_FAILED, "read")[0] is False
    assert ha.parse_result(PATTERN_FAILED.split("\n", 1)[1], "read") == (True, None)


def w(seq, t_issue, t_done, ok=True, error=None, blocks=10, **kw):
    return dict(type="write", seq=seq, block=seq % blocks, offset=(seq % blocks) * 4096, pattern=seq % 255 + 1,
                t_issue=t_issue, t_done=t_done, ok=ok, error=None if ok else (error or "write failed: Input/output error"),
                **kw)


def test_analyse():
    t = 1000.0
    records = ([{"type": "start", "t": 990.0}]
               + [w(i, 990 + i, 990 + i + 0.1) for i in range(10)]               # 990..999.1
               + [w(10, 999.9, 1003.0, ok=False), w(11, 1003.0, 1003.5, ok=False, error="write failed: boom"),
                  w(12, 1003.5, 1007.0),                                          # stalled, then ok
                  w(13, 1007.0, 1007.1), {"type": "stderr", "t": 1001.0, "text": "x"},
                  {"type": "flush", "n": 0, "last_write_seq": 13, "t_issue": 1007.1, "t_done": 1007.2, "ok": False,
                   "error": "flush failed"},
                  w(14, 1007.2, 1007.3), {"type": "stop", "t": 1008.0}])
    s = ha.analyse(records, t)
    assert s["writes"] == 15 and s["writes_before"] == 11 and s["ok_before"] == 10
    assert s["writes_after"] == 4 and s["ok_after"] == 3
    assert s["errors_after"] == 2
    assert [e["seq"] for e in s["first_errors"]] == [10, 11] and s["first_errors"][1]["error"] == "write failed: boom"
    assert s["first_errors"][0]["at"] == 3.0
    assert s["recovery_seconds"] == pytest.approx(7.0)               # w12, the first ok one issued after T
    assert s["stall_seconds"] == pytest.approx(1007.0 - 999.1)        # last ok before T -> first ok after
    assert (s["stall_from"], s["stall_to"]) == (pytest.approx(-0.9), pytest.approx(7.0))
    assert s["max_latency_seconds"] == pytest.approx(3.5) and s["max_latency_seq"] == 12
    assert s["flushes"] == 1 and s["flush_errors_after"] == 1 and s["in_flight"] is None
    # records without "type" are writes (hand-written logs); nothing after T: no recovery
    s = ha.analyse([{k: v for k, v in r.items() if k != "type"} for r in records[1:11]], t)
    assert s["writes"] == 10 and s["recovery_seconds"] is None and s["stall_seconds"] is None
    # nothing succeeded before T: the stall counts from T
    s = ha.analyse([w(0, 1000.5, 1004.0)], t)
    assert s["recovery_seconds"] == pytest.approx(4.0) and s["stall_seconds"] == pytest.approx(4.0)


def judge_reads(records, disk):
    """verify's rule against ``disk`` {block: byte it holds}, and the reads it made."""
    reads = []

    def read_matches(rec, pattern):
        reads.append((rec["block"], pattern))
        return disk.get(rec["block"], 0) == pattern

    return ha.judge(ha.expectations(records), read_matches), reads


def judge(records, disk):
    return judge_reads(records, disk)[0]


START = {"type": "start", "first_block": 0, "blocks": 10, "block_size": 4096}
STOP = {"type": "stop"}


def test_verify_rule_last_acknowledged_write_or_a_later_failed_one():
    # block 0: seq 0, 10 ok; block 1: seq 1 ok, seq 11 failed; block 2: seq 2 ok, seq 12 failed;
    # block 3: seq 3 failed, seq 13 ok; block 4: only seq 4, failed
    records = [START, w(0, 0, 1), w(1, 1, 2), w(2, 2, 3), w(3, 3, 4, ok=False), w(4, 4, 5, ok=False),
               w(10, 10, 11), w(11, 11, 12, ok=False), w(12, 12, 13, ok=False), w(13, 13, 14), STOP]
    disk = {0: 11, 1: 2, 2: 13, 3: 14}  # each block holds the pattern (seq+1) of one write
    result = judge(records, disk)
    assert result["checked"] == 4 and result["never_acked"] == 1 and result["acked"] == 5
    assert result["lost"] == 0
    assert result["ambiguous"] == 2 and result["ambiguous_landed"] == 1  # block 2 holds the failed seq 12

    # block 0 holds seq 0's pattern: seq 10's acknowledged write is gone.  Block 3 holds the write
    # that FAILED before the acknowledged seq 13 (a stale request that landed late): lost too.
    result = judge(records, {0: 1, 1: 2, 2: 3, 3: 4})
    assert result["lost"] == 2 and result["lost_blocks"] == [0, 3]
    assert result["lost_detail"][0] == {"block": 0, "seq": 10, "expected": 11, "t_done": 11}
    assert result["lost_durable"] == 0  # no flush in this log


def test_verify_rule_writer_killed_mid_write():
    """No stop record: the write after the last logged one may have been in flight."""
    records = [START, w(0, 0, 1), w(1, 1, 2), w(10, 10, 11)]
    result, reads = judge_reads(records, {0: 11, 1: 12})  # block 1 got seq 11, never logged
    assert result["lost"] == 0 and result["ambiguous"] == 1 and result["ambiguous_landed"] == 1
    assert (1, 12) in reads
    result = judge(records + [STOP], {0: 11, 1: 12})  # a clean stop: nothing was in flight
    assert result["lost"] == 1 and result["lost_blocks"] == [1]


def test_verify_rule_flushed_writes():
    """A flush covering seq <= 11: losing seq 21 (acknowledged, never flushed) is lost but not
    lost_durable when the block still holds a write at or after the flushed one."""
    flush = {"type": "flush", "n": 0, "last_write_seq": 11, "t_issue": 12, "t_done": 12.5, "ok": True, "error": None}
    records = [START, w(1, 1, 2), w(11, 11, 12), flush, w(21, 21, 22),
               w(2, 2, 3), w(12, 13, 14), w(22, 22, 23), STOP]
    result = judge(records, {1: 12, 2: 3})  # block 1: the flushed seq 11; block 2: seq 2, flushed
    assert result["flushes_ok"] == 1
    assert result["lost"] == 2 and result["lost_blocks"] == [1, 2]
    assert result["lost_durable"] == 0
    result = judge(records, {1: 2, 2: 3})  # block 1 holds seq 1: the flushed seq 11 is gone too
    assert result["lost_durable"] == 1 and result["lost_durable_blocks"] == [1]
    # a failed flush covers nothing
    records[3] = dict(flush, ok=False, error="flush failed: Input/output error")
    result = judge(records, {1: 2, 2: 3})
    assert result["flushes_ok"] == 0 and result["lost"] == 2 and result["lost_durable"] == 0


def test_read_log_takes_the_last_run(tmp_path):
    log = tmp_path / "log"
    log.write_text("\n".join(json.dumps(r) for r in [START, w(0, 0, 1), STOP, START, w(0, 5, 6)])
                   + '\n{"type": "write", "se')  # a torn last line (killed mid-write)
    records = ha.read_log(str(log))
    assert [r["type"] for r in records] == ["start", "write"] and records[1]["t_issue"] == 5
