"""
In-place upgrade scenarios (src/upgrade.c): a running sluice started from
a copy of the binary in the test's directory; the file is replaced the way
dpkg replaces it (a new file renamed over the old one), and `sluicectl
upgrade` or SIGUSR2 makes the supervisor execute the new file in its own
process, against a real Postfix.

Checked: the supervisor keeps its pid; the new workers run the new file
(/proc/PID/exe is the new inode) and the old ones the deleted old one; a
session opened before the upgrade, mid-transaction, delivers its message
through its old worker, which then exits; new connections are greeted
throughout the switch (a client connects in a loop meanwhile); counters
do not go back (the metrics memory is handed over); sluicectl answers once
the new workers accept. A program that does not run, or refuses the
configuration, or could not bind a new listen address, leaves the running
service as it was, with the error in the log and on sluicectl's stderr
(exit 1). With NOTIFY_SOCKET, RELOADING=1
then READY=1 come from the same pid around a SIGUSR2 upgrade. And a
reload whose new workers cannot start answers with the error and exit 1.

Every wait is bounded in time, every loop in count and time.
"""

import os
import shutil
import signal
import socket
import threading
import time
import uuid

import pytest

import harness
from harness import CLIENT23, CLIENT23_NAME, dot_stuff
from test_control import ctl
from test_operations import (assert_no_sanitizer_report, children, connect, deliver, message,
                             metrics)
from test_systemd import NotifySocket


def install(path, src=None):
    """src (default: the sluice under test) to path as dpkg does: a new
    file renamed over the old one. Returns the new inode."""
    tmp = path + ".dpkg-new"
    shutil.copyfile(src or harness.sluice_bin(), tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)
    return os.stat(path).st_ino


def install_text(path, text):
    tmp = path + ".dpkg-new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


def exe_ino(pid):
    try:
        return os.stat("/proc/%d/exe" % pid).st_ino
    except OSError:
        return None


def exe_link(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return ""


@pytest.fixture
def bindir(workdir):
    d = harness.make_world_dir(os.path.join(workdir, "bin"))
    return d


def one_worker_from_copy(postfix, sluice, bindir):
    """A sluice with one worker run from a copy of the binary in bindir,
    its worker ready: (path, inode, sluice, supervisor pid)."""
    exe = os.path.join(bindir, "sluice")
    ino = install(exe)
    sl = sluice(postfix(), workers=1, binary=exe)
    assert harness.wait_until(lambda: sl.log().count(": ready pid=") == 1, 10)
    return exe, ino, sl, sl.proc.pid


class Greeter:
    """Connects in a loop (bounded: count and time) and wants a 220 on each
    connection within 5 s: listening must not stop during the switch."""

    def __init__(self, sl, limit_s=30, limit_n=2000):
        self.sl, self.limit_s, self.limit_n = sl, limit_s, limit_n
        self.ok, self.failed = 0, []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        end = time.monotonic() + self.limit_s
        for _ in range(self.limit_n):
            if self.stop.is_set() or time.monotonic() > end:
                return
            try:
                with socket.create_connection((self.sl.host, self.sl.port), 5,
                                              source_address=(CLIENT23, 0)) as s:
                    s.settimeout(5)
                    got = s.recv(512)
                    if not got.startswith(b"220"):
                        raise OSError("greeting %r" % got[:80])
                    s.sendall(b"QUIT\r\n")
                self.ok += 1
            except OSError as e:
                self.failed.append(repr(e))
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(10)


@pytest.mark.deadline(90)
def test_upgrade_01_new_program_old_sessions_kept(postfix, sluice, bindir):
    pf = postfix()
    exe = os.path.join(bindir, "sluice")
    old_ino = install(exe)
    mport = harness.free_port()
    sl = sluice(pf, workers=2, binary=exe, shutdown_timeout="20s",
                metrics_listen="127.0.0.1:%d" % mport)
    sup = sl.proc.pid
    assert harness.wait_until(lambda: sl.log().count(": ready pid=") == 2, 10), sl.log()[-3000:]
    old_workers = children(sup)
    assert len(old_workers) == 2 and all(exe_ino(p) == old_ino for p in old_workers)

    # A delivered message counts; the counter must not go back.
    tok0 = "upg-%s" % uuid.uuid4().hex[:10]
    assert deliver(sl, tok0)[0] == 250
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok0)
    before = metrics(mport)["sluice_transactions_total"]
    assert before >= 1

    old = connect(sl)
    try:
        old.ehlo(CLIENT23_NAME)
        assert old.cmd("MAIL FROM:<a@example.net>")[0] == 250
        assert old.cmd("RCPT TO:<alice@example.com>")[0] == 250

        new_ino = install(exe)
        assert new_ino != old_ino
        with Greeter(sl) as g:
            time.sleep(0.3)
            t0 = time.monotonic()
            rc, out, err = ctl(sl, "upgrade")
            took = time.monotonic() - t0
            assert rc == 0, (rc, out, err, sl.log()[-3000:])
            assert "upgraded: pid %d runs %s" % (sup, os.path.realpath(exe)) in out, out
            # Answered once the new workers accept: they are there now.
            new_workers = {p for p in children(sup) if exe_ino(p) == new_ino}
            assert len(new_workers) == 2, (children(sup), sl.log()[-3000:])
            time.sleep(0.5)
        assert not g.failed, "connections failed during the upgrade: %r" % g.failed[:5]
        assert g.ok >= 5, g.ok
        assert sl.alive() and sl.proc.pid == sup
        assert all(exe_link(p).endswith("(deleted)") for p in old_workers & children(sup))
        assert took < 15, took
        log = sl.log()
        assert "upgraded in place from sluice" in log, log[-3000:]
        assert "old workers retire" in log, log[-3000:]

        # The session opened before the upgrade delivers through its old
        # worker, which is still there (retired, not accepting).
        assert old_workers & children(sup), "old workers gone with a session open"
        tok = "upg-%s" % uuid.uuid4().hex[:10]
        old.expect("DATA", 354)
        old.send(dot_stuff(message(tok)) + b".\r\n")
        code, text = old.read_reply(timeout=30)
        assert code == 250, (code, text)
        assert old.cmd("QUIT")[0] == 221
    finally:
        old.close()
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok)
    # The old workers exit once their sessions are done.
    assert harness.wait_until(lambda: not (children(sup) & old_workers), 10), \
        "old workers still running: %r" % (children(sup) & old_workers)
    # New connections go to the new program, and the counters went on.
    tok2 = "upg-%s" % uuid.uuid4().hex[:10]
    assert deliver(sl, tok2)[0] == 250
    assert pf.wait_messages(1, 15, lambda m: m.subject == tok2)
    assert harness.wait_until(
        lambda: metrics(mport)["sluice_transactions_total"] >= before + 2, 5), \
        (before, metrics(mport)["sluice_transactions_total"])
    rc, out, err = ctl(sl, "--json", "status")
    assert rc == 0, err
    assert sl.alive() and sl.proc.pid == sup
    assert_no_sanitizer_report(sl)
    assert sl.stop() == 0, sl.log()[-3000:]


