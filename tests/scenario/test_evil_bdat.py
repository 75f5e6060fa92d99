"""
BDAT (RFC 3030 CHUNKING) in the evil backend, and through sluice.

Part 1 talks raw sockets to evil_backend.EvilBackend alone (no sluice):
CHUNKING is offered only with chunking=True; BDAT <n> [LAST] reads
exactly n octets, unstuffed and unterminated, chunks add up to one
message recorded byte-exact; a BDAT outside a transaction has its octets
read and discarded before the 503/554, so the dialogue stays in step; the
after_dot and mid_body fault points apply to BDAT as to DATA; a client
that sends BDAT unasked, or more octets than it announced, is recorded as
a violation.

Part 2 runs sluice in front of the evil backend with chunking=True:
sluice must send each message as one BDAT <n> LAST (backend_chunking=yes,
the default), byte-exact, Received header included when backend_xclient
= no; DATA with backend_chunking = no; the verdict on BDAT LAST is
relayed as the verdict after the dot is.
"""

import socket
import time

import pytest

import harness
from evil_backend import (Fault, check_invariants, evil, message_bytes,  # noqa: F401
                          run_txn, token, is_sluice_reply, which_sluice_reply)

# Lines a DATA client must stuff; BDAT carries them as they are.
DOTS_BODY = (b"first line\r\n.leading dot\r\n..two dots\r\n.\r\n"
             b"...\r\nlast line\r\n")


# ====================================================================
# Part 1: the evil backend alone
# ====================================================================

class Client:
    """A raw SMTP client for the evil backend, every read bounded."""

    def __init__(self, be, timeout=5):
        self.be = be
        self.c = harness.SmtpRaw(be.host, be.port, timeout=timeout)
        code, _ = self.c.read_reply()
        assert code == 220

    def ehlo(self):
        code, lines = self.c.cmd("EHLO client.example")
        assert code == 250, lines
        return lines

    def txn(self, rcpt="alice@example.com"):
        assert self.c.cmd("MAIL FROM:<a@example.net>")[0] == 250
        return self.c.cmd("RCPT TO:<%s>" % rcpt)[0]

    def send(self, data):
        self.c.send(data)

    def reply(self):
        return self.c.read_reply()

    def closed(self, timeout=3):
        """Whether the server closed the connection (EOF) without a word."""
        self.c.sock.settimeout(timeout)
        try:
            return self.c.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.c.close()


def bdat(data, last=True):
    return b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"") + data


def wait_closed(be, timeout=3):
    deadline = time.monotonic() + timeout
    while be.open_count() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def raw(evil):
    """raw(**EvilBackend kwargs) -> (backend, Client after EHLO)."""
    clients = []

    def make(**kw):
        kw.setdefault("require_xclient", False)
        be = evil(**kw)
        cl = Client(be)
        cl.ehlo()
        clients.append(cl)
        return be, cl

    yield make
    for cl in clients:
        cl.close()


@pytest.mark.deadline(20)
def test_chunking_offered_only_when_asked(evil):
    for kw, want in [({}, False), ({"chunking": False}, False),
                     ({"chunking": True}, True)]:
        be = evil(**kw)
        cl = Client(be)
        lines = cl.ehlo()
        cl.close()
        assert ("CHUNKING" in lines) == want, (kw, lines)
    # a callable: per connection number
    be = evil(chunking=lambda no: no == 2)
    seen = []
    for _ in range(3):
        cl = Client(be)
        seen.append("CHUNKING" in cl.ehlo())
        cl.close()
    assert seen == [False, True, False]


@pytest.mark.deadline(20)
def test_bdat_last_byte_exact(raw):
    be, cl = raw(chunking=True)
    tok = token("bdat")
    msg = message_bytes(tok, DOTS_BODY)
    assert cl.txn() == 250
    cl.send(bdat(msg))
    code, lines = cl.reply()
    assert code == 250 and lines[0].startswith("2.0.0 Ok: queued as"), lines
    # in step: the next command is parsed as one
    assert cl.c.cmd("QUIT")[0] == 221
    [m] = be.by_token(tok)
    assert m["data"] == msg
    assert be.conns[0].bdats == [(len(msg), True, len(msg))]
    assert m["via"] == "BDAT"
    assert m["rcpts"] == ["alice@example.com"]
    assert m["mail_from"] == "a@example.net"
    assert be.conns[0].verbs == ["EHLO", "MAIL", "RCPT", "BDAT", "QUIT"]
    assert not be.violations


