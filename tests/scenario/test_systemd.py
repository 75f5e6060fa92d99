"""
systemd notification scenarios (Type=notify, sd_notify(3)): the real
sluice started with NOTIFY_SOCKET pointing at a datagram socket the test
listens on, the way systemd starts it, against a real Postfix. No systemd
is needed: the test reads the datagrams itself.

Checked: READY=1 only once every worker has said it is ready (their log
lines come first), STATUS= with sessions and shaped sessions (a changed
count after a session opens, and after a deny-listed client is shaped), RELOADING=1 then READY=1 around
SIGHUP, a refused reload that says so in STATUS= without RELOADING=1,
STOPPING=1 on SIGTERM, every datagram sent by the supervisor itself
(systemd's NotifyAccess=main drops others), both abstract ('@') and path
sockets.

Every wait is bounded in time, every loop in count and time.
"""

import os
import signal
import socket
import struct
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw


class NotifySocket:
    """A listening notification socket: datagrams with the sender's pid."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if path.startswith("@"):
            self.sock.bind("\0" + path[1:])
        else:
            self.sock.bind(path)
        self.env = path
        self.got = []  # [(pid, {key: value}, raw text)]

    def close(self):
        self.sock.close()

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data, anc, _, _ = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:struct.calcsize("3i")])[0]
        text = data.decode("utf-8", errors="replace")
        fields = dict(l.split("=", 1) for l in text.split("\n") if "=" in l)
        self.got.append((pid, fields, text))
        return self.got[-1]

    def wait_for(self, key, timeout=10, pred=None):
        """The next datagram that has key (and satisfies pred)."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            m = self._recv(left)
            if m and key in m[1] and (pred is None or pred(m[1])):
                return m
        raise AssertionError("no %s within %s s; got %r" % (key, timeout,
                                                            [g[2] for g in self.got]))


@pytest.fixture
def notify(monkeypatch, workdir):
    made = []

    def make(abstract=True):
        name = ("@sluice-test-%s" % uuid.uuid4().hex) if abstract else \
            os.path.join(workdir, "notify.sock")
        n = NotifySocket(name)
        made.append(n)
        # sluice inherits the test's environment (harness.Sluice.start).
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        return n

    yield make
    for n in made:
        n.close()


def connect(sl):
    c = SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=10)
    code, text = c.read_reply()
    assert code == 220, (code, text)
    return c


@pytest.mark.deadline(60)
def test_systemd_01_ready_status_reload_stopping(postfix, sluice, notify):
    pf = postfix()
    n = notify(abstract=True)
    sl = sluice(pf, workers=2, shutdown_timeout="5s")
    sup = sl.proc.pid

    pid, f, _ = n.wait_for("READY", 15)
    assert f["READY"] == "1"
    assert pid == sup, "READY=1 from pid %r, not the supervisor %d" % (pid, sup)
    # Every worker was ready before READY=1 was sent. Their "ready" log
    # lines go through each worker's log queue and may follow the
    # datagram by a moment; there are exactly two of them.
    assert harness.wait_until(lambda: sl.log().count(": ready pid=") == 2, 3), \
        sl.log()[-3000:]
    assert "STATUS" in f and "0 sessions, 0 shaped" in f["STATUS"], f
    assert "2 workers" in f["STATUS"], f

    # An open session shows in the next STATUS= (sent every 2 s on change).
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        pid, f, _ = n.wait_for("STATUS", 8,
                               lambda x: x["STATUS"].startswith("1 sessions"))
        assert pid == sup
        # SIGHUP: RELOADING=1, then READY=1 once the new workers accept.
        os.kill(sup, signal.SIGHUP)
        pid, f, _ = n.wait_for("RELOADING", 10)
        assert f["RELOADING"] == "1" and pid == sup
        assert int(f["MONOTONIC_USEC"]) > 0, f
        pid, f, _ = n.wait_for("READY", 10)
        assert pid == sup
        assert harness.wait_until(lambda: sl.log().count(": ready pid=") == 4, 3), \
            sl.log()[-3000:]
        # The session opened before the reload is still served.
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("QUIT")[0] == 221

    os.kill(sup, signal.SIGTERM)
    pid, f, _ = n.wait_for("STOPPING", 10)
    assert f["STOPPING"] == "1" and pid == sup
    assert "stopping" in f.get("STATUS", ""), f
    assert harness.wait_until(lambda: not sl.alive(), 10), "sluice did not exit"
    assert sl.proc.returncode == 0, "exit %r (99: a sanitizer report); log:\n%s" \
        % (sl.proc.returncode, sl.log()[-3000:])
    assert all(g[0] == sup for g in n.got), \
        "datagram from another process: %r" % [(g[0], g[2]) for g in n.got]


@pytest.mark.deadline(45)
def test_systemd_02_path_socket_shaped_status_refused_reload(postfix, sluice, notify, workdir):
    pf = postfix()
    n = notify(abstract=False)
    deny = os.path.join(workdir, "deny.cidr")
    with open(deny, "w") as fh:
        fh.write("127.0.0.24/32\n")
    os.chmod(deny, 0o644)
    sl = sluice(pf, workers=1, cidr_deny_file=deny, shape_rate="1000")
    sup = sl.proc.pid
    n.wait_for("READY", 15)
    # A deny-listed client is shaped: STATUS= counts it.
    shaped = SmtpRaw(sl.host, sl.port, source="127.0.0.24", timeout=20)
    try:
        assert shaped.read_reply()[0] == 220
        pid, f, _ = n.wait_for("STATUS", 8, lambda x: x["STATUS"].startswith("1 sessions, 1 shaped"))
        assert pid == sup
    finally:
        shaped.close()
    with open(sl.conf, "a") as fh:
        fh.write("no_such_setting = 1\n")
    os.kill(sup, signal.SIGHUP)
    pid, f, _ = n.wait_for("STATUS", 10, lambda x: "refused" in x["STATUS"])
    assert pid == sup
    assert "no_such_setting" in f["STATUS"], f
    assert not [g for g in n.got if "RELOADING" in g[1]], \
        "RELOADING=1 for a refused configuration: %r" % [g[2] for g in n.got]
    # Still serving on the old configuration.
    with connect(sl) as c:
        assert c.cmd("QUIT")[0] == 221
    assert sl.alive()


@pytest.mark.deadline(30)
def test_systemd_03_bad_notify_socket_ignored(postfix, sluice, monkeypatch):
    """A NOTIFY_SOCKET that is not a Unix socket address is logged and
    ignored: sluice runs as without systemd."""
    pf = postfix()
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    sl = sluice(pf, workers=1)
    with connect(sl) as c:
        assert c.cmd("QUIT")[0] == 221
    assert "not a Unix socket" in sl.log(), sl.log()[-2000:]
