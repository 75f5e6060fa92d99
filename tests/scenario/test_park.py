"""
Parked sessions (src/session_park.c): an idle session gives up its
bufferevent after session_park_delay and gets it back on the next byte, the
close, its command timeout or the drain, and goes on as if never parked.

Every test runs sluice with session_park_delay = 200ms and metrics on, and
reads sluice_sessions_parked / sluice_session_parkings_total, so that none
passes without a parking having happened. Real Postfix behind, real DNS.
"""

import os
import signal
import time
import uuid

import pytest

import harness
from harness import BLOCKLISTED, CLIENT23, SmtpRaw, dot_stuff

PARK = 0.2  # session_park_delay, seconds


def start(sluice, pf, **settings):
    return sluice(pf, session_park_delay="%dms" % (PARK * 1000),
                  metrics_listen="127.0.0.1:%d" % harness.free_port(), **settings)


def parked(sl):
    return sl.metric("sluice_sessions_parked")


def parkings(sl):
    return sl.metric("sluice_session_parkings_total")


def wait_parked(sl, n, timeout=5):
    """Until n sessions are parked (the gauge is published by the worker
    at once; the page sums the workers' slots)."""
    assert harness.wait_until(lambda: parked(sl) == n, timeout), \
        "parked %r, want %d; log:\n%s" % (parked(sl), n, sl.log()[-3000:])


def connect(sl):
    c = SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=15)
    code, text = c.read_reply()
    assert code == 220, (code, text)
    return c


def finish(sl):
    """Stops sluice; under the sanitizer build, a report fails the test."""
    sl.stop()
    bad = [l for l in sl.log().splitlines()
           if "Sanitizer" in l or "runtime error" in l]
    assert not bad, "\n".join(bad[:20]) + "\n" + sl.log()[-6000:]
    assert sl.exit_code == 0, "exit %r" % sl.exit_code


def message(tok):
    t = tok.encode()
    return (b"From: Park <a@example.net>\r\nTo: <alice@example.com>\r\n"
            b"Subject: " + t + b"\r\nMessage-ID: <" + t + b"@example.net>\r\n"
            b"\r\nParked twice on the way.\r\n")


@pytest.mark.deadline(60)
def test_park_01_pipelined_commands_after_parking(postfix, sluice):
    """Parked after EHLO, then the whole envelope pipelined in one write:
    every reply in order, the message delivered, parked again after it,
    and the gauge back to 0 when the session ends."""
    pf = postfix()
    sl = start(sluice, pf)
    c = connect(sl)
    assert "PIPELINING" in c.ehlo("client23.example")
    wait_parked(sl, 1)
    assert parkings(sl) >= 1
    time.sleep(PARK * 2)  # longer than the delay, still parked
    assert parked(sl) == 1
    tok = "park-%s" % uuid.uuid4().hex[:10]
    c.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\n"
           b"RCPT TO:<nobody@example.com>\r\nDATA\r\n")
    codes = [c.read_reply()[0] for _ in range(4)]
    assert codes == [250, 250, 550, 354], codes
    assert parked(sl) == 0
    # Counted while in DATA (not parkable): the park after the reply may
    # come before Postfix has the message.
    before = parkings(sl)
    c.send(dot_stuff(message(tok)) + b".\r\n")
    assert c.read_reply()[0] == 250
    pf.wait_messages(1, 15, lambda m: m.subject == tok)
    wait_parked(sl, 1)
    assert parkings(sl) == before + 1
    c.send(b"NOOP\r\nQUIT\r\n")
    assert [r[0] for r in c.read_replies(2)] == [250, 221]
    c.close()
    assert harness.wait_until(lambda: sl.metric("sluice_sessions_active") == 0, 5)
    assert parked(sl) == 0
    finish(sl)



@pytest.mark.deadline(60)
def test_park_02_close_while_parked(postfix, sluice):
    """The client closes while parked: the usual disconnect, in the state
    it was in, and nothing left parked or open."""
    pf = postfix()
    sl = start(sluice, pf)
    c = connect(sl)
    c.ehlo("client23.example")
    wait_parked(sl, 1)
    c.close()
    assert harness.wait_until(lambda: sl.metric("sluice_sessions_active") == 0, 5)
    assert parked(sl) == 0
    assert harness.wait_until(lambda: "outcome=disconnect in READY" in sl.log(), 5), \
        sl.log()[-2000:]
    finish(sl)



@pytest.mark.deadline(60)
def test_park_03_timeout_while_parked(postfix, sluice):
    """smtpd_timeout runs on while parked, counted from the last reply, and
    ends with the same 421 4.4.2 as an unparked session's."""
    pf = postfix()
    sl = start(sluice, pf, smtpd_timeout="2s")
    c = connect(sl)
    c.ehlo("client23.example")
    t0 = time.monotonic()
    wait_parked(sl, 1)
    code, text = c.read_reply(timeout=10)
    took = time.monotonic() - t0
    assert code == 421 and text[0].startswith("4.4.2"), (code, text)
    assert 1.5 <= took <= 4, "timeout after %.1f s (smtpd_timeout 2s)" % took
    assert c.pending(1.0) == b""  # then closed, nothing more
    assert harness.wait_until(lambda: sl.metric("sluice_sessions_active") == 0, 5)
    assert parked(sl) == 0
    assert sl.metric("sluice_limit_timeouts_total") == 1
    assert "timeout in state READY" in sl.log()
    finish(sl)