@pytest.mark.deadline(20)
def test_bdat_chunks_make_one_message(raw):
    be, cl = raw(chunking=True)
    tok = token("chunks")
    msg = message_bytes(tok, DOTS_BODY)
    cut = len(msg) // 2 + 1   # in the middle of a line
    assert cl.txn() == 250
    cl.send(bdat(msg[:cut], last=False))
    assert cl.reply() == (250, ["2.0.0 Ok: %d octets" % cut])
    # the last chunk, and a chunk of 0 octets is allowed too: pipelined
    cl.send(bdat(msg[cut:-3], last=False) + bdat(msg[-3:], last=False)
            + bdat(b"", last=True))
    assert cl.reply() == (250, ["2.0.0 Ok: %d octets" % (len(msg) - cut - 3)])
    assert cl.reply() == (250, ["2.0.0 Ok: 3 octets"])
    code, lines = cl.reply()
    assert code == 250 and "queued as" in lines[0], lines
    assert [m["data"] for m in be.messages] == [msg]
    # the first chunk came in its own write, the others pipelined
    assert [b[:2] for b in be.conns[0].bdats] == [
        (cut, False), (len(msg) - cut - 3, False), (3, False), (0, True)]
    assert be.conns[0].bdats[0][2] == cut
    # the next transaction on the connection starts afresh
    tok2 = token("second")
    msg2 = message_bytes(tok2)
    assert cl.txn() == 250
    cl.send(bdat(msg2))
    assert cl.reply()[0] == 250
    assert [m["data"] for m in be.messages] == [msg, msg2]
    assert not be.violations


@pytest.mark.deadline(20)
def test_bdat_case_insensitive_and_big(raw):
    be, cl = raw(chunking=True)
    tok = token("big")
    body = b"".join(b"%06d .some line of a longer body\r\n" % i for i in range(40000))
    msg = message_bytes(tok, body)   # ~1.4 MB: many reads
    assert cl.txn() == 250
    cl.send(b"bdat %d last\r\n" % len(msg) + msg)
    code, lines = cl.reply()
    assert code == 250, lines
    [m] = be.by_token(tok)
    assert m["data"] == msg
    assert not be.violations


@pytest.mark.deadline(20)
def test_bdat_outside_transaction_discards_octets(raw):
    """The octets are read and thrown away before the error reply, so a
    chunk that looks like commands is never parsed as commands."""
    be, cl = raw(chunking=True)
    trap = b"RSET\r\nMAIL FROM:<trap@example.net>\r\n"
    # no MAIL
    cl.send(bdat(trap))
    assert cl.reply() == (503, ["5.5.1 Error: need RCPT command"])
    assert cl.c.cmd("NOOP")[0] == 250
    # MAIL, but no valid recipient
    assert cl.txn(rcpt="nobody@example.com") == 550
    cl.send(bdat(trap, last=False))
    assert cl.reply() == (554, ["5.5.1 Error: no valid recipients"])
    cl.send(bdat(trap))
    assert cl.reply() == (554, ["5.5.1 Error: no valid recipients"])
    assert cl.c.cmd("NOOP")[0] == 250
    assert cl.c.cmd("QUIT")[0] == 221
    assert be.conns[0].verbs == ["EHLO", "BDAT", "NOOP", "MAIL", "RCPT", "BDAT",
                                 "BDAT", "NOOP", "QUIT"]
    assert not be.messages
    assert not be.violations


@pytest.mark.deadline(20)
def test_bdat_unasked_is_a_violation(raw):
    be, cl = raw(chunking=False)
    assert cl.txn() == 250
    cl.send(b"BDAT 0 LAST\r\n")
    assert cl.reply() == (502, ["5.5.2 Error: command not recognized"])
    assert not be.messages
    assert any("BDAT without CHUNKING" in v for v in be.violations), be.violations


@pytest.mark.deadline(20)
def test_bdat_more_octets_than_announced(raw):
    """The surplus is read as the next command line: a violation."""
    be, cl = raw(chunking=True)
    tok = token("surplus")
    msg = message_bytes(tok)
    assert cl.txn() == 250
    cl.send(b"BDAT %d LAST\r\n" % len(msg) + msg + b"tail of the message\r\n")
    assert cl.reply()[0] == 250
    assert cl.reply() == (502, ["5.5.2 Error: command not recognized"])
    assert [m["data"] for m in be.messages] == [msg]
    assert any("unknown command" in v and "tail of the message" in v
               for v in be.violations), be.violations


