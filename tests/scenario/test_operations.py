"""
Operations scenarios: sluice's spill to disk, metrics page, reload, drain,
worker restart, privileges, limits, bare newlines and the two XCLIENT
modes, each against a real Postfix.

Most tests share one Postfix for the module (``shared_pf``: the harness
defaults, XCLIENT from 127.0.0.1, smtpd_forbid_bare_newline = reject) and
start their own sluice; tests that need a backend configured otherwise
start their own through the ``postfix`` fixture. test_ops_99 checks every
backend log of this module for lines that show sluice broke Postfix's
rules.

Every wait is bounded in time, every loop in count and time.
"""

import http.client
import os
import pwd
import random
import re
import shutil
import signal
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff, crlf_to_lf

NOBODY_UID = pwd.getpwnam("nobody").pw_uid


# ------------------------------------------------------------------ helpers

def token(tag):
    return "ops-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the operations tests.\r\n",
            to=b"alice@example.com"):
    """A complete RFC 5322 message (CRLF lines) whose Subject is tok."""
    t = tok.encode()
    return (b"From: Ops <a@example.net>\r\n"
            b"To: <" + to + b">\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def connect(sl, source=CLIENT23, timeout=30):
    """Raw client to sluice from source; greeting read and required 220."""
    c = SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
    code, text = c.read_reply()
    assert code == 220, "greeting %d %s" % (code, text)
    c.greeting = text
    return c


def deliver(sl, tok, rcpts=("alice@example.com",), source=CLIENT23,
            helo=CLIENT23_NAME, body=b"Hello.\r\n"):
    """One complete session: EHLO, one message, QUIT. Returns the final
    (code, text) of end of data (or of the last RCPT if none was taken)."""
    with connect(sl, source=source) as c:
        c.ehlo(helo)
        rr, final = c.send_message("a@example.net", list(rcpts),
                                   dot_stuff(message(tok, body)))
        if final is None:
            return rr[-1]
        try:
            c.cmd("QUIT", timeout=5)
        except (OSError, harness.SmtpError):
            pass
        return final


def by_subject(pf, tok):
    return [m for m in pf.messages() if m.subject == tok]


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: AddressSanitizer")


def assert_no_sanitizer_report(sl):
    bad = [l for l in sl.log().splitlines()
           if any(m in l for m in SANITIZER_MARKS) or "exited with status" in l]
    assert not bad, "sanitizer report or worker exit in sluice's log:\n" \
        + "\n".join(bad[:20]) + "\n---\n" + sl.log()[-4000:]


def assert_alive(sl):
    assert sl.alive(), "sluice exited during the test; log:\n" + sl.log()[-4000:]
    crashed = [l for l in sl.log().splitlines() if "killed by signal" in l]
    assert not crashed, "a sluice worker crashed:\n" + "\n".join(crashed)
    assert_no_sanitizer_report(sl)


def assert_not_delivered(pf, tok, settle=1.5):
    """Nothing with Subject tok reaches a mailbox within settle seconds
    (Postfix's queue runs every second here)."""
    time.sleep(settle)
    got = by_subject(pf, tok)
    assert not got, "refused message was delivered: %r" % got


def read_closed(c, timeout=5):
    """True when the peer closed the connection within timeout (EOF);
    bytes that arrive before are kept in c.buf."""
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        c.sock.settimeout(remaining)
        try:
            d = c.sock.recv(65536)
        except OSError:  # timeout, or reset: reset counts as closed
            return time.monotonic() < deadline
        if not d:
            return True
        c.buf += d
    return False


def children(ppid):
    """Live (not zombie) child processes of ppid, from /proc/*/stat."""
    out = set()
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        st = harness.proc_stat(int(n))
        if st and st[1] == ppid and st[0] not in ("Z", "X"):
            out.add(int(n))
    return out


def proc_ids(pid, field):
    """The four ids of the Uid: or Gid: line of /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(x) for x in line.split()[1:5]]
    raise AssertionError("no %s line for pid %d" % (field, pid))


def metrics_get(port, path="/metrics"):
    """(status, content type, body text) of one HTTP GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", \
            r.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


def metrics(port):
    """{name: value} of the Prometheus page; asserts the format."""
    status, ctype, body = metrics_get(port)
    assert status == 200, (status, body[:500])
    vals = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+]+)$", line)
        assert m, "not Prometheus text: %r" % line
        vals[m.group(1)] = float(m.group(3))
    return vals