@pytest.mark.deadline(60)
def test_park_04_half_a_line_is_not_idle(postfix, sluice):
    """A command arriving byte by byte is not idle: never parked with half
    a line in its buffer; the line completes and is answered."""
    pf = postfix()
    sl = start(sluice, pf)
    c = connect(sl)
    c.ehlo("client23.example")
    wait_parked(sl, 1)
    n = parkings(sl)
    c.send(b"NO")
    assert harness.wait_until(lambda: parked(sl) == 0, 5)
    time.sleep(PARK * 3)
    assert parked(sl) == 0 and parkings(sl) == n
    c.send(b"OP\r\n")
    assert c.read_reply()[0] == 250
    wait_parked(sl, 1)
    assert c.cmd("QUIT")[0] == 221
    finish(sl)



@pytest.mark.deadline(60)
def test_park_05_drain_reaches_parked_sessions(postfix, sluice):
    """SIGTERM: a parked session gets the drain's 421 4.3.2 like any
    other."""
    pf = postfix()
    sl = start(sluice, pf, shutdown_timeout="5s")
    c = connect(sl)
    c.ehlo("client23.example")
    wait_parked(sl, 1)
    os.kill(sl.proc.pid, signal.SIGTERM)
    code, text = c.read_reply(timeout=10)
    assert code == 421 and text[0].startswith("4.3.2"), (code, text)
    finish(sl)



@pytest.mark.deadline(60)
def test_park_06_zero_never_parks(postfix, sluice):
    """session_park_delay = 0 keeps every session's buffers."""
    pf = postfix()
    sl = sluice(pf, session_park_delay="0",
                metrics_listen="127.0.0.1:%d" % harness.free_port())
    c = connect(sl)
    c.ehlo("client23.example")
    time.sleep(0.6)
    assert parkings(sl) == 0 and parked(sl) == 0
    assert c.cmd("QUIT")[0] == 221
    finish(sl)



@pytest.mark.deadline(60)
def test_park_07_shaped_by_the_command_that_unparks(postfix, sluice):
    """A parked session whose first command shapes it (a bad HELO) has
    its replies trickled from then on, like a never-parked one's: the
    bufferevent made again writes through the trickle, neither stuck nor
    at full speed."""
    pf = postfix()
    sl = start(sluice, pf, weight_helo="10", shape_rate="5",
               smtpd_timeout="30s")
    c = connect(sl)
    wait_parked(sl, 1)
    c.send(b"HELO localhost\r\n")
    assert c.read_reply(timeout=10)[0] == 250
    assert "SHAPED" in sl.log(), sl.log()[-2000:]
    t0 = time.monotonic()
    code, text = c.cmd("NOOP", timeout=10)  # "250 2.0.0 Ok": 14 bytes
    took = time.monotonic() - t0
    assert code == 250, (code, text)
    assert took >= 2.0, "NOOP's reply in %.2f s at 5 B/s" % took
    finish(sl)


@pytest.mark.deadline(60)
def test_park_08_parked_while_waiting_for_the_greeting(postfix, sluice):
    """A client waiting greet_wait for its greeting is parked at accept
    (no bufferevent for those seconds), greeted on time, and parked again
    when idle after it; one that talks first while parked wakes the session,
    is still seen as PREGREET (the bytes it sent counted), and is served."""
    pf = postfix()
    sl = start(sluice, pf, greet_wait="1500ms", shape_threshold="100")
    quiet = SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=15)
    t0 = time.monotonic()
    wait_parked(sl, 1, timeout=1.2)  # before the greeting is due
    assert parkings(sl) == 1
    code, _ = quiet.read_reply()
    took = time.monotonic() - t0
    assert code == 220 and 1.2 <= took <= 5.0, (code, took)
    assert parked(sl) == 0
    quiet.ehlo("client23.example")
    wait_parked(sl, 1)
    assert parkings(sl) == 2

    eager = SmtpRaw(sl.host, sl.port, source="127.0.0.50", timeout=15)
    wait_parked(sl, 2, timeout=1.2)
    eager.send(b"EHLO eager.example\r\n")  # 20 bytes before the greeting
    assert harness.wait_until(lambda: parked(sl) == 1, 1.0), sl.log()[-3000:]
    code, _ = eager.read_reply()
    assert code == 220, code
    assert eager.read_reply()[0] == 250  # the EHLO sent early is answered
    assert harness.wait_until(
        lambda: "client=127.0.0.50 PREGREET" in sl.log() and "count=20" in sl.log(), 5), \
        sl.log()[-3000:]
    assert eager.cmd("QUIT")[0] == 221
    assert quiet.cmd("QUIT")[0] == 221
    finish(sl)