@pytest.mark.deadline(20)
def test_bdat_fewer_octets_than_announced(raw):
    """The server waits for the rest: the next command is message data."""
    be, cl = raw(chunking=True)
    tok = token("short")
    msg = message_bytes(tok)
    assert cl.txn() == 250
    cl.send(b"BDAT %d LAST\r\n" % (len(msg) + 6) + msg)
    cl.c.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        cl.c.sock.recv(100)   # no reply: the chunk is not complete
    cl.send(b"QUIT\r\n")
    code, _ = cl.reply()
    assert code == 250
    assert [m["data"] for m in be.messages] == [msg + b"QUIT\r\n"]


@pytest.mark.deadline(20)
@pytest.mark.parametrize("data,what", [
    (b"a bare\nLF\r\n", "bare LF"), (b"a bare\rCR\r\n", "bare CR"),
    (b"no line end at the end", "does not end with CR LF")])
def test_bdat_line_end_checks(raw, data, what):
    be, cl = raw(chunking=True)
    msg = message_bytes(token("lineends"), data)
    assert cl.txn() == 250
    cl.send(bdat(msg))
    assert cl.reply()[0] == 250
    assert be.messages[0]["data"] == msg
    assert any(what in v for v in be.violations), be.violations


@pytest.mark.deadline(20)
def test_bdat_bad_argument_and_size_cap(raw):
    be, cl = raw(chunking=True)
    assert cl.txn() == 250
    for arg in ("BDAT", "BDAT x LAST", "BDAT 5 FIRST", "BDAT -1", "BDAT +5"):
        assert cl.c.cmd(arg)[0] == 501, arg
    assert len([v for v in be.violations if "BDAT syntax" in v]) == 5
    cl.send(b"BDAT %d LAST\r\n" % ((64 << 20) + 1))
    assert cl.reply()[0] == 552
    assert cl.closed()


@pytest.mark.deadline(20)
def test_data_still_works_with_chunking(raw):
    from evil_backend import dot_stuff
    be, cl = raw(chunking=True)
    tok = token("data")
    msg = message_bytes(tok, DOTS_BODY)
    assert cl.txn() == 250
    assert cl.c.cmd("DATA")[0] == 354
    cl.send(dot_stuff(msg) + b".\r\n")
    assert cl.reply()[0] == 250
    [m] = be.by_token(tok)
    assert m["data"] == msg and m["via"] == "DATA"
    # DATA after a BDAT chunk of the same transaction: refused
    assert cl.txn() == 250
    cl.send(bdat(b"x\r\n", last=False))
    assert cl.reply()[0] == 250
    assert cl.c.cmd("DATA")[0] == 503
    assert any("DATA after BDAT" in v for v in be.violations)


@pytest.mark.deadline(20)
@pytest.mark.parametrize("kind,arg,code,recorded", [
    ("reply", "554 5.7.1 rejected", 554, False),
    ("reply", "451 4.3.0 try later", 451, False),
    ("reply", "250 2.0.0 fine by me", 250, True),
    ("close", None, None, False),
    ("accept_close", None, None, True),
    ("rst", None, None, False),
])
def test_after_dot_fault_on_bdat_last(raw, kind, arg, code, recorded):
    be, cl = raw(chunking=True, faults=[Fault("after_dot", kind, arg)])
    tok = token("afterdot")
    msg = message_bytes(tok, DOTS_BODY)
    assert cl.txn() == 250
    cut = 10
    cl.send(bdat(msg[:cut], last=False))
    assert cl.reply()[0] == 250   # not the verdict: no after_dot here
    cl.send(bdat(msg[cut:]))
    if code is None:
        assert cl.closed()
    else:
        got, lines = cl.reply()
        assert (got, lines[0]) == (code, arg[4:])
    assert be.count(tok) == (1 if recorded else 0)
    assert [x[1] for x in be.fault_log] == ["after_dot"]


@pytest.mark.deadline(20)
@pytest.mark.parametrize("kind", ["close", "rst"])
def test_mid_body_fault_on_bdat(raw, kind):
    be, cl = raw(chunking=True, faults=[Fault("mid_body", kind)])
    tok = token("midbody")
    msg = message_bytes(tok, b"x" * 200000 + b"\r\n")
    assert cl.txn() == 250
    try:
        cl.send(bdat(msg))
    except OSError:
        pass   # the server closed while the chunk was in flight
    assert cl.closed()
    wait_closed(be)
    assert be.count(tok) == 0 and not be.messages
    assert [x[1] for x in be.fault_log] == ["mid_body"]


