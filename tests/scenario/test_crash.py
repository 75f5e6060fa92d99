"""
Crash safety: kill -9 and stopping (docs/hostile.md group L, cases 105-108).

Each test starts its own scriptable backend (tests/scenario/evil_backend.py,
which records every message it accepts, at the moment it decides to answer
250 to the final dot, as Postfix has its queue file on disk by then) and its
own sluice, kills or stops a sluice process at a chosen point, and checks
what the client and the backend saw:

  105  a worker killed in the middle of DATA (while the client sends the
       body, and while the replay sends it to the backend): the client gets
       no 250, nothing reaches the backend as a message, spill files never
       have a name, and a leftover in spool_dir is deleted at start-up and
       never replayed;
  106  a worker killed after the backend recorded the message but before
       the client got its 250: the client retries, and the message is at
       the backend at most twice, never lost;
  107  a worker killed while SO_REUSEPORT spreads a client loop over two
       workers: no refused connection, only the sessions the dead worker
       held fail, its successor serves within 2 s;
  108  SIGTERM to the supervisor, and kill -9 of the supervisor: the same
       drain (421 4.3.2 to sessions not in a replay, replays in flight
       finish, the port closes), every process gone within the drain bound.

Replies are checked against sluice's catalogue (src/replies.h: code,
enhanced code and text) or against the backend's own text. Every wait is
bounded in time, every loop in count and time.
"""

import os
import re
import signal
import socket
import threading
import time

import pytest

import harness
from evil_backend import (Fault, evil, is_sluice_reply, message_bytes,  # noqa: F401
                          run_txn, sanitizer_findings, token, worker_pids,
                          dot_stuff)

FAST = dict(backend_timeout="2s", backend_data_timeout="5s",
            backend_connect_timeout="1s", checkout_timeout="3s",
            smtpd_timeout="10s", shutdown_timeout="4s",
            # about crashes, not classification: never shape a client
            shape_threshold="1000000")
ENH_SHUTDOWN = "4.3.2"


# ------------------------------------------------------------------ helpers

def alive(pid):
    st = harness.proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def group_members(pgid):
    """Live (not zombie) processes of process group pgid: sluice runs in
    its own group, so these are the supervisor and every worker, orphans
    included."""
    return harness.live_processes(2, pgid)


def one_worker(sl, timeout=5):
    pids = harness.wait_until(lambda: worker_pids(sl), timeout)
    assert pids and len(pids) == 1, "workers: %r\n%s" % (pids, sl.log()[-2000:])
    return pids[0]


def successor(sl, dead, timeout=5):
    """The worker that replaced dead (pid), once it logged ready."""
    def new():
        p = [x for x in worker_pids(sl) if x != dead]
        return p[0] if p else None
    pid = harness.wait_until(new, timeout)
    assert pid, "no successor for worker %d:\n%s" % (dead, sl.log()[-3000:])
    return pid


def spool_fds(pid, spool_dir):
    """What the process's descriptors into spool_dir point at (readlink:
    "DIR/#123 (deleted)" for an O_TMPFILE file)."""
    out = []
    try:
        for f in os.listdir("/proc/%d/fd" % pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (pid, f))
            except OSError:
                continue
            if t.startswith(spool_dir + "/"):
                out.append(t)
    except OSError:
        pass
    return out


def read_all_until_closed(c, timeout):
    """Reads until EOF or reset; returns (closed, bytes read, how)."""
    deadline = time.monotonic() + timeout
    data = c.buf
    c.buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data, "timeout"
        c.sock.settimeout(left)
        try:
            d = c.sock.recv(65536)
        except socket.timeout:
            return False, data, "timeout"
        except ConnectionResetError:
            return True, data, "rst"
        if not d:
            return True, data, "eof"
        data += d


def reply_lines(data):
    return [l.decode("latin-1") for l in data.split(b"\r\n") if l]


