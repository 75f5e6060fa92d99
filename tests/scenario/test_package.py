"""
The INSTALLED Debian package at work (run by scripts/test-deb.sh after
`dpkg -i`; skipped unless SLUICE_PACKAGE_TEST=1): /usr/sbin/sluice with
the packaged /etc/sluice/sluice.conf (which sets user = sluice), the
packaged /var/lib/sluice and /var/spool/sluice, and NOTIFY_SOCKET as
systemd sets it, in front of a real Postfix with a real DNS server on
loopback. A message is delivered; the worker runs as the package's user
and writes its store in the package's state directory; the Grafana
dashboard's queries are checked against the live /metrics page. With
SLUICE_DEB (the .deb), `dpkg -i` over the running sluice upgrades it in
place (postinst's sluicectl upgrade) with a session open across it.

Every wait is bounded in time, every loop in count and time.
"""

import os
import pwd
import socket
import subprocess
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, SmtpRaw, dot_stuff

INSTALLED = "/usr/sbin/sluice"
CONF = "/etc/sluice/sluice.conf"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(
    os.environ.get("SLUICE_PACKAGE_TEST") != "1",
    reason="needs the installed package (scripts/test-deb.sh)")


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective
    return None


def start_installed(pf, dns, workdir, monkeypatch, metrics_port):
    """/usr/sbin/sluice with the packaged configuration file as is (its
    state_dir, so that the packaged sluicectl finds it); only what ties it
    to this test's Postfix and DNS comes from -o. Returns (sluice, the
    notification socket) once READY=1 came."""
    listen = "127.0.0.1:%d" % harness.free_port()
    notify_name = "@sluice-pkg-%s" % uuid.uuid4().hex
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + notify_name[1:])
    monkeypatch.setenv("NOTIFY_SOCKET", notify_name)
    sl = harness.Sluice(os.path.join(workdir, "sluice"), {"listen": listen}, overrides=[
        "listen=" + listen,
        "backend=127.0.0.1:%d" % pf.port,
        "dns_servers=127.0.0.1:%d" % dns.port,
        "myhostname=" + harness.SLUICE_HOSTNAME,
        "metrics_listen=127.0.0.1:%d" % metrics_port,
        "workers=1",
        "greet_wait=0s",
    ], binary=INSTALLED)
    sl.conf = CONF
    harness.make_world_dir(sl.dir)
    try:
        sl.start()
        rx.settimeout(15)
        got = b""
        for _ in range(20):
            got = rx.recv(4096)
            if b"READY=1" in got:
                break
        assert b"READY=1" in got, got
    except BaseException:
        rx.close()
        sl.stop()
        raise
    return sl, rx


def message(tok):
    return ("From: <a@example.net>\r\nTo: <alice@example.com>\r\n"
            "Subject: %s\r\nMessage-ID: <%s@example.net>\r\n\r\n"
            "Through the installed package.\r\n" % (tok, tok)).encode()


@pytest.mark.deadline(60)
def test_package_01_installed_binary_delivers(postfix, dns, workdir, monkeypatch):
    pf = postfix()
    sluice_pw = pwd.getpwnam("sluice")
    metrics_port = harness.free_port()
    sl, rx = start_installed(pf, dns, workdir, monkeypatch, metrics_port)
    try:
        workers = harness.wait_until(lambda: harness.live_processes(1, sl.proc.pid), 5)
        assert workers, "no worker"
        for w in workers:
            assert uid_of(w) == sluice_pw.pw_uid, \
                "worker %d does not run as sluice (packaged user = sluice)" % w
        tok = "pkg-%s" % uuid.uuid4().hex[:10]
        msg = message(tok)
        with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=20) as c:
            code, text = c.read_reply()
            assert code == 220, (code, text)
            c.ehlo(CLIENT23_NAME)
            _, final = c.send_message("a@example.net", ["alice@example.com"], dot_stuff(msg))
            assert final[0] == 250, final
            assert c.cmd("QUIT")[0] == 221
        assert pf.wait_messages(1, 20, lambda m: m.subject == tok), \
            "not delivered; sluice log:\n" + sl.log()[-3000:]
        # The worker's store lives in the packaged state directory.
        owned = [f for f in os.listdir("/var/lib/sluice")
                 if os.stat(os.path.join("/var/lib/sluice", f)).st_uid == sluice_pw.pw_uid]
        assert owned, "no store file of user sluice in /var/lib/sluice: %r" \
            % os.listdir("/var/lib/sluice")
        r = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "scripts/check-dashboard.py"),
                            "--url", "http://127.0.0.1:%d/metrics" % metrics_port],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        assert r.returncode == 0, r.stdout.decode(errors="replace")
    finally:
        rx.close()
        rc = sl.stop()
    assert rc == 0, "sluice exit %r; log:\n%s" % (rc, sl.log()[-3000:])


@pytest.mark.deadline(90)
@pytest.mark.skipif(not os.environ.get("SLUICE_DEB"), reason="needs SLUICE_DEB=the .deb")
def test_package_02_upgrade_in_place(postfix, dns, workdir, monkeypatch):
    """dpkg -i of the package over a running sluice: postinst has it execute
    the new /usr/sbin/sluice in place (sluicectl upgrade); same pid, new
    program, and a session opened before delivers after."""
    pf = postfix()
    sl, rx = start_installed(pf, dns, workdir, monkeypatch, harness.free_port())
    try:
        sup = sl.proc.pid
        tok = "pkg-upg-%s" % uuid.uuid4().hex[:10]
        with SmtpRaw(sl.host, sl.port, source=CLIENT23, timeout=30) as c:
            assert c.read_reply()[0] == 220
            c.ehlo(CLIENT23_NAME)
            c.expect("MAIL FROM:<a@example.net>", 250)
            r = subprocess.run(["dpkg", "-i", os.environ["SLUICE_DEB"]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            out = r.stdout.decode(errors="replace")
            assert r.returncode == 0, out
            assert "sluice: upgraded: pid %d runs %s" % (sup, INSTALLED) in out, \
                out + sl.log()[-3000:]
            assert sl.alive() and sl.proc.pid == sup
            assert os.stat("/proc/%d/exe" % sup).st_ino == os.stat(INSTALLED).st_ino
            c.expect("RCPT TO:<alice@example.com>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(message(tok)) + b".\r\n")
            assert c.read_reply(timeout=30)[0] == 250
            assert c.cmd("QUIT")[0] == 221
        assert pf.wait_messages(1, 20, lambda m: m.subject == tok), sl.log()[-3000:]
    finally:
        rx.close()
        rc = sl.stop()
    assert rc == 0, "sluice exit %r; log:\n%s" % (rc, sl.log()[-3000:])
