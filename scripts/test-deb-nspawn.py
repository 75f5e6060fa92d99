#!/usr/bin/python3
"""
The Debian package on a fresh Debian 12 booted under systemd: a debootstrap
tree (bookworm, minbase + systemd; made once, then reused) booted with
systemd-nspawn --boot, sharing the host's network so that a private Postfix
and dnsmasq started here on loopback (tests/scenario/harness.py) serve as
the mail server and DNS. Not part of `make test`: it needs the Debian
mirror for debootstrap and takes minutes the first time.

  scripts/test-deb-nspawn.py [TREE]      (default /var/tmp/sluice-deb12)

Checks, in the container: dpkg -i; user, directories, unit disabled and
inactive; `systemctl enable --now sluice` returns once READY=1 is sent
(Type=notify) and the unit is active with the STATUS= line; the workers
run as sluice under the unit's sandbox (capability bounding set, no new
privileges, seccomp); a message sent from the host to 127.0.0.77:25
reaches Postfix; a session opened before `dpkg -i` of the package again
(an upgrade: postinst runs sluicectl upgrade, the unit's MainPID stays and
now runs the new file) goes on and delivers after it; systemctl
stop; purge leaves nothing. Until sluicectl exists the check replaces
ExecReload with SIGHUP through a drop-in (said in its output).
Exit 0 when all pass.
"""
import os
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "scenario"))
import harness  # noqa: E402
from harness import SmtpRaw, dot_stuff  # noqa: E402