def assert_no_250_for_dot(data):
    assert not any(l.startswith("250") for l in reply_lines(data)), \
        "client got a 250 from a killed worker: %r" % data


def kill_worker_expect_no_250(pid, c):
    """kill -9 the worker serving client c: c's connection closes and it
    never sees a 250 for its final dot."""
    os.kill(pid, signal.SIGKILL)
    closed, data, how = read_all_until_closed(c, 5)
    assert closed, "client connection still open (%s) after the kill" % how
    assert_no_250_for_dot(data)


def is_shutdown(code, text, host=harness.SLUICE_HOSTNAME):
    class R:
        pass
    r = R()
    r.code, r.lines = code, text
    m = re.match(r"^(\d\.\d{1,3}\.\d{1,3})(?: |$)", text[0]) if text else None
    r.enhanced = m.group(1) if m else ""
    return is_sluice_reply(r, "SHUTDOWN", host)


def begin_data(sl, tok, rcpt="alice@example.com", timeout=10):
    """A client up to DATA's 354 (one reply checked at each step)."""
    c = harness.SmtpRaw(sl.host, sl.port, source="127.0.0.23", timeout=timeout)
    assert c.read_reply()[0] == 220
    c.ehlo("client23.example")
    code, text = c.cmd("MAIL FROM:<a@example.net>")
    assert (code, text[0][:5]) == (250, "2.1.0"), (code, text)
    code, text = c.cmd("RCPT TO:<%s>" % rcpt)
    assert code == 250 and text[0].startswith("2.1.5"), (code, text)
    code, text = c.cmd("DATA")
    assert code == 354, (code, text)
    return c


def backend_commands(be, verb):
    with be.lock:
        return [x for x in be.cmd_log if x[2].split(" ", 1)[0].upper() == verb]


def retry_delivers(sl, be, tok, body=None, window=8.0):
    """The client's retry: the same message until a 250 (bounded)."""
    deadline = time.monotonic() + window
    res = None
    while time.monotonic() < deadline:
        res = run_txn(sl, tok, body=body, timeout=window)
        if res.accepted:
            return res
        time.sleep(0.2)
    raise AssertionError("retry of %s not accepted within %.0f s: %r"
                         % (tok, window, res))


def assert_accepted_by_backend(res):
    f = res.final
    assert f.code == 250 and f.enhanced == "2.0.0" and \
        f.lines[0].startswith("2.0.0 Ok: queued as EV"), f


def assert_clean_log(sl, allow_killed=0):
    log = sl.log()
    bad = [l for l in sanitizer_findings(log) if "killed by signal 9" not in l]
    assert not bad, "\n".join(bad[:20])
    killed = re.findall(r"killed by signal 9", log)
    assert len(killed) == allow_killed, killed


# ------------------------------------------------------------------ 105

