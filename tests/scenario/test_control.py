"""
sluicectl scenarios: the control socket of a running sluice in front of a
real Postfix, with the session's dnsmasq serving the DNS lists
(bl.test lists 127.0.0.99 = BLOCKLISTED; 127.0.0.23 = CLIENT23 is clean
and forward-confirmed).

What deny does (control.c): the client is shaped from its first byte for
shape_time whatever its score (no pass, no allow file, no DNSWL lowers
it); its mail is still delivered if it waits. allow: never shaped, no DNS
list look-up. Both live in the store and survive SIGHUP and a restart.

Shaping is seen where an administrator sees it: `sluicectl sessions
--json` (the workers' snapshot, at most a second old) and the log's
SHAPED line. Every wait is bounded in time, every loop in count and time.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest

import harness
from harness import BLOCKLISTED, CLIENT23, SmtpRaw

SHAPING = {
    "dnsbl_sites": "bl.test*3",
    "greet_wait": "1s",
    "shape_threshold": "3",
    "shape_rate": "5",
    "shape_time": "60s",
}


def sluicectl_bin():
    """sluicectl next to the sluice under test (build-san/ or the repo)."""
    env = os.environ.get("SLUICECTL_BIN")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(harness.sluice_bin())), "sluicectl")
    return here if os.access(here, os.X_OK) else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "sluicectl")


_USED = []


@pytest.fixture(autouse=True)
def sanitizer_reports():
    """After the test (and after its sluice stopped: this fixture is set up
    first, so torn down last), the logs of every sluice sluicectl talked to
    must hold no ASan/UBSan report (the sanitizer build runs this too)."""
    del _USED[:]
    yield
    reports = [l for sl in _USED for l in sl.log().splitlines()
               if "Sanitizer" in l or "runtime error" in l]
    if reports:
        pytest.fail("sanitizer reports:\n" + "\n".join(reports[:20]), pytrace=False)


def ctl(sl, *args, conf=True, timeout=30):
    """Runs sluicectl against sl: (exit code, stdout, stderr)."""
    if sl not in _USED:
        _USED.append(sl)
    cmd = [sluicectl_bin()] + (["-c", sl.conf] if conf else []) + list(args)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def ctl_json(sl, *args):
    rc, out, err = ctl(sl, *args, "--json")
    assert rc == 0, "sluicectl %s: %d %s" % (args, rc, err)
    return json.loads(out)


def session_row(sl, source, timeout=6):
    """The snapshot row of the newest session from source, waiting for it."""
    found = []

    def seen():
        rows = [r for r in ctl_json(sl, "sessions")["sessions"] if r["addr"] == source]
        found[:] = sorted(rows, key=lambda r: r["id"])[-1:]
        return bool(found)
    assert harness.wait_until(seen, timeout), "no session from %s in sluicectl sessions" % source
    return found[0]


def wait_row(sl, source, pred, timeout=8):
    last = []

    def ok():
        rows = [r for r in ctl_json(sl, "sessions")["sessions"] if r["addr"] == source]
        last[:] = rows
        return any(pred(r) for r in rows)
    assert harness.wait_until(ok, timeout, interval=0.2), \
        "no session from %s as wanted; rows %r" % (source, last)


def open_client(sl, source):
    """A TCP connection from source to sluice (not read from: shaped or
    not, its greeting waits in the socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((sl.host, sl.port))
    return s


def verdict(sl, source):
    """Connects from source and returns its snapshot row once the verdict
    is in (greet_wait and the DNS lists done): shaped, or greeted unshaped."""
    s = open_client(sl, source)
    try:
        row = {}

        def decided():
            rows = sorted((r for r in ctl_json(sl, "sessions")["sessions"]
                           if r["addr"] == source), key=lambda r: r["id"])
            if rows and (rows[-1]["phase"] != "greeting" or rows[-1]["shaped"]):
                row.update(rows[-1])
                return True
            return False
        assert harness.wait_until(decided, 10, interval=0.2), \
            "no verdict for %s; log:\n%s" % (source, sl.log()[-3000:])
        return row
    finally:
        s.close()


def wait_log(sl, pattern, timeout=10):
    import re
    assert harness.wait_until(lambda: re.search(pattern, sl.log()), timeout), \
        "log never showed %r:\n%s" % (pattern, sl.log()[-3000:])


# -------------------------------------------------------------------- tests

def test_ctl_socket_mode_and_status(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, workers=2)
    path = os.path.join(sl.settings["state_dir"], "control.sock")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid() == 0
    # the port listens before the workers run: wait for both to publish
    assert harness.wait_until(lambda: len(ctl_json(sl, "status")["workers"]) == 2, 10)
    s = ctl_json(sl, "status")
    assert s["sessions"]["open"] == 0 and set(s["sessions"]["by_phase"]) >= {
        "greeting", "helo", "mail", "rcpt", "data"}
    for w in s["workers"]:
        assert set(w["pool"]) == {"open", "lent", "waiting"}
    rc, out, err = ctl(sl, "status")
    assert rc == 0 and "sessions: 0 open" in out and "pool-open" in out
    # a client that is not root (nor sluice's own uid) cannot even connect
    nobody = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             sluicectl_bin(), "-s", path, "status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert nobody.returncode == 3 and b"Permission denied" in nobody.stderr


def test_ctl_usage_and_unreachable(postfix, sluice, workdir):
    pf = postfix()
    sl = sluice(pf)
    for args, want in ((["bogus"], "unknown command"), (["allow"], "takes 1 to 2"),
                       (["deny", "192.0.2.7/24"], "host bits"),
                       (["allow", "192.0.2.1", "soon"], "not a duration"),
                       (["status", "--shaped"], "--shaped goes with sessions")):
        rc, out, err = ctl(sl, *args)
        assert rc == 2 and want in err, (args, rc, err)
    rc, out, err = ctl(sl, "-s", os.path.join(workdir, "nothing.sock"), "status", conf=False)
    assert rc == 3 and "cannot reach sluice" in err
    # the daemon refuses a bad request by itself too (socat-style client)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(os.path.join(sl.settings["state_dir"], "control.sock"))
        s.sendall(b"explode now\n")
        assert s.recv(200).startswith(b"ERR unknown command 'explode'")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(os.path.join(sl.settings["state_dir"], "control.sock"))
        s.sendall(b"x" * 600)
        assert s.recv(200).startswith(b"ERR request line too long")
    assert sl.alive()


def test_ctl_allow_deny_survive_reload_and_restart(postfix, sluice, dns):
    pf = postfix()
    sl = sluice(pf, **SHAPING)
    # Without entries: the listed client is shaped, the clean one is not.
    assert verdict(sl, BLOCKLISTED)["shaped"]
    assert not verdict(sl, CLIENT23)["shaped"]

    rc, out, err = ctl(sl, "allow", BLOCKLISTED)
    assert rc == 0 and "allow %s/32" % BLOCKLISTED in out and "until removed" in out, err
    rc, out, err = ctl(sl, "deny", CLIENT23, "1h")
    assert rc == 0 and "deny  %s/32" % CLIENT23 in out and "until 20" in out, err

    def check_entries(when):
        entries = {e["net"]: e for e in ctl_json(sl, "list")["entries"]}
        assert set(entries) == {BLOCKLISTED + "/32", CLIENT23 + "/32"}, (when, entries)
        assert entries[BLOCKLISTED + "/32"]["kind"] == "allow"
        assert entries[BLOCKLISTED + "/32"]["expires_ms"] == 0
        assert entries[CLIENT23 + "/32"]["kind"] == "deny"
        assert 3500 <= entries[CLIENT23 + "/32"]["ttl_s"] <= 3600
        r = verdict(sl, BLOCKLISTED)
        assert not r["shaped"] and r["trusted"] and "ALLOWLIST" in r["signals"], (when, r)
        assert "DNSBL" not in r["signals"]
        r = verdict(sl, CLIENT23)
        assert r["shaped"] and "DENYLIST" in r["signals"], (when, r)

    check_entries("set")
    wait_log(sl, r"client=%s ALLOWLIST weight=0 score=0 %s/32" % (BLOCKLISTED.replace(".", r"\."),
                                                                  BLOCKLISTED.replace(".", r"\.")))
    wait_log(sl, r"client=%s SHAPED" % CLIENT23.replace(".", r"\."))

    os.kill(sl.proc.pid, signal.SIGHUP)
    wait_log(sl, "configuration reloaded")
    check_entries("after SIGHUP")

    sl.stop()
    assert not os.path.exists(os.path.join(sl.settings["state_dir"], "control.sock"))
    sl.start()
    check_entries("after restart")

    # forget: the allow entry goes, the DNS list counts again
    rc, out, err = ctl(sl, "forget", BLOCKLISTED)
    assert rc == 0 and "entry removed" in out, (out, err)
    assert [e["net"] for e in ctl_json(sl, "list")["entries"]] == [CLIENT23 + "/32"]
    r = verdict(sl, BLOCKLISTED)
    assert r["shaped"] and "DNSBL" in r["signals"], r
    rc, out, err = ctl(sl, "forget", CLIENT23)
    assert rc == 0 and ctl_json(sl, "list")["entries"] == []
    assert not verdict(sl, CLIENT23)["shaped"]


def test_ctl_deny_network_and_expiry(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **SHAPING)
    # a network entry covers its addresses; a more specific allow wins
    assert ctl(sl, "deny", "127.0.0.0/24", "2s")[0] == 0
    assert ctl(sl, "allow", "127.0.0.23")[0] == 0
    assert not verdict(sl, CLIENT23)["shaped"]
    assert verdict(sl, "127.0.0.24")["shaped"]
    time.sleep(2.2)  # the deny entry's TTL passes: no publication needed
    assert not verdict(sl, "127.0.0.24")["shaped"]
    assert [e["net"] for e in ctl_json(sl, "list")["entries"]] == ["127.0.0.23/32"]


def test_ctl_sessions_shaped(postfix, sluice):
    pf = postfix()
    sl = sluice(pf, **SHAPING)
    a = open_client(sl, BLOCKLISTED)
    b = open_client(sl, CLIENT23)
    try:
        wait_row(sl, BLOCKLISTED, lambda r: r["shaped"])
        wait_row(sl, CLIENT23, lambda r: r["phase"] == "helo")
        shaped = ctl_json(sl, "sessions", "--shaped")
        assert [r["addr"] for r in shaped["sessions"]] == [BLOCKLISTED]
        assert shaped["open"] == 2 and shaped["shaped"] == 1
        row = shaped["sessions"][0]
        assert row["score"] >= 3 and "DNSBL" in row["signals"]
        rc, out, err = ctl(sl, "sessions")
        assert rc == 0 and BLOCKLISTED in out and CLIENT23 in out and "DNSBL" in out
        status = ctl_json(sl, "status")
        assert status["sessions"]["shaped"] == 1 and status["sessions"]["unshaped"] == 1
    finally:
        a.close()
        b.close()


def test_ctl_reload_broken_config(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    with open(sl.conf) as f:
        good = f.read()
    with open(sl.conf, "a") as f:
        f.write("workers = banana\n")
    rc, out, err = ctl(sl, "reload")
    assert rc == 1, (rc, out, err)
    assert "bad number 'banana' for workers" in err
    assert "reload" not in out
    assert sl.alive()
    # the running configuration still serves
    with SmtpRaw(sl.host, sl.port, source=CLIENT23) as c:
        assert c.read_reply()[0] == 220
    with open(sl.conf, "w") as f:
        f.write(good)
    rc, out, err = ctl(sl, "reload")
    assert rc == 0 and "configuration reloaded" in out, err
    assert ctl_json(sl, "reload") == {"reloaded": True}


def test_ctl_drain(postfix, sluice):
    pf = postfix()
    sl = sluice(pf)
    c = SmtpRaw(sl.host, sl.port, source=CLIENT23)
    assert c.read_reply()[0] == 220
    assert harness.wait_until(lambda: ctl_json(sl, "status")["sessions"]["open"] == 1, 5)
    rc, out, err = ctl(sl, "drain")
    assert rc == 0 and "draining 1 sessions" in out, (out, err)
    # the idle session gets 421, then sluice exits and removes its socket
    code, text = c.read_reply(timeout=10)
    assert code == 421
    c.close()
    assert harness.wait_until(lambda: not sl.alive(), 15)
    assert not os.path.exists(os.path.join(sl.settings["state_dir"], "control.sock"))
    rc, out, err = ctl(sl, "status")
    assert rc == 3


def test_ctl_entries_win_over_files_and_passes(postfix, sluice, workdir):
    """An allow entry beats cidr_deny_file; a deny entry beats
    cidr_allow_file and a pass earned by delivering."""
    lists = harness.make_world_dir(os.path.join(workdir, "lists"))
    deny_file = os.path.join(lists, "deny.cidr")
    allow_file = os.path.join(lists, "allow.cidr")
    with open(deny_file, "w") as f:
        f.write("127.0.0.26\n")
    with open(allow_file, "w") as f:
        f.write("127.0.0.27\n")
    pf = postfix()
    sl = sluice(pf, cidr_deny_file=deny_file, cidr_allow_file=allow_file, **SHAPING)
    assert verdict(sl, "127.0.0.26")["shaped"]
    assert not verdict(sl, "127.0.0.27")["shaped"]
    # a clean client that delivers earns a pass
    with SmtpRaw(sl.host, sl.port, source=CLIENT23) as c:
        assert c.read_reply()[0] == 220
        c.ehlo(harness.CLIENT23_NAME)
        msg = (b"From: <a@example.net>\r\nTo: <alice@example.com>\r\n"
               b"Subject: ctl-pass\r\n\r\nHi.\r\n")
        rr, final = c.send_message("a@example.net", ["alice@example.com"], harness.dot_stuff(msg))
        assert final and final[0] == 250, (rr, final)
    # the pass is written when that session ends, a moment later
    seen = []
    assert harness.wait_until(lambda: seen.append(verdict(sl, CLIENT23)) or
                              "PASS" in seen[-1]["signals"], 15, interval=0.2), seen
    assert not seen[-1]["shaped"]

    for args in (("allow", "127.0.0.26"), ("deny", "127.0.0.27"), ("deny", CLIENT23)):
        assert ctl(sl, *args)[0] == 0
    r = verdict(sl, "127.0.0.26")
    assert not r["shaped"] and "ALLOWLIST" in r["signals"] and "DENYLIST" not in r["signals"], r
    for source in ("127.0.0.27", CLIENT23):
        r = verdict(sl, source)
        assert r["shaped"] and "DENYLIST" in r["signals"] and "PASS" not in r["signals"], r
