"""
Replies reach the client, in order, whichever way they leave (session.c):
written straight to the socket at the end of the turn that made them, or,
when the client's socket is full, carried by libevent's write event until
the client reads again; and the last reply before a close (QUIT's 221)
arrives before the close.

The client socket has a small receive buffer and a small MSS (TCP_MAXSEG
before connect: the kernel sizes sluice's send buffer from the MSS), so
that a few kilobytes of replies fill both buffers and the rest waits in
sluice. A real Postfix is the backend (one delivery in test 03).
"""

import fcntl
import socket
import struct
import termios
import time
import uuid

import pytest

from harness import CLIENT23, CLIENT23_NAME

MSS = 88          # TCP_MIN_MSS: the smallest the kernel takes
RCVBUF = 1024     # doubled by the kernel, then its minimum
COMMANDS = 900    # replies of ~35 bytes: several times what the buffers hold


def client(sl):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
    s.bind((CLIENT23, 0))
    s.connect((sl.host, sl.port))
    s.settimeout(30)
    return s


def read_until(s, end, limit=10 << 20):
    got = b""
    while not got.endswith(end):
        d = s.recv(65536)
        assert d, "closed early; got %r" % got[-300:]
        got += d
        assert len(got) < limit
    return got


def read_to_close(s):
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            return got
        got += d


def replies(data):
    """Codes of the complete replies (last lines) in data, in order."""
    return [int(l[:3]) for l in data.split(b"\r\n") if len(l) > 3 and l[3:4] == b" "]


def flood():
    """RCPT outside a transaction (503, an error) and every tenth a NOOP
    (250, junk: 90 stay under the junk limit): distinct codes in a known
    order."""
    cmds, codes = [], []
    for i in range(COMMANDS):
        if i % 10 == 9:
            cmds.append(b"NOOP\r\n")
            codes.append(250)
        else:
            cmds.append(b"RCPT TO:<alice@example.com>\r\n")
            codes.append(503)
    return b"".join(cmds), codes


def settings():
    # Errors past smtpd_hard_error_limit would close the session; the
    # ERRORS signal must not shape it (the trickle has its own tests).
    return dict(smtpd_hard_error_limit="1000", shape_threshold="1000000",
                fast_lane="no")


def start(sl):
    s = client(sl)
    read_until(s, b"\r\n")
    s.sendall(b"EHLO " + CLIENT23_NAME.encode() + b"\r\n")
    read_until(s, b"250 8BITMIME\r\n")
    return s


def send_unread(s, data):
    """Sends data without reading (the client's buffer fills), then waits
    so that sluice has answered all it can; returns the bytes the client's
    kernel holds unread."""
    s.setblocking(False)
    sent, t0 = 0, time.monotonic()
    while sent < len(data) and time.monotonic() - t0 < 20:
        try:
            sent += s.send(data[sent:])
        except BlockingIOError:
            time.sleep(0.05)
    assert sent == len(data), "sluice stopped reading: %d of %d" % (sent, len(data))
    time.sleep(2)
    s.setblocking(True)
    s.settimeout(30)
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def flooded(postfix, sluice, after=b""):
    """A session sent the flood (and after) without reading: sluice,
    the socket, the reply codes due, the bytes the client holds unread."""
    sl = sluice(postfix(), **settings())
    s = start(sl)
    data, codes = flood()
    return sl, s, codes, send_unread(s, data + after)


@pytest.mark.deadline(90)
def test_write_01_replies_reach_a_client_that_reads_late(postfix, sluice):
    sl, s, codes, queued = flooded(postfix, sluice)
    got = b""
    while len(replies(got)) < len(codes):
        d = s.recv(65536)
        assert d, "closed after %d replies" % len(replies(got))
        got += d
    assert replies(got) == codes
    assert queued < len(got), "the client's buffer held every reply: nothing waited in sluice"
    s.sendall(b"NOOP\r\n")  # the session goes on: a reply leaves at once
    assert replies(read_until(s, b"\r\n")) == [250]
    s.sendall(b"QUIT\r\n")
    assert replies(read_until(s, b"\r\n")) == [221]
    assert s.recv(100) == b""
    s.close()
    assert sl.alive()


@pytest.mark.deadline(90)
def test_write_02_quit_after_a_full_socket_is_answered_before_the_close(postfix, sluice):
    sl, s, codes, _ = flooded(postfix, sluice, b"QUIT\r\n")
    got = read_to_close(s)
    assert replies(got) == codes + [221], replies(got)[-5:]
    assert got.endswith(b"221 2.0.0 Bye\r\n")
    s.close()
    assert sl.alive()


@pytest.mark.deadline(60)
def test_write_03_server_answer_then_quit_then_close(postfix, sluice):
    """The 250 after the dot is the server's, relayed outside the input
    loop; QUIT pipelined after the dot waits for it: 250, 221, close."""
    pf = postfix()
    sl = sluice(pf)
    tok = "scn-w03-" + uuid.uuid4().hex[:10]
    s = client(sl)
    s.settimeout(30)
    read_until(s, b"\r\n")
    s.sendall(b"EHLO " + CLIENT23_NAME.encode() + b"\r\n")
    read_until(s, b"250 8BITMIME\r\n")
    s.sendall(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
    assert replies(read_until(s, b"354 End data with <CR><LF>.<CR><LF>\r\n")) == [250, 250, 354]
    s.sendall(b"Subject: " + tok.encode() + b"\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    got = read_to_close(s)
    assert replies(got) == [250, 221], got
    s.close()
    assert [m.user for m in pf.wait_messages(1, 15, lambda m: m.subject == tok)] == ["alice"]
    assert sl.alive()
