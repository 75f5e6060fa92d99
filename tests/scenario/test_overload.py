"""Overload: more clients than slots (issue 12, item 4).

At session_limit, and at the worker's file limit (RLIMIT_NOFILE lowered
with prlimit for this sluice only), every further connection is answered
421 at once and closed; the worker does not spin (its CPU time during the
flood stays a small fraction of the wall time), does not die, writes one
log line for the flood rather than one per connection, and counts every
refusal in its metrics. Bounded: 150 flood connections, seconds each.
"""
import http.client
import os
import re
import socket
import time

import pytest

import harness

FLOOD = 150
# Not about shaping: a trickled greeting would only slow the set-up.
NO_SHAPING = {"shape_threshold": "1000000", "weight_reputation": "0"}


def worker_pid(sl):
    pids = harness.wait_until(lambda: harness.live_processes(1, sl.proc.pid), 10)
    assert pids and len(pids) == 1, pids
    return next(iter(pids))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r"^%s (\d+)" % re.escape(name), body, re.M)
    assert m, (name, body[:2000])
    return int(m.group(1))


def flood(sl, n):
    """n connections from 127.0.5.x, opened one after the other; returns
    (first line of each answer, seconds to it), worker CPU seconds, wall
    seconds."""
    wpid = worker_pid(sl)
    cpu0, t0 = cpu_seconds(wpid), time.monotonic()
    answers = []
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.5.%d" % (1 + i % 200), 0))
        s.settimeout(5)
        try:
            s.connect((sl.host, sl.port))
            t = time.monotonic()
            try:
                d = s.recv(4096)
                line = d.split(b"\r\n")[0].decode(errors="replace") or "closed"
            except socket.timeout:
                line = "hang"
            except OSError:
                line = "closed"
            answers.append((line, time.monotonic() - t))
        finally:
            s.close()
    time.sleep(1.0)  # a spinning loop would burn this second
    return answers, cpu_seconds(wpid) - cpu0, time.monotonic() - t0


def hold(sl, n):
    held = []
    for i in range(n):
        c = harness.SmtpRaw(sl.host, sl.port, source="127.0.4.%d" % (1 + i))
        assert c.read_reply(timeout=10)[0] == 220
        held.append(c)
    return held


@pytest.mark.deadline(90)
def test_overload_session_limit_421_at_once(postfix, sluice):
    pf = postfix()
    mport = harness.free_port()
    sl = sluice(pf, session_limit=5, metrics_listen="127.0.0.1:%d" % mport,
                **NO_SHAPING)
    held = hold(sl, 5)
    try:
        answers, cpu, wall = flood(sl, FLOOD)
        want = "421 4.3.2 %s Error: too many sessions" % harness.SLUICE_HOSTNAME
        slow = max(t for _, t in answers)
        print("session_limit 5, %d more clients: %r; slowest answer %.3f s; "
              "worker cpu %.2f s in %.1f s" % (FLOOD, sorted({a for a, _ in answers}),
                                               slow, cpu, wall))
        assert all(a.startswith(want) for a, _ in answers), answers[:5]
        assert slow < 1.0, slow
        assert cpu < 0.5 * wall, "worker busy: %.2f s CPU in %.1f s" % (cpu, wall)
        assert metric(mport, "sluice_limit_sessions_total") == FLOOD
        lines = re.findall(r"refused: session_limit.*", sl.log())
        assert len(lines) == 1, lines[:5]  # one line a minute, not one each
        # the held sessions are untouched, and a slot that frees is used
        check = held.pop()
        assert check.cmd("EHLO held.example")[0] == 250
        check.cmd("QUIT")
        check.close()
        time.sleep(0.3)
        with harness.SmtpRaw(sl.host, sl.port, source="127.0.4.99") as c:
            assert c.read_reply(timeout=10)[0] == 220
    finally:
        for c in held:
            c.close()
    assert sl.alive()


class _Limited(harness.Sluice):
    """sluice under a low RLIMIT_NOFILE (prlimit: lowering one's own limit
    needs no privilege; the workers inherit it)."""
    nofile = 48

    def command(self):
        return ["prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile), "--"] + \
            super().command()


@pytest.mark.deadline(90)
def test_overload_file_limit_421_at_once(postfix, workdir, dns, tls_cert):
    from conftest import _settings
    pf = postfix()
    mport = harness.free_port()
    sl = _Limited(os.path.join(workdir, "sluice"),
                  _settings(workdir, dns, pf, 4, False, tls_cert,
                            dict(NO_SHAPING, metrics_listen="127.0.0.1:%d" % mport)))
    sl.write_config()
    sl.start()
    try:
        held = []
        try:
            # fill the worker's descriptors with sessions
            for i in range(sl.nofile):
                c = harness.SmtpRaw(sl.host, sl.port, source="127.0.4.%d" % (1 + i))
                r = c.read_reply(timeout=10)
                held.append(c)
                if r[0] != 220:
                    break
            answers, cpu, wall = flood(sl, FLOOD)
        finally:
            for c in held:
                c.close()
        want = "421 4.3.0 %s Error: out of resources" % harness.SLUICE_HOSTNAME
        slow = max(t for _, t in answers)
        print("RLIMIT_NOFILE %d, %d more clients: %r; slowest answer %.3f s; "
              "worker cpu %.2f s in %.1f s" % (sl.nofile, FLOOD,
                                               sorted({a for a, _ in answers}), slow,
                                               cpu, wall))
        assert all(a.startswith(want) for a, _ in answers), answers[:5]
        assert slow < 1.0, slow
        assert cpu < 0.5 * wall, "accept loop spun: %.2f s CPU in %.1f s" % (cpu, wall)
        assert metric(mport, "sluice_limit_files_total") >= FLOOD
        lines = re.findall(r"accept failed: Too many open files.*", sl.log())
        assert len(lines) == 1, lines[:5]
        time.sleep(0.3)
        with harness.SmtpRaw(sl.host, sl.port, source="127.0.4.250") as c:
            assert c.read_reply(timeout=10)[0] == 220
        assert sl.alive()
    finally:
        sl.stop()
