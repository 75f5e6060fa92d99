"""Scenario tests for the defects issue 11 found by reading the code, each
against the real Postfix (harness.py): a backend connection reused for the
same client after its second EHLO must carry the new HELO to the server
(the identity is what XCLIENT sends, not the session id).
"""
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