def wait_log(sl, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_until(lambda: rx.search(sl.log()), timeout)


def spool_files(sl):
    d = sl.settings["spool_dir"]
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []


# ---------------------------------------------------------- shared backend

@pytest.fixture(scope="module")
def shared_pf(request, scenario_base):
    """One Postfix for the tests that need only the harness defaults."""
    d = harness.make_world_dir(os.path.join(scenario_base, "ops-shared"))
    pf = harness.Postfix(os.path.join(d, "postfix"))
    pf.allow_log = ()
    failed_before = request.session.testsfailed
    try:
        pf.write_config()
        pf.start()
        yield pf
    finally:
        pf.stop()
        if request.session.testsfailed == failed_before:
            shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------- 01 spill to disk

def big_message(tok):
    """About 5 MB: 8-bit bytes, dot lines, one 1 MB line, CRLF lines only."""
    rnd = random.Random(1)
    high = bytes(range(0x80, 0x100))
    printable = bytes(range(0x20, 0x7f))
    alphabet = high + printable
    parts = [b"8-bit start: caf\xc3\xa9 \xe2\x82\xac \xff\xfe\x80\r\n",
             b".\r\n", b"..\r\n", b". \r\n", b".leading dot\r\n"]
    one_mb = bytes(rnd.choice(alphabet) for _ in range(4096)) * 256
    assert len(one_mb) == 1024 * 1024
    i = 0
    size = sum(len(p) for p in parts)
    while size < 5 * 1024 * 1024:
        if i == 1000:
            line = one_mb
        elif i % 97 == 0:
            line = b"." * (1 + i % 3) + b" dot line %d" % i
        else:
            n = 60 + (i * 37) % 940
            line = bytes(alphabet[(i + k * 7) % len(alphabet)] for k in range(n))
        parts.append(line + b"\r\n")
        size += len(line) + 2
        i += 1
    parts.append(b"last line\r\n")
    return message(tok, b"".join(parts))


@pytest.mark.deadline(60)
def test_ops_01_spill_to_disk_5mb_byte_exact(shared_pf, sluice):
    pf = shared_pf
    mport = harness.free_port()
    sl = sluice(pf, message_memory_max="64k",
                metrics_listen="127.0.0.1:%d" % mport)
    before = metrics(mport)["sluice_spills_total"]
    tok = token("01")
    msg = big_message(tok)
    assert len(msg) > 5 * 1024 * 1024
    with connect(sl) as c:
        ext = c.ehlo(CLIENT23_NAME)
        assert "8BITMIME" in ext, ext
        c.expect("MAIL FROM:<a@example.net> BODY=8BITMIME SIZE=%d" % len(msg), 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(msg) + b".\r\n")
        code, text = c.read_reply(timeout=45)
        assert code == 250, "end of data: %d %s" % (code, text)
        assert c.cmd("QUIT")[0] == 221
    after = metrics(mport)["sluice_spills_total"]
    assert after >= before + 1, "no spill counted (%s -> %s)" % (before, after)
    got = pf.wait_messages(1, 30, lambda m: m.subject == tok)
    assert len(got) == 1, "delivered: %r" % got
    want = crlf_to_lf(msg)
    raw = got[0].raw
    if not raw.endswith(want):
        # find the first difference for the report
        start = len(raw) - len(want)
        body = raw[max(0, start):]
        k = next((j for j in range(min(len(body), len(want)))
                  if body[j] != want[j]), min(len(body), len(want)))
        pytest.fail("delivered bytes differ (got %d, want %d bytes of message); "
                    "first difference at %d: got %r want %r"
                    % (len(body), len(want), k, body[k:k + 60], want[k:k + 60]))
    assert harness.wait_until(lambda: spool_files(sl) == [], 5), \
        "spool_dir not empty: %r" % spool_files(sl)
    assert_alive(sl)


# ----------------------------------------------------------- 02 metrics

@pytest.mark.deadline(45)
def test_ops_02_metrics_page(shared_pf, sluice):
    pf = shared_pf
    mport = harness.free_port()
    sl = sluice(pf, metrics_listen="127.0.0.1:%d" % mport)
    status, ctype, body = metrics_get(mport)
    assert status == 200, (status, body[:300])
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype, ctype
    for name, kind in (("sluice_sessions_total", "counter"),
                       ("sluice_transactions_total", "counter"),
                       ("sluice_pool_connections", "gauge"),
                       ("sluice_spills_total", "counter"),
                       ("sluice_sessions_active", "gauge")):
        assert "# TYPE %s %s\n" % (name, kind) in body, name
        assert "# HELP %s " % name in body, name
    before = metrics(mport)
    tok = token("02")
    final = deliver(sl, tok)
    assert final[0] == 250, final

    def grown():
        m = metrics(mport)
        if (m["sluice_sessions_total"] >= before["sluice_sessions_total"] + 1
                and m["sluice_transactions_total"]
                >= before["sluice_transactions_total"] + 1
                and m["sluice_recipients_accepted_total"]
                >= before["sluice_recipients_accepted_total"] + 1):
            return m
        return None
    after = harness.wait_until(grown, 5, 0.1)
    assert after, "counters did not grow: before %r, now %r" % (before, metrics(mport))
    assert after["sluice_transactions_total"] == before["sluice_transactions_total"] + 1
    assert after["sluice_pool_connections"] >= 1, after
    assert after["sluice_pool_checkouts_total"] > before["sluice_pool_checkouts_total"]
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)

    status, _, body = metrics_get(mport, "/other")
    assert status == 404, (status, body[:200])
    # / is the status page (test_status_page.py)
    status, _, body = metrics_get(mport, "/")
    assert status == 200 and "status.js" in body
    assert "status.json" in metrics_get(mport, "/status.js")[2]
    assert_alive(sl)


