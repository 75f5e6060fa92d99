"""Scenario tests for the defects issue 11 found by reading the code, each
against the real Postfix (harness.py): a backend connection reused for the
same client after its second EHLO must carry the new HELO to the server
(the identity is what XCLIENT sends, not the session id); a SIGHUP whose
new listen addresses cannot be bound leaves the running listeners as they
were, also for a worker restarted afterwards; a client that hangs up
after sluice has sent the final dot to the server does not cancel the
replay: the server's answer is logged with its queue id and counted.
"""
import http.client
import os
import re
import signal
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff


def token(tag):
    return "str-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the structure tests.\r\n"):
    t = tok.encode()
    return (b"From: Structure <a@example.net>\r\n"
            b"To: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\n"
            b"Date: Fri, 27 Nov 2026 00:00:00 +0000\r\n"
            b"Message-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def connect(sl, source=CLIENT23, timeout=30):
    c = SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
    code, text = c.read_reply()
    assert code == 220, "greeting %d %s" % (code, text)
    return c


@pytest.mark.deadline(60)
def test_structure_01_second_ehlo_sends_new_xclient(postfix, sluice):
    """Issue 11, defect 4: after a recipient check under HELO one.example,
    the client says EHLO two.example; the message replayed on the same
    (only) backend connection must reach Postfix with HELO two.example."""
    # XCLIENT allowed for the client's address too: the connection then
    # still offers XCLIENT after the check and goes back to the pool.
    pf = postfix(xclient_hosts="127.0.0.0/8")
    sl = sluice(pf, pool=1)
    tok = token("01")
    with connect(sl) as c:
        c.ehlo("one.example")
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)  # XCLIENT HELO=one
        c.expect("RSET", 250)
        c.ehlo("two.example")
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, text
        c.cmd("QUIT")
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1, pf.messages()
    rcv = got[0].get_all("Received")[0]
    assert rcv.startswith("from two.example ("), rcv
    assert sl.alive()


def children(ppid):
    """Live (not zombie) child processes of ppid, from /proc/*/stat."""
    out = set()
    for n in os.listdir("/proc"):
        if n.isdigit():
            st = harness.proc_stat(int(n))
            if st and st[1] == ppid and st[0] not in ("Z", "X"):
                out.add(int(n))
    return out


def wait_log(sl, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_until(lambda: rx.search(sl.log()), timeout)


def deliver(sl, pf, tag):
    tok = token(tag)
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = c.read_reply(timeout=30)
        assert code == 250, (code, text)
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)


@pytest.mark.deadline(60)
def test_structure_02_failed_rebind_keeps_listeners(postfix, sluice):
    """Issue 11, defect 2: SIGHUP with a listen address that cannot be bound
    (192.0.2.1 is on no interface) is refused, and the running listener
    stays: a worker killed afterwards is restarted on the same socket and
    serves."""
    pf = postfix()
    sl = sluice(pf, workers=1)
    sup = sl.proc.pid
    first = harness.wait_until(lambda: children(sup), 5)
    assert first, "no worker process"
    deliver(sl, pf, "02a")

    listen = sl.settings["listen"]
    sl.settings["listen"] = "192.0.2.1:%d, %s" % (harness.free_port(), listen)
    sl.write_config()
    os.kill(sup, signal.SIGHUP)
    assert wait_log(sl, r"reload: cannot bind", 10), sl.log()[-3000:]
    sl.settings["listen"] = listen
    sl.write_config()

    for pid in first:
        os.kill(pid, signal.SIGKILL)
    assert harness.wait_until(lambda: children(sup) and not children(sup) & first, 10), \
        "worker not restarted:\n" + sl.log()[-3000:]
    assert wait_log(sl, r"worker 1: ready pid=(?!%s)" % "|".join(map(str, first)), 10), \
        sl.log()[-3000:]
    deliver(sl, pf, "02b")
    assert sl.alive()


@pytest.mark.deadline(60)
def test_structure_03_client_gone_after_dot_replay_finishes(postfix, sluice):
    """Issue 11, defect 3: Postfix takes 3 s to answer the final dot
    (smtpd_end_of_data_restrictions = sleep 3); the client hangs up after
    the dot has gone to the server. The message is queued by Postfix, and
    sluice logs the server's answer with its queue id and counts it."""
    pf = postfix(extra={"smtpd_end_of_data_restrictions": "sleep 3, permit"})
    mport = harness.free_port()
    sl = sluice(pf, metrics_listen="127.0.0.1:%d" % mport)
    tok = token("03")
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        c.expect("MAIL FROM:<a@example.net>", 250)
        c.expect("RCPT TO:<alice@example.com>", 250)
        c.expect("DATA", 354)
        c.send(dot_stuff(message(tok)) + b".\r\n")
        # The replay's dot reaches Postfix well within this second, and
        # Postfix sits on it for three.
        time.sleep(1.0)
    got = pf.wait_messages(1, 15, lambda m: m.subject == tok)
    assert len(got) == 1, pf.messages()
    line = wait_log(sl, r"client gone before the answer.*queued as", 10)
    assert line, sl.log()[-3000:]
    conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(r"^sluice_orphan_answers_total (\d+)", body, re.M)
    assert m and int(m.group(1)) == 1, body[-2000:]
    assert sl.alive()