@pytest.mark.deadline(60)
def test_upgrade_02_broken_program_keeps_service(postfix, sluice, bindir):
    exe, ino, sl, sup = one_worker_from_copy(postfix, sluice, bindir)
    workers = children(sup)

    # Not a program at all.
    install_text(exe, "garbage, not an executable\n" * 3)
    rc, out, err = ctl(sl, "upgrade")
    assert rc == 1, (rc, out, err)
    assert "cannot run %s" % exe in err, err
    # A program that refuses the configuration (its -n check fails).
    install_text(exe, "#!/bin/sh\necho 'line 3: no such setting' >&2\nexit 1\n")
    rc, out, err = ctl(sl, "upgrade")
    assert rc == 1, (rc, out, err)
    assert "refused (exit 1): line 3: no such setting" in err, err
    # A missing file.
    os.unlink(exe)
    rc, out, err = ctl(sl, "upgrade")
    assert rc == 1 and "No such file" in err, (rc, err)

    # A listen address the new program could not bind (checked before the
    # execve, after which there is no way back).
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        install(exe)
        sl.settings["listen"] = "%s:%d, 127.0.0.1:%d" % (sl.host, sl.port, busy.getsockname()[1])
        sl.write_config()
        rc, out, err = ctl(sl, "upgrade")
        assert rc == 1, (rc, out, err)
        assert "could not listen on 127.0.0.1:%d" % busy.getsockname()[1] in err, err
    finally:
        busy.close()
    sl.settings["listen"] = "%s:%d" % (sl.host, sl.port)
    sl.write_config()
    install_text(exe, "garbage\n")

    log = sl.log()
    assert log.count("the running program goes on") == 4, log[-3000:]
    assert sl.alive() and sl.proc.pid == sup
    assert children(sup) == workers
    assert all(exe_ino(p) == ino for p in workers | {sup}), (ino, [exe_ino(p) for p in workers | {sup}])
    with connect(sl) as c:
        assert c.cmd("QUIT")[0] == 221
    # The control socket still answers, and a good program then upgrades,
    # with a state_dir moved meanwhile: the control socket moves along.
    new_ino = install(exe)
    old_sock = os.path.join(sl.settings["state_dir"], "control.sock")
    sl.settings["state_dir"] = sl.settings["state_dir"] + "-moved"
    sl.write_config()
    rc, out, err = ctl(sl, "-s", old_sock, "upgrade", conf=False)
    assert rc == 0, (rc, out, err, sl.log()[-3000:])
    assert exe_ino(sup) == new_ino
    assert not os.path.exists(old_sock)
    rc, out, err = ctl(sl, "status")
    assert rc == 0, (rc, out, err)
    assert_no_sanitizer_report(sl)