# ------------------------------------------------------------ 03 reload

@pytest.mark.deadline(60)
def test_ops_03_sighup_reload_new_setting_old_session_kept(shared_pf, sluice):
    pf = shared_pf
    sl = sluice(pf, workers=1, shutdown_timeout="20s")
    sup = sl.proc.pid
    old_workers = harness.wait_until(lambda: children(sup), 5)
    assert old_workers, "no worker process"

    old = connect(sl)
    try:
        assert old.greeting[0].startswith(harness.SLUICE_HOSTNAME + " "), old.greeting
        old.ehlo(CLIENT23_NAME)

        sl.settings["myhostname"] = "reloaded.test"
        sl.write_config()
        os.kill(sup, signal.SIGHUP)
        assert wait_log(sl, r"configuration reloaded", 10), \
            "no reload in the log:\n" + sl.log()[-3000:]
        # Until an old worker has handled its SIGUSR1 it may still accept
        # (it shares the socket with its successor): wait for it to retire.
        assert wait_log(sl, r"retiring after reload", 10), \
            "old worker did not retire:\n" + sl.log()[-3000:]

        # New sessions get the new name (the new worker may take a moment
        # to be ready; connections wait in the listen queue meanwhile).
        with connect(sl) as c:
            assert c.greeting[0].startswith("reloaded.test "), c.greeting
            code, lines = c.cmd("EHLO " + CLIENT23_NAME)
            assert code == 250 and lines[0].startswith("reloaded.test"), lines
            tok_new = token("03new")
            rr, final = c.send_message("a@example.net", ["bob@example.com"],
                                       dot_stuff(message(tok_new, to=b"bob@example.com")))
            assert final[0] == 250, "new session: %r" % (final,)

        # The session opened before the reload goes on and delivers.
        early = old.pending(0.2)
        assert early == b"", "old session got an unsolicited reply after " \
            "SIGHUP: %r" % early
        tok_old = token("03old")
        code, text = old.cmd("MAIL FROM:<a@example.net>")
        assert code == 250, "MAIL on the session opened before SIGHUP: %d %s" % (code, text)
        code, text = old.cmd("RCPT TO:<alice@example.com>")
        assert code == 250, "RCPT on the old session: %d %s" % (code, text)
        old.expect("DATA", 354)
        old.send(dot_stuff(message(tok_old)) + b".\r\n")
        code, text = old.read_reply(timeout=30)
        assert code == 250, "end of data on the old session: %d %s" % (code, text)
        assert old.cmd("QUIT")[0] == 221
    finally:
        old.close()
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok_old)
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok_new)
    # The old worker exits once its last session is gone.
    assert harness.wait_until(lambda: not (children(sup) & old_workers), 10), \
        "old worker still running: %r" % (children(sup) & old_workers)
    assert_alive(sl)


