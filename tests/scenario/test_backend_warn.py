"""
Actionable errors from the mail server's side (issue 10 item 9), against a
real Postfix configured each way:

  - XCLIENT not offered to sluice (smtpd_authorized_xclient_hosts empty or
    naming another host): `sluice -n --check-backend` says so and names the
    setting (exit 1); live sessions get one MISCONFIGURED warning a minute
    and the counter counts every refusal;
  - IPv6 clients while Postfix has inet_protocols = ipv4 (the harness
    default): sluice listens on [::1], the client connects over IPv6, and
    Postfix answers XCLIENT with 501 5.5.4 Bad ADDR syntax; the warning
    names inet_protocols; --check-backend reports it (exit 1 only when a
    listener can take IPv6 clients);
  - a healthy backend: --check-backend exits 0; an unreachable one exits 2.

Every wait is bounded in time, every loop in count and time.
"""

import os
import re
import socket
import subprocess

import pytest

import harness
from harness import CLIENT23, SmtpRaw

MISCONF = re.compile(r"warning: backend: MISCONFIGURED problem=(\w+) ")


def check_backend(sl, *extra):
    r = subprocess.run([sl.binary, "-n", "--check-backend", "-c", sl.conf]
                       + [a for o in extra for a in ("-o", o)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=80)
    return r.returncode, r.stdout.decode(errors="replace")




def refused_once(host, port, family=socket.AF_INET, source=CLIENT23):
    """One client session whose RCPT (or MAIL) gets 451 4.3.0."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(20)
    s.bind((source, 0))
    s.connect((host, port))
    c = SmtpRaw.__new__(SmtpRaw)
    c.timeout, c.sock, c.buf, c.transcript, c.tls = 20, s, b"", [], False
    with c:
        code, _ = c.read_reply()
        assert code == 220
        c.ehlo("client.example")
        code, text = c.cmd("MAIL FROM:<a@example.net>", timeout=30)
        if code == 250:
            code, text = c.cmd("RCPT TO:<alice@example.com>", timeout=30)
        assert code == 451 and text[0].startswith("4.3.0"), (code, text)
        c.cmd("QUIT", timeout=5)


def the_one_warning(sl, problem, times):
    """After `times` refusals: the counter says so, and the log holds one
    MISCONFIGURED line (one a minute, however many sessions hit it)."""
    assert harness.wait_until(lambda: sl.metric(
        'sluice_backend_problems_total{problem="%s"}' % problem) >= times, 5)
    lines = [l for l in sl.log().splitlines() if MISCONF.search(l)]
    assert len(lines) == 1, lines
    assert "problem=%s " % problem in lines[0], lines[0]
    return lines[0]


@pytest.mark.deadline(60)
def test_backend_warn_01_check_backend_healthy_and_unreachable(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    rc, out = check_backend(sl)
    assert rc == 0, out
    assert re.search(r"^  ADDR  yes$", out, re.M), out
    for attr in ("NAME", "HELO", "PROTO"):
        assert re.search(r"^  %-5s yes$" % attr, out, re.M), out
    assert "sluice connects from 127.0.0.1" in out
    assert out.rstrip().endswith("backend check: ok"), out
    # The harness's Postfix has inet_protocols = ipv4: reported, but no
    # listener takes IPv6 clients, so not a failure ...
    assert "Bad ADDR syntax" in out and "inet_protocols" in out, out
    # ... until one does.
    rc, out = check_backend(sl, "listen=127.0.0.1:%d [::1]:%d" % (
        harness.free_port(), harness.free_port()))
    assert rc == 1 and "backend check: MISCONFIGURED" in out, out
    rc, out = check_backend(sl, "backend=127.0.0.1:%d" % harness.free_port())
    assert rc == 2 and "cannot connect" in out and "UNREACHABLE" in out, out


@pytest.mark.deadline(90)
@pytest.mark.parametrize("xclient_hosts", ["", "127.0.0.2"])
def test_backend_warn_02_xclient_not_offered(postfix, sluice, xclient_hosts):
    pf = postfix(xclient_hosts=xclient_hosts,
                 allow_log=("insufficient authorization",))
    sl = sluice(pf, metrics_listen="127.0.0.1:%d" % harness.free_port())
    rc, out = check_backend(sl)
    assert rc == 1, out
    assert "XCLIENT offered: no" in out or re.search(r"^  ADDR  NO$", out, re.M), out
    assert "smtpd_authorized_xclient_hosts" in out and "127.0.0.1" in out, out

    # Sent anyway, XCLIENT gets Postfix's authorisation refusal: the text
    # tests/unit/test_backend_warn.c classifies as xclient_unauthorized.
    with SmtpRaw("127.0.0.1", pf.port) as c:
        assert c.read_reply()[0] == 220
        c.ehlo("sluice.test")
        code, text = c.cmd("XCLIENT ADDR=192.0.2.1")
        assert (code, text[0]) == (550, "5.7.0 Error: insufficient authorization"), \
            (code, text)

    for _ in range(3):
        refused_once(sl.host, sl.port)
    line = the_one_warning(sl, "xclient_not_offered", 3)
    assert "smtpd_authorized_xclient_hosts" in line


@pytest.mark.deadline(90)
def test_backend_warn_03_ipv6_client_postfix_ipv4_only(postfix, sluice_settings,
                                                       workdir):
    pf = postfix(allow_log=("Bad ADDR syntax",))
    p4, p6 = harness.free_port(), harness.free_port()
    settings = sluice_settings(pf, listen="127.0.0.1:%d, [::1]:%d" % (p4, p6),
                               metrics_listen="127.0.0.1:%d" % harness.free_port())
    sl = harness.Sluice(os.path.join(workdir, "sluice"), settings)
    sl.host, sl.port = "127.0.0.1", p4  # the harness waits for this one
    sl.write_config()
    sl.start()
    try:
        for _ in range(3):
            refused_once("::1", p6, socket.AF_INET6, "::1")
        line = the_one_warning(sl, "xclient_ipv6", 3)
        assert "501 5.5.4 Bad ADDR syntax" in line, line
        assert "inet_protocols" in line, line
        # IPv4 clients are unaffected.
        assert sl.metric('sluice_backend_problems_total{problem="xclient_not_offered"}') == 0
        rc, out = check_backend(sl)
        assert rc == 1 and "inet_protocols" in out, out
    finally:
        sl.stop()
        if not sl.alive() and sl.exit_code not in (0, None):
            print(sl.log()[-4000:])