@pytest.mark.deadline(20)
def test_mid_body_fault_once_per_message(raw):
    """mid_body is the message's first octets: the first chunk only."""
    be, cl = raw(chunking=True, faults=[Fault("mid_body", "slow", 0.01)])
    msg = message_bytes(token("midonce"))
    assert cl.txn() == 250
    cl.send(bdat(msg[:20], last=False) + bdat(msg[20:40], last=False)
            + bdat(msg[40:]))
    assert [cl.reply()[0] for _ in range(3)] == [250, 250, 250]
    assert [x[1] for x in be.fault_log] == ["mid_body"]
    assert be.messages[0]["data"] == msg


# ====================================================================
# Part 2: through sluice, the backend offering CHUNKING
# ====================================================================

import test_faults as TF  # noqa: E402  (its matrix, outcome classes, FAST)

FAST = TF.FAST
BOUND = TF.REPLY_BOUND


def verbs_seen(be):
    with be.lock:
        return [v for c in be.conns for v in c.verbs]


def bdat_lines(be):
    with be.lock:
        return [l for c in be.conns for l in c.commands
                if l.split(" ", 1)[0].upper() == "BDAT"]


def no_problems(be, sl, results, **kw):
    problems = check_invariants(be, sl, results, BOUND, **kw)
    assert not problems, "\n".join(problems) + "\n" + be.summary()


@pytest.mark.deadline(30)
@pytest.mark.parametrize("pipelined", [False, True], ids=["lockstep", "pipelined"])
def test_sluice_sends_one_bdat_last(evil, sluice, pipelined):
    """Lines starting with "." and "..", and a line that is "." in
    content (".." on the client's wire), arrive byte-exact in one
    BDAT <n> LAST: no stuffing, no final dot, no DATA."""
    be = evil(chunking=True)
    sl = sluice(be, pool=2, **FAST)
    tok = token("bdat")
    res = run_txn(sl, tok, body=DOTS_BODY, pipelined=pipelined, timeout=8)
    assert res.accepted, res
    [m] = be.by_token(tok)
    assert m["data"] == message_bytes(tok, DOTS_BODY)
    assert m["via"] == "BDAT"
    assert bdat_lines(be) == ["BDAT %d LAST" % len(m["data"])]
    assert "DATA" not in verbs_seen(be)
    assert [b[:2] for b in be.conns[m["conn"] - 1].bdats] == [(len(m["data"]), True)]
    no_problems(be, sl, [res])


@pytest.mark.deadline(60)
@pytest.mark.parametrize("xclient", ["yes", "no"])
def test_sluice_bdat_octets_in_the_command_write(evil, sluice, xclient):
    """BDAT n LAST and its n octets leave in one write (small messages):
    the backend finds all of them in with the command line. A command
    line flushed before its octets is caught only when the backend reads
    in between, so several messages (pipelined and not) are sent."""
    be = evil(chunking=True, require_xclient=False)
    sl = sluice(be, pool=2, backend_xclient=xclient, **FAST)
    results = [run_txn(sl, token("onewrite"), body=DOTS_BODY,
                       pipelined=bool(i % 2), timeout=8) for i in range(12)]
    assert all(r.accepted for r in results), results
    with be.lock:
        bdats = [b for c in be.conns for b in c.bdats]
    assert len(bdats) == 12, bdats
    split = [b for b in bdats if b[2] != b[0]]
    assert not split, ("%d of %d BDAT commands arrived without all their "
                       "octets (size, LAST, octets with the command): %r"
                       % (len(split), len(bdats), split))
    if xclient == "yes":
        no_problems(be, sl, results)


@pytest.mark.deadline(30)
def test_sluice_backend_chunking_no_uses_data(evil, sluice):
    be = evil(chunking=True)
    sl = sluice(be, pool=2, backend_chunking="no", **FAST)
    tok = token("nochunk")
    res = run_txn(sl, tok, body=DOTS_BODY, timeout=8)
    assert res.accepted, res
    [m] = be.by_token(tok)
    assert m["data"] == message_bytes(tok, DOTS_BODY)
    assert m["via"] == "DATA"
    assert "BDAT" not in verbs_seen(be)
    no_problems(be, sl, [res])