@pytest.mark.deadline(60)
def test_hostile_105_kill9_while_client_sends_body(evil, sluice):
    """The worker dies while the client's body is coming in and part of it
    is spilled to disk: the client sees EOF or RST and no 250; the backend
    never sees DATA; the spill file never had a name in spool_dir, and
    nothing is left there; the retry is delivered once."""
    be = evil()
    sl = sluice(be, pool=2, message_memory_max="1k", **FAST)
    spool = sl.settings["spool_dir"]
    pid = one_worker(sl)
    tok = token("k105a")
    body = b"".join(b"body line %06d of a message cut short\r\n" % i
                    for i in range(6000))
    payload = dot_stuff(message_bytes(tok, body))
    c = begin_data(sl, tok)
    try:
        c.send(payload[:len(payload) // 2])
        # the spill is on disk (the pool thread wrote it), unnamed
        fds = harness.wait_until(lambda: spool_fds(pid, spool), 5)
        assert fds, "no spill file open in %s" % spool
        assert all(f.endswith("(deleted)") for f in fds), fds
        assert os.listdir(spool) == [], "a spill file has a name: %r" % os.listdir(spool)
        kill_worker_expect_no_250(pid, c)
    finally:
        c.close()
    new = successor(sl, pid)
    assert not backend_commands(be, "DATA"), be.cmd_log
    assert be.count(tok) == 0
    assert os.listdir(spool) == [], os.listdir(spool)
    res = retry_delivers(sl, be, tok, body)
    assert_accepted_by_backend(res)
    assert be.count(tok) == 1
    assert be.by_token(tok)[0]["data"] == message_bytes(tok, body)
    assert harness.wait_until(lambda: os.listdir(spool) == [], 3), os.listdir(spool)
    assert not spool_fds(new, spool) or harness.wait_until(
        lambda: not spool_fds(new, spool), 3)
    assert_clean_log(sl, allow_killed=1)


@pytest.mark.deadline(90)
def test_hostile_105_kill9_while_replay_sends_body(evil, sluice):
    """The worker dies while the replay sends an 8 MB body to the backend
    (the backend pauses after the first body line, so the final dot cannot
    have left sluice): the kernel closes the backend connection, the
    backend throws the partial message away, the client gets no 250; the
    retry is delivered exactly once."""
    pause = 4
    be = evil(faults=[Fault("mid_body", "slow", pause, times=1)])
    sl = sluice(be, pool=2, message_memory_max="64k",
                **dict(FAST, backend_data_timeout="20s", smtpd_timeout="30s"))
    spool = sl.settings["spool_dir"]
    pid = one_worker(sl)
    tok = token("k105b")
    line = b"x" * 998 + b"\r\n"
    body = line * (8 * 1024)   # 8 MiB: more than every socket buffer between
    payload = dot_stuff(message_bytes(tok, body)) + b".\r\n"
    c = begin_data(sl, tok, timeout=30)
    try:
        c.send(payload)
        hit = harness.wait_until(lambda: be.fault_log, 20)
        assert hit, "the replay never reached the body: %s" % be.summary()
        assert backend_commands(be, "DATA")
        time.sleep(0.3)  # sluice has filled every buffer up to the paused reader
        kill_worker_expect_no_250(pid, c)
    finally:
        c.close()
    # The backend wakes up, reads what the kernel had buffered, then EOF.
    assert harness.wait_until(lambda: be.open_count() == 0 or all(
        cn.closed for cn in be.conns if cn.no == be.fault_log[0][0]), pause + 5)
    time.sleep(0.5)
    assert be.count(tok) == 0, "a partial message was recorded: %s" % be.summary()
    successor(sl, pid)
    res = retry_delivers(sl, be, tok, body, window=20)
    assert_accepted_by_backend(res)
    assert be.count(tok) == 1
    assert be.by_token(tok)[0]["data"] == message_bytes(tok, body)
    assert harness.wait_until(lambda: os.listdir(spool) == [], 3), os.listdir(spool)
    assert_clean_log(sl, allow_killed=1)


@pytest.mark.deadline(30)
def test_hostile_105_leftover_spill_deleted_at_start_never_replayed(evil, sluice_settings):
    """A spill file left in spool_dir by an earlier run (the instant between
    open and unlink, or an older version's named file) is deleted when
    sluice starts and never sent: its client never got a 250 and retries.
    Files that are not spill files are left alone."""
    be = evil()
    settings = sluice_settings(be, pool=2, **FAST)
    spool = settings["spool_dir"]
    harness.make_world_dir(os.path.dirname(spool))
    harness.make_world_dir(spool)
    tok = token("k105c")
    leftover = os.path.join(spool, "s4242-7001")
    with open(leftover, "wb") as f:
        f.write(dot_stuff(message_bytes(tok)) + b".\r\n")
    foreign = os.path.join(spool, "README.admin")
    with open(foreign, "w") as f:
        f.write("not a spill file\n")
    sl = harness.Sluice(os.path.dirname(spool), settings)
    sl.write_config()
    try:
        sl.start()
        one_worker(sl)
        assert not os.path.exists(leftover), os.listdir(spool)
        assert os.path.exists(foreign), "a file that is not a spill was removed"
        assert re.search(r"spool: removed leftover %s" % re.escape(leftover), sl.log()), \
            sl.log()[-2000:]
        # Given time to do something with it, sluice sends nothing at all.
        time.sleep(1.5)
        assert not backend_commands(be, "MAIL"), be.cmd_log
        assert not backend_commands(be, "DATA"), be.cmd_log
        assert be.count(tok) == 0
        # and it serves
        res = run_txn(sl, token("k105c-after"), timeout=10)
        assert_accepted_by_backend(res)
        assert_clean_log(sl)
    finally:
        sl.stop()


# ------------------------------------------------------------------ 106

@pytest.mark.deadline(60)
@pytest.mark.parametrize("when", ["before_backend_reply", "after_backend_reply"])
def test_hostile_106_kill9_between_backend_250_and_client_250(evil, sluice, when):
    """The backend has queued the message (recorded it) and the worker dies
    before the client has its 250: either before the backend's 250 left the
    backend, or after it (the worker is stopped with SIGSTOP so the 250
    sits unread in its socket, then killed). The client sees EOF or RST
    without a 250 and retries: the message is at the backend twice, an
    accepted duplicate (RFC 5321 6.1), never lost and never altered."""
    delay = 2.0
    be = evil(faults=[Fault("after_dot", "slow", delay, times=1)])
    sl = sluice(be, pool=2, **FAST)
    pid = one_worker(sl)
    tok = token("k106")
    c = begin_data(sl, tok)
    stopped = False
    try:
        c.send(dot_stuff(message_bytes(tok)) + b".\r\n")
        assert harness.wait_until(lambda: be.count(tok) == 1, 5), be.summary()
        if when == "after_backend_reply":
            os.kill(pid, signal.SIGSTOP)
            stopped = True

            def answered():
                with be.lock:
                    return [x for x in be.sent_replies if x[1] == "after_dot"]
            assert harness.wait_until(answered, delay + 3), be.summary()
            time.sleep(0.2)  # the 250 is in the stopped worker's socket
        kill_worker_expect_no_250(pid, c)
    finally:
        c.close()
        if stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
    successor(sl, pid)
    res = retry_delivers(sl, be, tok)
    assert_accepted_by_backend(res)
    copies = be.by_token(tok)
    assert len(copies) == 2, "at most twice, never lost: %d copies" % len(copies)
    assert all(m["data"] == message_bytes(tok) for m in copies)
    assert_clean_log(sl, allow_killed=1)


# ------------------------------------------------------------------ 107

@pytest.mark.deadline(60)
def test_hostile_107_worker_killed_under_reuseport_others_keep_serving(evil, sluice):
    """Four client threads open short sessions (greeting, QUIT) in a loop
    against two workers that share the port through SO_REUSEPORT. One
    worker is killed. The listening sockets belong to the supervisor, so
    no connection is ever refused and the connections queued for the dead
    worker wait for its successor; only sessions the dead worker had
    already accepted fail. The other worker serves throughout, the
    successor serves within 2 s."""
    be = evil()
    sl = sluice(be, pool=2, workers=2, **FAST)
    pids = harness.wait_until(lambda: (lambda p: p if len(p) == 2 else None)(
        worker_pids(sl)), 5)
    assert pids, worker_pids(sl)
    stop = threading.Event()
    lock = threading.Lock()
    results = []  # (start monotonic, outcome, seconds)

    def loop():
        for _ in range(5000):
            if stop.is_set():
                return
            t0 = time.monotonic()
            outcome = "ok"
            try:
                c = harness.SmtpRaw(sl.host, sl.port, source="127.0.0.23", timeout=5)
                try:
                    code, text = c.read_reply()
                    if code != 220:
                        outcome = "greeting %d" % code
                    else:
                        code, text = c.cmd("QUIT")
                        if (code, text[0][:5]) != (221, "2.0.0"):
                            outcome = "quit %d %s" % (code, text)
                finally:
                    c.close()
            except ConnectionRefusedError:
                outcome = "refused"
            except socket.timeout:
                outcome = "timeout"
            except (OSError, harness.SmtpError) as e:
                outcome = "lost: %s" % e
            with lock:
                results.append((t0, outcome, time.monotonic() - t0))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    victim = pids[0]
    survivor = pids[1]
    t_kill = time.monotonic()
    wall_kill = time.time()
    os.kill(victim, signal.SIGKILL)
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    with lock:
        res = list(results)
    before = [r for r in res if r[0] < t_kill]
    after = [r for r in res if r[0] >= t_kill]
    refused = [r for r in res if r[1] == "refused"]
    assert not refused, "%d refused connections" % len(refused)
    assert len(before) > 10 and len(after) > 10, (len(before), len(after))
    # Only sessions that the dead worker held when it died may fail: at
    # most one per client thread, and none that started after the kill.
    failed_after = [r for r in after if r[1] != "ok" and r[0] > t_kill + 0.05]
    assert not failed_after, failed_after[:5]
    failed = [r for r in res if r[1] != "ok"]
    assert len(failed) <= len(threads), failed
    slow = [r for r in res if r[1] == "ok" and r[2] > 3.0]
    assert not slow, "sessions that waited more than 3 s: %r" % slow[:5]
    new = successor(sl, victim)
    lines = sl.log().splitlines()

    def first_ts(pat):
        for l in lines:
            if re.search(pat, l):
                ts = harness.log_ts(l)
                if ts is not None and ts >= wall_kill - 0.01:
                    return ts
        return None
    served_new = first_ts(r"sluice\[%d\]: session=\d+ connect from" % new)
    assert served_new is not None and served_new - wall_kill <= 2.0, \
        "successor %d first served %s s after the kill" % (
            new, None if served_new is None else "%.2f" % (served_new - wall_kill))
    served_old = first_ts(r"sluice\[%d\]: session=\d+ connect from" % survivor)
    assert served_old is not None and served_old - wall_kill <= 1.0, \
        "the other worker served nothing in the second after the kill"
    assert alive(survivor)
    assert re.search(r"worker \d+ pid=%d killed by signal 9; restarting" % victim,
                     sl.log())
    print("107: %d sessions, %d failed (held by the dead worker), successor "
          "serving after %.2f s" % (len(res), len(failed), served_new - wall_kill))
    assert_clean_log(sl, allow_killed=1)


# ------------------------------------------------------------------ 108

def _stop_scenario(evil, sluice, how):
    """Four sessions are in four states when sluice is told to stop (how:
    "sigterm" to the supervisor, or "kill9" of the supervisor):

      idle     after EHLO
      envelope after MAIL and RCPT; it sends DATA after the stop
      body     in the middle of its message body
      replay   its message recorded by the backend, which answers 2 s later

    Expected, for both: idle, envelope and body get 421 4.3.2 (the
    catalogue's SHUTDOWN) and are closed, nothing of body's message is
    delivered; replay gets the backend's 250 and then the 421; the port
    stops taking connections; every sluice process is gone within
    shutdown_timeout (4 s) plus a second."""
    shutdown = 4.0
    be = evil(faults=[Fault("after_dot", "slow", 2.0, times=1)])
    sl = sluice(be, pool=2, workers=2, **FAST)
    sup = sl.proc.pid
    harness.wait_until(lambda: len(worker_pids(sl)) == 2, 5)
    group = harness.wait_until(lambda: (lambda g: g if len(g) == 3 else None)(
        group_members(sup)), 5)
    assert group, group_members(sup)
    idle = harness.SmtpRaw(sl.host, sl.port, source="127.0.0.23", timeout=10)
    assert idle.read_reply()[0] == 220
    idle.ehlo("client23.example")
    env = harness.SmtpRaw(sl.host, sl.port, source="127.0.0.23", timeout=10)
    assert env.read_reply()[0] == 220
    env.ehlo("client23.example")
    assert env.cmd("MAIL FROM:<a@example.net>")[0] == 250
    assert env.cmd("RCPT TO:<bob@example.com>")[0] == 250
    tok_body = token("k108-body")
    body = begin_data(sl, tok_body)
    payload = dot_stuff(message_bytes(tok_body))
    body.send(payload[:len(payload) // 2])
    tok_replay = token("k108-replay")
    replay = begin_data(sl, tok_replay)
    replay.send(dot_stuff(message_bytes(tok_replay)) + b".\r\n")
    assert harness.wait_until(lambda: be.count(tok_replay) == 1, 5), be.summary()

    t0 = time.monotonic()
    os.kill(sup, signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    try:
        for name, c in (("idle", idle), ("body", body)):
            code, text = c.read_reply(timeout=3)
            assert is_shutdown(code, text), "%s: %d %s" % (name, code, text)
            assert read_all_until_closed(c, 3)[0], "%s not closed after 421" % name
        env.send(b"DATA\r\n")
        code, text = env.read_reply(timeout=3)
        assert is_shutdown(code, text), "envelope, DATA after the stop: %d %s" % (code, text)
        code, text = replay.read_reply(timeout=shutdown)
        assert code == 250 and text[0].startswith("2.0.0 Ok: queued as EV"), \
            "replay in flight: %d %s" % (code, text)
        code, text = replay.read_reply(timeout=3)
        assert is_shutdown(code, text), "replay, after its 250: %d %s" % (code, text)
        assert read_all_until_closed(replay, 3)[0]
        # No new sessions: the port closes once the workers drained.
        assert harness.wait_until(lambda: not harness.is_listening(sl.port, sl.host), 3), \
            "%s:%d still listening" % (sl.host, sl.port)
        with pytest.raises((ConnectionRefusedError, ConnectionResetError,
                            harness.SmtpError, socket.timeout)):
            late = harness.SmtpRaw(sl.host, sl.port, source="127.0.0.23", timeout=2)
            try:
                late.read_reply()
            finally:
                late.close()
    finally:
        for c in (idle, env, body, replay):
            c.close()
    gone = harness.wait_until(lambda: not group_members(sup), shutdown + 1)
    took = time.monotonic() - t0
    assert gone, "sluice processes left %.1f s after the stop: %r" % (
        took, group_members(sup))
    rc = sl.proc.wait(2)
    assert be.count(tok_body) == 0, "a message cut off by the stop was delivered"
    assert be.count(tok_replay) == 1
    log = sl.log()
    workers = [p for p in group if p != sup]
    if how == "sigterm":
        assert rc == 0, rc
        assert "sluice: stopped" in log
    else:
        assert rc == -signal.SIGKILL, rc
        for w in workers:
            assert re.search(r"sluice\[%d\]: error: worker \d+: supervisor pid=%d gone; "
                             r"draining" % (w, sup), log), log[-3000:]
    for w in workers:
        assert re.search(r"sluice\[%d\]: worker \d+: exit" % w, log), log[-3000:]
    assert_clean_log(sl)
    print("108 %s: all processes gone %.2f s after the stop" % (how, took))


@pytest.mark.deadline(45)
def test_hostile_108_sigterm_drains(evil, sluice):
    _stop_scenario(evil, sluice, "sigterm")


@pytest.mark.deadline(45)
def test_hostile_108_supervisor_kill9_workers_drain_and_exit(evil, sluice):
    """Defined behaviour: workers whose supervisor died drain exactly as on
    SIGTERM and exit (they notice through the life pipe's EOF), so no
    orphan keeps a port that nothing manages."""
    _stop_scenario(evil, sluice, "kill9")