@pytest.mark.deadline(45)
def test_ops_04_sighup_broken_config_keeps_running(shared_pf, sluice):
    pf = shared_pf
    sl = sluice(pf, workers=1)
    sup = sl.proc.pid
    workers_before = harness.wait_until(lambda: children(sup), 5)
    with open(sl.conf, "a") as f:
        f.write("myhostname = broken.test\nno_such_setting = 1\n")
    os.kill(sup, signal.SIGHUP)
    assert wait_log(sl, r"reload: .*keeping the running configuration", 10), \
        "no refusal in the log:\n" + sl.log()[-3000:]
    line = [l for l in sl.log().splitlines() if "keeping the running" in l][0]
    assert "no_such_setting" in line or "sluice.conf" in line, line
    time.sleep(0.3)
    assert sl.alive()
    assert children(sup) == workers_before, "workers changed on a refused reload"
    with connect(sl) as c:
        assert c.greeting[0].startswith(harness.SLUICE_HOSTNAME + " "), c.greeting
    tok = token("04")
    final = deliver(sl, tok)
    assert final[0] == 250, final
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert_alive(sl)


# ------------------------------------------------------------- 05 drain

@pytest.mark.deadline(60)
def test_ops_05_sigterm_drain_idle_421_replay_in_flight_250(postfix, sluice):
    """The backend sleeps 3 s at end of data (smtpd_end_of_data_restrictions
    = sleep 3), so a replay is reliably in flight when SIGTERM comes."""
    pf = postfix(extra={"smtpd_end_of_data_restrictions": "sleep 3"})
    shutdown = 10
    # The buffered path: the replay at the dot is what is in flight (its
    # "client=" line is how the test sees it reach the server).
    sl = sluice(pf, workers=1, shutdown_timeout="%ds" % shutdown,
                fast_lane="no")
    sup = sl.proc

    idle = connect(sl)
    busy = connect(sl)
    try:
        idle.ehlo(CLIENT23_NAME)
        busy.ehlo(CLIENT23_NAME)
        tok = token("05")
        busy.expect("MAIL FROM:<a@example.net>", 250)
        busy.expect("RCPT TO:<alice@example.com>", 250)
        busy.expect("DATA", 354)
        # Postfix logs "client=" when it opens a queue file: once for the
        # RCPT check (already done), once more for the replay.
        rx = re.compile(r": client=client23\.example\[127\.0\.0\.23\]")
        time.sleep(0.5)
        n0 = len(rx.findall(pf.maillog()))
        busy.send(dot_stuff(message(tok)) + b".\r\n")
        assert harness.wait_until(lambda: len(rx.findall(pf.maillog())) > n0, 5), \
            "the replay did not reach the backend"
        time.sleep(0.5)  # DATA, body and dot follow at once; Postfix sleeps 3 s
        assert busy.pending(0.05) == b"", "end of data answered before the sleep"

        t0 = time.monotonic()
        os.kill(sup.pid, signal.SIGTERM)

        code, text = idle.read_reply(timeout=5)
        t_idle = time.monotonic() - t0
        assert code == 421 and text[0].startswith("4.3.2"), (code, text)
        assert t_idle < 2, "421 to the idle session only after %.1f s" % t_idle
        assert read_closed(idle, 5), "idle session not closed after 421"

        code, text = busy.read_reply(timeout=15)
        assert code == 250, "in-flight replay during drain: %d %s" % (code, text)
        code2, text2 = busy.read_reply(timeout=5)
        assert code2 == 421 and text2[0].startswith("4.3.2"), (code2, text2)
        assert read_closed(busy, 5), "busy session not closed after 421"
    finally:
        idle.close()
        busy.close()
    try:
        rc = sup.wait(shutdown + 5 - (time.monotonic() - t0))
    except Exception:
        rc = None
    took = time.monotonic() - t0
    assert rc is not None, "sluice still running %.1f s after SIGTERM" % took
    assert rc == 0, "sluice exit status %r" % rc
    assert took <= shutdown + 3, "exit took %.1f s" % took
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    log = sl.log()
    assert "killed by signal" not in log, log[-3000:]
    assert "sluice: stopped" in log, log[-3000:]
    assert_no_sanitizer_report(sl)


