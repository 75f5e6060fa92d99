"""
Fast lane scenarios (issue 8): a client that keeps up has its envelope
relayed live on one backend connection and its message sent on the same
one; a client that stalls, becomes shaped or whose lane is lost falls
back to the buffered path without losing mail.

Every test runs a real Postfix (XCLIENT for sluice's 127.0.0.1 only, so
each identified connection carries one client) and reads Postfix's own
per-connection counters ("disconnect from ... mail=1 rcpt=N data=1").
"""

import re
import smtplib
import socket
import threading
import time
import uuid

import pytest

import harness
from harness import CLIENT23, SmtpRaw


def token(tag):
    return "lane-%s-%s" % (tag, uuid.uuid4().hex[:10])


def message(tok, body=b"Hello from the lane tests.\r\n"):
    t = tok.encode()
    return (b"From: <a@example.net>\r\nTo: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\nMessage-ID: <" + t + b"@example.net>\r\n"
            b"\r\n" + body)


def connect(sl, source=CLIENT23, timeout=30):
    c = SmtpRaw(sl.host, sl.port, source=source, timeout=timeout)
    code, text = c.read_reply()
    assert code == 220, "greeting %d %s" % (code, text)
    return c


def cmd(c, line):
    c.send(line.encode() + b"\r\n")
    return c.read_reply()


def disconnects(pf, client=None):
    """Postfix's per-connection counter lines for connections that carried
    a client (XCLIENT seen), as dicts."""
    out = []
    for line in pf.maillog().splitlines():
        m = re.search(r"disconnect from (\S+)\s+(.*)$", line)
        if not m:
            continue
        if client and "[%s]" % client not in m.group(1):
            continue
        counts = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
        out.append(counts)
    return out


@pytest.mark.deadline(60)
def test_lane_a_fast_client_one_connection(postfix, sluice):
    """A fast client's message is one Postfix connection: mail=1, rcpt=N,
    data=1, no rset; and the session summary counts it on the lane."""
    pf = postfix()
    sl = sluice(pf, pool=4, metrics_listen="127.0.0.1:%d" % harness.free_port())
    tok = token("a")
    with smtplib.SMTP(sl.host, sl.port, source_address=(CLIENT23, 0),
                      timeout=30) as s:
        s.ehlo("client23.example")
        refused = s.sendmail("a@example.net",
                             ["alice@example.com", "bob@example.com"],
                             message(tok))
        assert refused == {}
    pf.wait_messages(2)
    assert harness.wait_until(lambda: disconnects(pf, CLIENT23), 10)
    conns = disconnects(pf, CLIENT23)
    assert len(conns) == 1, conns
    c = conns[0]
    assert c.get("mail") == "1" and c.get("rcpt") == "2" and c.get("data") == "1", c
    assert "rset" not in c, c
    assert sl.metric("sluice_lanes_total") >= 1
    assert harness.wait_until(lambda: "lane=1 lane_fallbacks=0" in sl.log(), 5)