@pytest.mark.deadline(90)
def test_park_09_shaped_session_lent_to_the_trickle(postfix, sluice):
    """A shaped session holds no bufferevent while its reply trickles out
    and its next command trickles in (the trickle keeps those bytes,
    throttle.h "Lent"): the gauge shows it parked in the middle of both,
    every reply arrives whole and at the trickle's rate, a line that
    arrives in parts is one command, and a hang-up while lent is the
    shaped hang-up it would have been."""
    pf = postfix()
    sl = start(sluice, pf, weight_helo="10", shape_rate="5",
               smtpd_timeout="60s")
    c = connect(sl)
    wait_parked(sl, 1)
    c.send(b"HELO localhost\r\n")  # shapes it
    # The HELO reply ("250 <hostname>", ~30 bytes) takes seconds: the
    # session is parked (lent) while it trickles.
    wait_parked(sl, 1, timeout=3)
    before = parkings(sl)
    assert c.read_reply(timeout=20)[0] == 250
    assert "SHAPED" in sl.log(), sl.log()[-2000:]
    # A command sent whole is read at 5 B/s while lent; its reply too.
    t0 = time.monotonic()
    c.send(b"NOOP lent to the trickle\r\n")  # 26 bytes: ~5 s to read
    time.sleep(1.5)
    assert parked(sl) == 1, sl.log()[-3000:]
    code, text = c.read_reply(timeout=30)  # "250 2.0.0 Ok": ~3 s more
    took = time.monotonic() - t0
    assert code == 250 and "Ok" in " ".join(text), (code, text)
    assert took >= 5.0, "26 bytes read and 14 written in %.2f s at 5 B/s" % took
    # Woken for the line and for the end of each reply, lent again after.
    assert parkings(sl) >= before + 2, (parkings(sl), before)
    wait_parked(sl, 1, timeout=3)
    # A line that comes in two parts, lent in between: one command.
    c.send(b"RSET lent")
    time.sleep(2.5)
    assert parked(sl) == 1
    c.send(b" twice\r\n")
    assert c.read_reply(timeout=30)[0] == 250
    # Half a line, then the hang-up while lent.
    c.send(b"NOO")
    time.sleep(1.5)
    assert parked(sl) == 1
    c.close()
    assert harness.wait_until(lambda: parked(sl) == 0, 5), sl.log()[-3000:]
    assert harness.wait_until(lambda: "HANGUP after" in sl.log(), 5), sl.log()[-3000:]
    finish(sl)


@pytest.mark.deadline(60)
def test_park_10_shaped_greeting_trickles_lent(postfix, sluice):
    """A client shaped from its greeting on holds no bufferevent while the
    greeting trickles out (a crowd greeted at once must not hold one each
    for those seconds), and gets the whole greeting at the trickle's rate."""
    pf = postfix()
    sl = start(sluice, pf, dnsbl_sites="bl.test*3", shape_threshold="3",
               shape_rate="5", greet_wait="0s")
    t0 = time.monotonic()
    c = SmtpRaw(sl.host, sl.port, source=BLOCKLISTED, timeout=30)
    # The greeting ("220 <hostname> ESMTP", ~30 bytes) takes seconds.
    time.sleep(1.0)
    assert parked(sl) == 1, sl.log()[-3000:]
    code, text = c.read_reply(timeout=30)
    took = time.monotonic() - t0
    assert code == 220 and "ESMTP" in " ".join(text), (code, text)
    assert took >= 3.0, "greeting in %.2f s at 5 B/s" % took
    assert "SHAPED" in sl.log()
    c.close()
    assert harness.wait_until(lambda: parked(sl) == 0, 5), sl.log()[-3000:]
    finish(sl)


@pytest.mark.deadline(60)
def test_park_11_shaped_slowloris_meets_its_deadline_while_lent(postfix, sluice):
    """A shaped client that dribbles a line without ever ending it is cut
    off at its command's deadline (smtpd_timeout) although the session
    is lent to the trickle, which reads the bytes: the trickle wakes it
    once the line has dribbled for that long."""
    pf = postfix()
    sl = start(sluice, pf, weight_helo="10", shape_rate="5", smtpd_timeout="3s")
    c = connect(sl)
    c.send(b"HELO localhost\r\n")  # shapes it
    assert c.read_reply(timeout=20)[0] == 250
    wait_parked(sl, 1, timeout=3)
    t0 = time.monotonic()
    for _ in range(24):  # a byte every 0.5 s, never a line feed
        if "command deadline passed" in sl.log():
            break
        c.send(b"x")
        time.sleep(0.5)
    took = time.monotonic() - t0
    assert "command deadline passed" in sl.log(), sl.log()[-3000:]
    assert 2.5 <= took <= 8.0, "cut off after %.1f s (smtpd_timeout 3 s)" % took
    c.close()
    finish(sl)