@pytest.mark.deadline(30)
def test_sluice_chunking_not_offered_uses_data(evil, sluice):
    be = evil(chunking=False)
    sl = sluice(be, pool=2, **FAST)
    tok = token("notoffered")
    res = run_txn(sl, tok, body=DOTS_BODY, timeout=8)
    assert res.accepted, res
    [m] = be.by_token(tok)
    assert m["data"] == message_bytes(tok, DOTS_BODY) and m["via"] == "DATA"
    assert "BDAT" not in verbs_seen(be)
    no_problems(be, sl, [res])


@pytest.mark.deadline(30)
def test_sluice_chunking_per_connection(evil, sluice):
    """The offer is a property of each backend connection: a message goes
    by BDAT exactly when its connection offered CHUNKING."""
    offers = lambda no: no % 2 == 0  # noqa: E731
    be = evil(chunking=offers)
    sl = sluice(be, pool=2, **FAST)
    results = [run_txn(sl, token("perconn"), body=DOTS_BODY, timeout=8)
               for _ in range(4)]
    assert all(r.accepted for r in results), results
    for r in results:
        [m] = be.by_token(r.tok)
        assert m["via"] == ("BDAT" if offers(m["conn"]) else "DATA"), m
    no_problems(be, sl, results)


@pytest.mark.deadline(30)
def test_sluice_bdat_received_header_counted(evil, sluice):
    """backend_xclient = no: sluice's Received header is part of the n
    octets."""
    be = evil(chunking=True, require_xclient=False)
    sl = sluice(be, pool=2, backend_xclient="no", **FAST)
    tok = token("received")
    res = run_txn(sl, tok, body=DOTS_BODY, timeout=8)
    assert res.accepted, res
    [m] = be.by_token(tok)
    msg = message_bytes(tok, DOTS_BODY)
    assert m["via"] == "BDAT"
    assert m["data"].startswith(b"Received: "), m["data"][:200]
    assert m["data"].endswith(msg) and len(m["data"]) > len(msg)
    assert bdat_lines(be) == ["BDAT %d LAST" % len(m["data"])]
    assert not be.violations, be.violations
    assert sl.alive()


# The DATA fault matrix's after-the-dot and mid-body scenarios, with the
# backend offering CHUNKING: the reply to BDAT LAST is the verdict, so the
# same outcome classes hold (test_faults.py).
BDAT_SCENARIOS = [p for p in TF.SCENARIOS
                  if "afterdot" in p.id or "midbody" in p.id]
# Faults after which the backend has not queued the message.
NOT_QUEUED = {("after_dot", "close"), ("after_dot", "rst"),
              ("mid_body", "close"), ("mid_body", "rst")}


@pytest.mark.deadline(30)
@pytest.mark.parametrize("faults,where,expect,opt", BDAT_SCENARIOS)
def test_sluice_bdat_fault_matrix(evil, sluice, faults, where, expect, opt):
    be = evil(faults=faults, chunking=True,
              xclient_reuse=opt.get("xclient_reuse", False))
    sl = sluice(be, pool=2, **FAST)
    time.sleep(0.15)  # the pool's first connections meet the fault
    body = TF.BIG_BODY if opt.get("big") else None
    res = run_txn(sl, token("m"), rcpts=TF.RCPTS, body=body,
                  pipelined=opt.get("pipelined", False), timeout=8)
    problems = TF.check_outcome(res, faults, where, expect, be)
    problems += check_invariants(be, sl, [res], BOUND, allow_dup=True)
    if any((f.stage, f.kind) in NOT_QUEUED or
           (f.kind == "reply" and f.arg[:1] in "45") for f in faults):
        if be.count(res.tok) or res.accepted:
            problems.append("the backend did not queue %s, yet: recorded %d, "
                            "client %r" % (res.tok, be.count(res.tok), res.final))
    be.clear_faults()
    rec, tries = TF.deliver_after_recovery(be, sl, window=6.0)
    if not rec.accepted or be.count(rec.tok) != 1:
        problems.append("pool did not recover within 6 s (%d tries): %r"
                        % (tries, rec))
    problems += [p for p in check_invariants(be, sl, [rec], BOUND)
                 if p not in problems]
    seen = verbs_seen(be)
    if "DATA" in seen or "BDAT" not in seen:
        problems.append("expected BDAT and no DATA at the backend: %r" % seen)
    for m in be.messages:
        if m["via"] != "BDAT":
            problems.append("message %s came by %s" % (m["subject"], m["via"]))
    assert not problems, "\n".join(problems) + "\n--- client ---\n" + \
        TF._describe(res) + "\n--- backend ---\n" + be.summary()