LISTEN_IP = "127.0.0.77"
PKGS = ("systemd,systemd-sysv,dbus,adduser,libevent-2.1-7,libevent-openssl-2.1-7,"
        "libevent-pthreads-2.1-7,libhiredis0.14,liblmdb0,libssl3,procps,man-db")
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def sh(pid, script, timeout=120):
    """Runs script with bash inside the container (all its namespaces)."""
    r = subprocess.run(["nsenter", "-t", str(pid), "-a", "/bin/bash", "-c", script],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace")


def container_init(nspawn_pid, timeout=30):
    """The container's systemd: the child of systemd-nspawn."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in os.listdir("/proc"):
            if n.isdigit():
                st = harness.proc_stat(int(n))
                if st and st[1] == nspawn_pid:
                    return int(n)
        time.sleep(0.2)
    return None


def deliver(subject, rcpt="alice@example.com"):
    with SmtpRaw(LISTEN_IP, 25, source="127.0.0.23", timeout=30) as c:
        code, _ = c.read_reply()
        if code != 220:
            return code
        c.ehlo("client23.example")
        _, final = c.send_message("a@example.net", [rcpt], dot_stuff(
            ("Subject: %s\r\n\r\nthrough Debian 12 under systemd\r\n" % subject).encode()))
        c.cmd("QUIT")
        return final[0] if final else None


def main():
    tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/sluice-deb12")
    root = os.path.join(tree, "root")
    deb = subprocess.run([os.path.join(REPO, "scripts", "build-deb.sh")], check=True,
                         stdout=subprocess.PIPE).stdout.decode().split()[-1]
    if not os.path.exists(os.path.join(root, "lib/systemd/systemd")):
        os.makedirs(tree, exist_ok=True)
        print("debootstrap bookworm into %s (once)" % root, flush=True)
        subprocess.run(["debootstrap", "--variant=minbase", "--include=" + PKGS, "bookworm",
                        root, "http://deb.debian.org/debian"], check=True,
                       stdout=subprocess.DEVNULL, timeout=1800)
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("deb12\n")
    subprocess.run(["cp", deb, os.path.join(root, "root/sluice.deb")], check=True)

    work = harness.make_world_dir(os.path.join("/tmp", "sluice-nspawn-" + uuid.uuid4().hex[:8]))
    pf = harness.Postfix(os.path.join(work, "postfix")).write_config()
    dns = harness.Dnsmasq(os.path.join(work, "dns"))
    dns.write_config()
    nspawn = pid = None
    try:
        pf.start()
        dns.start()
        nspawn = subprocess.Popen(["systemd-nspawn", "-q", "-D", root, "--boot", "--register=no",
                                   "--keep-unit", "--machine=sluice-deb12", "--console=passive"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = container_init(nspawn.pid)
        check(pid is not None, "container booted")
        if pid is None:
            return 1
        # The system bus comes up a moment after systemd itself.
        rc, out = sh(pid, "for i in $(seq 60); do s=$(systemctl is-system-running --wait "
                          "2>/dev/null) && break; sleep 0.5; done; echo $s; cat /etc/debian_version; "
                          "systemctl --version | head -1", timeout=90)
        print(out.strip())
        rc, out = sh(pid, "dpkg -i /root/sluice.deb >/dev/null && id -un sluice && "
                          "stat -c '%U %a' /var/lib/sluice /var/spool/sluice && "
                          "systemctl is-enabled sluice; systemctl is-active sluice; "
                          "test -x /usr/sbin/sluicectl && echo has-sluicectl; true")
        check(rc == 0 and "sluice\nsluice 750\nsluice 750\ndisabled\ninactive" in out,
              "installed: user, directories, unit disabled and not started\n" + out)
        has_ctl = "has-sluicectl" in out
        conf = ("listen = %s:25\nbackend = 127.0.0.1:%d\ndns_servers = 127.0.0.1:%d\n"
                "myhostname = sluice.deb12.test\nworkers = 2\ngreet_wait = 0s\n"
                % (LISTEN_IP, pf.port, dns.port))
        dropin = "" if has_ctl else (
            "mkdir -p /etc/systemd/system/sluice.service.d; printf '[Service]\\nExecReload=\\n"
            "ExecReload=/bin/kill -HUP $MAINPID\\n' >/etc/systemd/system/sluice.service.d/t.conf; "
            "systemctl daemon-reload; ")
        if not has_ctl:
            print("note: no /usr/sbin/sluicectl in the package yet: ExecReload is SIGHUP here")
        rc, out = sh(pid, "printf '%s' >>/etc/sluice/sluice.conf; %s"
                          "systemctl enable --now sluice 2>&1; systemctl is-active sluice; "
                          "systemctl show -p StatusText --value sluice; "
                          "ps -o user= -C sluice | sort | uniq -c; "
                          "grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/$(systemctl show -p MainPID "
                          "--value sluice)/status" % (conf, dropin))
        print(out.strip())
        check("\nactive\n" in out and "0 sessions, 0 shaped; 2 workers" in out,
              "enable --now: active, READY=1 and STATUS= seen by systemd")
        check("2 sluice" in out and "1 root" in out, "supervisor root, 2 workers as sluice")
        check("NoNewPrivs:\t1" in out and "Seccomp:\t2" in out and "CapBnd:\t00000000000004e3" in out,
              "sandbox: bounding set, no new privileges, seccomp")
        tok = "nspawn-" + uuid.uuid4().hex[:8]
        check(deliver(tok) == 250 and pf.wait_messages(1, 20, lambda m: m.subject == tok),
              "a message through the packaged sluice on port 25 reaches Postfix")
        # A session open across an upgrade of the package.
        tok = "nspawn-upgrade-" + uuid.uuid4().hex[:8]
        with SmtpRaw(LISTEN_IP, 25, source="127.0.0.23", timeout=30) as c:
            c.read_reply()
            c.ehlo("client23.example")
            c.expect("MAIL FROM:<a@example.net>", 250)
            rc, out = sh(pid, "m=$(systemctl show -p MainPID --value sluice); "
                              "dpkg -i /root/sluice.deb 2>&1 | grep sluice:; systemctl is-active sluice; "
                              "[ \"$(systemctl show -p MainPID --value sluice)\" = \"$m\" ] && "
                              "[ \"$(stat -L -c %i /proc/$m/exe)\" = \"$(stat -c %i /usr/sbin/sluice)\" ] "
                              "&& echo same-pid-new-program")
            print(out.strip())
            check(("upgraded: pid" in out or "reloaded" in out) and "\nactive" in out,
                  "upgrade: the running sluice upgraded in place (or reloaded without sluicectl)")
            if has_ctl:
                check("same-pid-new-program" in out,
                      "upgrade: same MainPID, which runs the new /usr/sbin/sluice")
            c.expect("RCPT TO:<bob@example.com>", 250)
            c.expect("DATA", 354)
            c.send(dot_stuff(("Subject: %s\r\n\r\nopen across the upgrade\r\n" % tok).encode())
                   + b".\r\n")
            check(c.read_reply()[0] == 250 and pf.wait_messages(1, 20, lambda m: m.subject == tok),
                  "the session opened before the upgrade delivered after it")
        rc, out = sh(pid, "systemctl stop sluice; systemctl is-active sluice; "
                          "rm -rf /etc/systemd/system/sluice.service.d; systemctl daemon-reload; dpkg --purge sluice >/dev/null; "
                          "ls -d /etc/sluice /var/lib/sluice /var/spool/sluice /usr/sbin/sluice "
                          "/lib/systemd/system/sluice.service 2>/dev/null; pgrep -c sluice")
        check(out.split() == ["inactive", "0"], "stopped, purged, nothing left: %r" % out)
    finally:
        if nspawn is not None:
            if pid:
                sh(pid, "systemctl poweroff", timeout=30)
            try:
                nspawn.wait(30)
            except subprocess.TimeoutExpired:
                nspawn.kill()
        pf.stop()
        dns.stop()
        subprocess.run(["rm", "-rf", work])
    print("test-deb-nspawn: %s" % ("passed" if not failures else "%d failed" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