@pytest.mark.deadline(60)
def test_upgrade_03_sigusr2_notify(postfix, sluice, bindir, monkeypatch):
    pf = postfix()
    n = NotifySocket("@sluice-test-%s" % uuid.uuid4().hex)
    monkeypatch.setenv("NOTIFY_SOCKET", n.env)
    try:
        exe = os.path.join(bindir, "sluice")
        install(exe)
        sl = sluice(pf, workers=1, binary=exe)
        sup = sl.proc.pid
        n.wait_for("READY", 15)
        new_ino = install(exe)
        os.kill(sup, signal.SIGUSR2)
        pid, f, _ = n.wait_for("RELOADING", 10)
        assert pid == sup and f["RELOADING"] == "1" and int(f["MONOTONIC_USEC"]) > 0, f
        pid, f, _ = n.wait_for("READY", 15)
        assert pid == sup
        assert exe_ino(sup) == new_ino
        # READY=1 came once a new worker accepts.
        assert any(exe_ino(p) == new_ino for p in children(sup)), children(sup)
        with connect(sl) as c:
            assert c.cmd("QUIT")[0] == 221
        os.kill(sup, signal.SIGTERM)
        n.wait_for("STOPPING", 10)
        assert harness.wait_until(lambda: not sl.alive(), 15)
        assert sl.proc.returncode == 0, sl.log()[-3000:]
        assert all(g[0] == sup for g in n.got), [(g[0], g[2]) for g in n.got]
    finally:
        n.close()


@pytest.mark.deadline(60)
def test_upgrade_04_reload_answers_when_workers_fail(postfix, sluice, workdir):
    """sluicectl reload answers once the new workers accept, or with the
    error when they cannot start (here: an allow file that is missing,
    which only the worker reads)."""
    pf = postfix()
    sl = sluice(pf, workers=1)
    assert harness.wait_until(lambda: sl.log().count(": ready pid=") == 1, 10)
    rc, out, err = ctl(sl, "reload")
    assert rc == 0 and "configuration reloaded" in out, (rc, out, err)
    assert sl.log().count(": ready pid=") == 2 or harness.wait_until(
        lambda: sl.log().count(": ready pid=") == 2, 3)
    sl.settings["cidr_allow_file"] = os.path.join(workdir, "no-such-file.cidr")
    sl.write_config()
    rc, out, err = ctl(sl, "reload")
    assert rc == 1, (rc, out, err)
    assert "exited while starting" in err, err
    assert sl.alive()


@pytest.mark.deadline(60)
def test_upgrade_05_hanging_check_times_out(postfix, sluice, bindir):
    """A new program whose -n check never finishes (and keeps its stderr
    open) is given up after the check's 10 s: the supervisor answers and
    goes on. Before the fix, a poll that timed out was followed by a
    blocking read of the silent pipe, and the supervisor waited as long as
    the program did."""
    exe, ino, sl, sup = one_worker_from_copy(postfix, sluice, bindir)
    install_text(exe, "#!/bin/sh\nexec sleep 40\n")
    t0 = time.monotonic()
    rc, out, err = ctl(sl, "upgrade", timeout=50)
    took = time.monotonic() - t0
    assert rc == 1, (rc, out, err)
    assert "did not finish within 10 s" in err, err
    assert took < 20, took
    assert sl.alive() and sl.proc.pid == sup and exe_ino(sup) == ino
    with connect(sl) as c:
        assert c.cmd("QUIT")[0] == 221


@pytest.mark.deadline(60)
def test_upgrade_06_sigusr2_to_a_worker_is_ignored(postfix, sluice, bindir):
    """SIGUSR2 is the supervisor's; one that reaches a worker too (sent to
    the whole group, `systemctl kill -s USR2` without --kill-whom=main)
    must not end it and its sessions, as SIGHUP does not."""
    exe, ino, sl, sup = one_worker_from_copy(postfix, sluice, bindir)
    (worker,) = children(sup)
    with connect(sl) as c:
        c.ehlo(CLIENT23_NAME)
        os.kill(worker, signal.SIGUSR2)
        time.sleep(0.5)
        assert worker in children(sup), (worker, children(sup), sl.log()[-2000:])
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("QUIT")[0] == 221