# ------------------------------------------------------- 06 worker crash

@pytest.mark.deadline(60)
def test_ops_06_worker_killed_is_restarted(shared_pf, sluice):
    pf = shared_pf
    mport = harness.free_port()
    sl = sluice(pf, workers=2, metrics_listen="127.0.0.1:%d" % mport)
    sup = sl.proc.pid
    before = harness.wait_until(lambda: (lambda s: s if len(s) == 2 else None)(
        children(sup)), 5)
    assert before and len(before) == 2, "workers: %r" % children(sup)
    # One delivery first so both workers are settled.
    tok = token("06pre")
    assert deliver(sl, tok)[0] == 250

    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()

    def replaced():
        now = children(sup)
        return now if (len(now) == 2 and victim not in now
                       and len(now - before) == 1) else None
    now = harness.wait_until(replaced, 2, 0.02)
    assert now, "no new worker within 2 s: before %r, now %r" % (before, children(sup))
    print("worker %d replaced after %.2f s" % (victim, time.monotonic() - t0))
    assert wait_log(sl, r"pid=%d killed by signal 9; restarting" % victim, 5), \
        sl.log()[-3000:]

    # New sessions are served (SO_REUSEPORT spreads them over both
    # workers) and delivery works.
    toks = []
    for i in range(8):
        tok = token("06-%d" % i)
        final = deliver(sl, tok)
        assert final[0] == 250, "session %d after the restart: %r" % (i, final)
        toks.append(tok)
    got = pf.wait_messages(len(toks), 20, lambda m: m.subject in toks)
    assert sorted(m.subject for m in got) == sorted(toks)
    assert metrics(mport)["sluice_worker_restarts_total"] >= 1
    assert sl.alive()
    crashed = [l for l in sl.log().splitlines() if "killed by signal" in l]
    assert len(crashed) == 1, crashed
    assert_no_sanitizer_report(sl)


# ---------------------------------------------------------- 07 privileges

@pytest.mark.deadline(30)
def test_ops_07_workers_run_as_nobody_supervisor_as_root(shared_pf, sluice):
    sl = sluice(shared_pf, workers=2)
    sup = sl.proc.pid
    ws = harness.wait_until(lambda: (lambda s: s if len(s) == 2 else None)(
        children(sup)), 5)
    assert ws, "workers: %r" % children(sup)
    # privileges are dropped just before the loop starts: wait for "ready"
    assert harness.wait_until(lambda: sl.log().count(": ready pid=") >= 2, 5), \
        sl.log()[-3000:]
    assert proc_ids(sup, "Uid") == [0] * 4, proc_ids(sup, "Uid")
    for w in ws:
        assert proc_ids(w, "Uid") == [NOBODY_UID] * 4, (w, proc_ids(w, "Uid"))
        gid = pwd.getpwnam("nobody").pw_gid
        assert proc_ids(w, "Gid") == [gid] * 4, (w, proc_ids(w, "Gid"))
    assert_alive(sl)


