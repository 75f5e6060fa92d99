"""postfix_counters (the parser of smtpd's per-connection counters that
bench/lane.sh and test_lane.py read) against the log of the real
Postfix: a client's own connection, and a connection from 127.0.0.1 that
sends XCLIENT, as sluice does, whose disconnect line names the new
identity but whose peer stays 127.0.0.1."""
import harness
import postfix_counters
from harness import SmtpRaw, dot_stuff

BODY = dot_stuff(b"Subject: counters\r\n\r\nHello.\r\n")


def test_counters_direct_and_xclient(postfix):
    pf = postfix()
    with SmtpRaw("127.0.0.1", pf.port, source="127.0.0.31") as c:
        assert c.read_reply()[0] == 220
        c.ehlo("direct.example")
        rr, final = c.send_message("a@example.net", ["alice@example.com",
                                                     "bob@example.com"], BODY)
        assert final[0] == 250
        c.expect("RSET", 250)
        c.expect("QUIT", 221)
    with SmtpRaw("127.0.0.1", pf.port) as c:  # XCLIENT is allowed for 127.0.0.1
        assert c.read_reply()[0] == 220
        c.ehlo("sluice.example")
        assert c.cmd("XCLIENT ADDR=127.0.0.32 NAME=[UNAVAILABLE]")[0] == 220
        c.ehlo("xclient.example")
        rr, final = c.send_message("b@example.net", ["carol@example.com"], BODY)
        assert final[0] == 250
        assert c.cmd("RCPT TO:<nobody@example.com>")[0] == 503  # no MAIL: refused
        c.expect("QUIT", 221)
    assert pf.wait_log(r"disconnect from \S+\[127\.0\.0\.32\]")
    conns = list(postfix_counters.connections(pf.maillog().splitlines()))
    direct = [x for x in conns if x["peer"] == "127.0.0.31"]
    assert len(direct) == 1, conns
    d = direct[0]
    assert d["client"] == "127.0.0.31"
    assert {k: postfix_counters.count(d, k) for k in
            ("ehlo", "mail", "rcpt", "data", "rset", "quit", "xclient")} == \
        {"ehlo": 1, "mail": 1, "rcpt": 2, "data": 1, "rset": 1, "quit": 1,
         "xclient": 0}
    assert not postfix_counters.one_message(d)  # it had an RSET
    via = [x for x in conns if x["client"] == "127.0.0.32"]
    assert len(via) == 1, conns
    v = via[0]
    assert v["peer"] == "127.0.0.1"
    assert postfix_counters.count(v, "xclient") == 1
    assert postfix_counters.count(v, "ehlo") == 2
    assert v["counters"]["rcpt"] == (1, 2)  # one of two RCPT succeeded
    assert postfix_counters.one_message(v)
    s = postfix_counters.summary([d, v])
    assert (s["with_mail"], s["messages"], s["one_message"], s["rset"]) == (2, 2, 1, 1)
    assert "rcpt=1/2" in postfix_counters.signature(v)