# ----------------------------------------------------------- 08 limits

@pytest.mark.deadline(45)
def test_ops_08_size_limit_at_mail_and_end_of_data(shared_pf, sluice):
    pf = shared_pf
    limit = 100000
    sl = sluice(pf, message_size_limit=str(limit))
    tok_big = token("08big")
    tok_ok = token("08ok")
    with connect(sl) as c:
        ext = c.ehlo(CLIENT23_NAME)
        assert "SIZE %d" % limit in ext, ext
        # SIZE= above the limit: refused at MAIL.
        code, text = c.cmd("MAIL FROM:<a@example.net> SIZE=%d" % (limit + 1))
        assert code == 552 and text[0].startswith("5.3.4"), (code, text)
        # No SIZE=, too big: refused at end of data.
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        body = (b"y" * 998 + b"\r\n") * 150
        c.send(dot_stuff(message(tok_big, body)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 552 and text[0].startswith("5.3.4"), (code, text)
        # The session stays in step: a message within the limit goes.
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok_ok)),
                                   params=" SIZE=%d" % limit)
        assert final[0] == 250, final
        assert c.cmd("QUIT")[0] == 221
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok_ok)
    assert_not_delivered(pf, tok_big)
    assert_alive(sl)


@pytest.mark.deadline(45)
def test_ops_09_max_recipients(shared_pf, sluice):
    pf = shared_pf
    sl = sluice(pf, max_recipients="2")
    tok = token("09")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        assert c.cmd("RCPT TO:<alice@example.com>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
        code, text = c.cmd("RCPT TO:<carol@example.com>")
        assert code == 452 and text[0].startswith("4.5.3"), (code, text)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, (code, text)
        assert c.cmd("QUIT")[0] == 221
    pf.wait_messages(2, 15, lambda m: m.subject == tok)
    time.sleep(1)  # nothing more arrives (carol was refused)
    assert sorted(m.user for m in by_subject(pf, tok)) == ["alice", "bob"]
    assert_alive(sl)


@pytest.mark.deadline(60)
def test_ops_10_memory_limit_refuses_data(shared_pf, sluice):
    """memory_limit = 64k, held on every append (issue 11): a session holds
    40000 body bytes in memory (below message_memory_max, so nothing
    spills); a second one's 40000 bytes reach the cap on the way, so its
    message gets 452 4.3.1 at end of data and its session goes on; a third
    DATA meanwhile gets 452 4.3.1 at once; once memory is free, DATA works
    again."""
    pf = shared_pf
    mport = harness.free_port()
    sl = sluice(pf, workers=1, memory_limit="64k", message_memory_max="64k",
                metrics_listen="127.0.0.1:%d" % mport)
    chunk = (b"z" * 98 + b"\r\n") * 400  # 40000 bytes
    toks = [token("10a"), token("10b"), token("10c"), token("10d")]
    a, b, c = connect(sl), connect(sl), connect(sl)
    try:
        for cl in (a, b, c):
            cl.ehlo(CLIENT23_NAME)
            cl.expect("MAIL FROM:<a@example.net>", 250)
            cl.expect("RCPT TO:<alice@example.com>", 250)
        hits = metrics(mport)["sluice_memory_limit_hits_total"]
        for cl, tok, need in ((a, toks[0], 39000), (b, toks[1], 65536)):
            cl.expect("DATA", 354)
            cl.send(dot_stuff(message(tok)) + chunk)
            assert harness.wait_until(
                lambda: metrics(mport)["sluice_memory_buffered_bytes"] >= need, 5), \
                "memory buffered: %r" % metrics(mport)["sluice_memory_buffered_bytes"]
        # b stopped holding at the cap: one hit, and at most one feed over.
        assert harness.wait_until(
            lambda: metrics(mport)["sluice_memory_limit_hits_total"] == hits + 1, 5)
        assert metrics(mport)["sluice_memory_buffered_bytes"] < 78000
        code, text = c.cmd("DATA")
        assert code == 452 and text[0].startswith("4.3.1"), (code, text)
        assert metrics(mport)["sluice_memory_limit_hits_total"] == hits + 2
        a.send(b".\r\n")
        code, text = a.read_reply(timeout=30)
        assert code == 250, (code, text)
        b.send(b".\r\n")
        code, text = b.read_reply(timeout=30)
        assert code == 452 and text[0].startswith("4.3.1"), (code, text)
        assert harness.wait_until(
            lambda: metrics(mport)["sluice_memory_buffered_bytes"] < 65536, 5)
        # The refused message's session goes on.
        b.expect("MAIL FROM:<a@example.net>", 250)
        b.expect("RCPT TO:<alice@example.com>", 250)
        b.expect("DATA", 354)
        b.send(dot_stuff(message(toks[3])) + b".\r\n")
        code, text = b.read_reply(timeout=30)
        assert code == 250, (code, text)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(toks[2])) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, (code, text)
    finally:
        for cl in (a, b, c):
            cl.close()
    want = [toks[0], toks[2], toks[3]]
    got = pf.wait_messages(3, 15, lambda m: m.subject in want)
    assert sorted(m.subject for m in got) == sorted(want)
    assert not [m for m in pf.messages() if m.subject == toks[1]]
    assert_alive(sl)


# ------------------------------------------------------- 11 bare newlines

@pytest.mark.deadline(45)
def test_ops_11_bare_lf_in_data_normalized(shared_pf, sluice):
    """Default bare_newline = normalize. The backend rejects bare LF
    (smtpd_forbid_bare_newline = reject), so delivery proves CRLF. The
    message ends in CRLF "." CRLF (a "." line after a bare-LF line is not
    an end of data, as in Postfix 3.9)."""
    pf = shared_pf
    sl = sluice(pf)
    tok = token("11")
    msg = (b"From: Ops <a@example.net>\n"
           b"To: <alice@example.com>\n"
           b"Subject: " + tok.encode() + b"\n"
           b"Date: Fri, 27 Nov 2026 00:00:00 +0000\n"
           b"Message-ID: <" + tok.encode() + b"@example.net>\n"
           b"\n"
           b"line one\n"
           b"line two\n"
           b"..dotted\n"
           b"last line\r\n")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(msg + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, (code, text)
        assert c.cmd("QUIT")[0] == 221
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    want = (b"From: Ops <a@example.net>\nTo: <alice@example.com>\nSubject: "
            + tok.encode() + b"\nDate: Fri, 27 Nov 2026 00:00:00 +0000\n"
            b"Message-ID: <" + tok.encode() + b"@example.net>\n\n"
            b"line one\nline two\n.dotted\nlast line\n")
    assert got[0].raw.endswith(want), got[0].raw[-300:]
    assert "bare <LF>" not in pf.maillog()
    assert_alive(sl)


@pytest.mark.deadline(45)
def test_ops_12_bare_lf_in_data_rejected(shared_pf, sluice):
    pf = shared_pf
    sl = sluice(pf, bare_newline="reject")
    tok = token("12")
    tok_ok = token("12ok")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(message(tok, b"bare\nline feeds\nhere\r\n") + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 550 and text[0].startswith("5.5.2"), (code, text)
        # the session stays in step: a clean message goes through
        rr, final = c.send_message("a@example.net", ["alice@example.com"],
                                   dot_stuff(message(tok_ok)))
        assert final[0] == 250, final
        c.cmd("QUIT")
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok_ok)
    assert_not_delivered(pf, tok)
    assert "bare <LF>" not in pf.maillog()
    assert_alive(sl)


@pytest.mark.deadline(30)
def test_ops_13_bare_lf_command_500_and_close(shared_pf, sluice):
    sl = sluice(shared_pf)
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.send(b"NOOP\n")
        code, text = c.read_reply(timeout=10)
        assert code == 500 and text[0].startswith("5.5.2"), (code, text)
        assert read_closed(c, 5), "connection still open after bare LF; " \
            "extra bytes %r" % c.buf
        assert c.buf == b"", "bytes after the 500: %r" % c.buf
    # sluice itself carries on
    with connect(sl) as c:
        assert c.cmd("NOOP")[0] == 250
    assert_alive(sl)


# ------------------------------------------------- 14 backend_xclient = no

@pytest.mark.deadline(45)
def test_ops_14_backend_xclient_no_received_header(shared_pf, sluice):
    pf = shared_pf
    sl = sluice(pf, backend_xclient="no")
    tok = token("14")
    final = deliver(sl, tok)
    assert final[0] == 250, final
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1
    rcv = got[0].get_all("Received")
    assert len(rcv) >= 2, rcv
    # Postfix's own, on top, names sluice's address ...
    assert "[127.0.0.1]" in rcv[0], rcv
    # ... and the one below it, written by sluice, names the client.
    mine = rcv[1]
    assert mine.startswith("from %s (%s [%s])" % (CLIENT23_NAME, CLIENT23_NAME,
                                                  CLIENT23)), mine
    assert "by %s (sluice) with ESMTP" % harness.SLUICE_HOSTNAME in mine, mine
    assert_alive(sl)


# ------------------------------------- 15/16 backend refuses XCLIENT to us

def _xclient_refused(pf, sl):
    tok = token("xcl")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        code, text = c.cmd("MAIL FROM:<a@example.net>", timeout=30)
        assert code == 250 or code == 451, (code, text)
        if code == 250:
            code, text = c.cmd("RCPT TO:<alice@example.com>", timeout=30)
        assert code == 451 and text[0].startswith("4.3.0"), (code, text)
        code, text = c.cmd("DATA")
        assert code // 100 == 5 or code // 100 == 4, (code, text)
        if code == 354:  # never expected; do not leave the dialogue hanging
            c.send(dot_stuff(message(tok)) + b".\r\n")
            code, text = c.read_reply()
            pytest.fail("DATA accepted without a valid recipient: %d %s" % (code, text))
        c.cmd("QUIT")
    assert_not_delivered(pf, tok)
    assert pf.messages() == []
    log = pf.maillog()
    for bad in ("client=unknown[127.0.0.1]", "client=localhost[127.0.0.1]",
                "from unknown[127.0.0.1]: ", "RCPT from unknown[127.0.0.1]",
                "RCPT from localhost[127.0.0.1]", "from=<a@example.net>"):
        lines = [l for l in log.splitlines() if bad in l]
        assert not lines, "backend saw a transaction from sluice itself:\n" \
            + "\n".join(lines)
    assert "XCLIENT" in sl.log() or "xclient" in sl.log().lower(), sl.log()[-2000:]
    assert_alive(sl)


@pytest.mark.deadline(45)
def test_ops_15_backend_xclient_for_other_host_only(postfix, sluice):
    pf = postfix(xclient_hosts="127.0.0.2",
                 allow_log=("insufficient authorization",))
    sl = sluice(pf)
    _xclient_refused(pf, sl)


@pytest.mark.deadline(45)
def test_ops_16_backend_xclient_for_nobody(postfix, sluice):
    pf = postfix(xclient_hosts="", allow_log=("insufficient authorization",))
    sl = sluice(pf)
    _xclient_refused(pf, sl)


# ----------------------------------------------- 99 backend logs, at end

def test_ops_99_postfix_logs_clean(shared_pf, postfix_log_findings):
    """No backend log line of this module shows that sluice broke Postfix's
    rules: no improper pipelining, no protocol synchronization error, no
    bare LF, no XCLIENT refusal (allowed only in tests 15/16)."""
    found = [f for f in postfix_log_findings if f[0].startswith("test_ops_")]
    found += [("shared backend", l)
              for l in harness.forbidden_log_lines(shared_pf.maillog())]
    assert not found, "\n".join("%s: %s" % f for f in found)
