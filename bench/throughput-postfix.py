#!/usr/bin/python3
"""Throughput with a real Postfix as the mail server (variant of
bench/throughput.sh): smtp-source straight to a private Postfix, then through
sluice to the same Postfix, side by side in one run.

    bench/throughput-postfix.py [messages] [sessions] [size]

Environment: POOL (8), WORKERS (1), REPS (1), SLUICE (./sluice),
RUN_TIMEOUT (110), KEEP=1 (keep the work directory), NODELAY=1 (preload
bench/nodelay-preload.c into sluice), XCLIENT_ALL=1 (Postfix allows XCLIENT
from every address, so sluice reuses backend connections across clients;
default: only from 127.0.0.1, so each backend connection serves one client
identity and is then replaced, the README's "usual setting").

The Postfix instance is the one of the scenario tests
(tests/scenario/harness.py: private queue, smtpd on a free loopback port),
with virtual_transport = discard: each message is really queued (cleanup
writes and fsyncs the queue file before smtpd answers 250) and then
discarded. sluice runs with backend_xclient = yes, as in production, and
127.0.0.1 (smtp-source's address) in cidr_allow_file, as bench/throughput.sh
(never held at the greeting nor shaped: the proxy path is measured).
A message counts as delivered when Postfix logged status=sent for it (the
queue is allowed RUN_TIMEOUT seconds to drain after each run).
Output: the same key=value lines as bench/throughput.sh. Root, Debian 12.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "scenario"))
import harness  # noqa: E402

msgs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 20
size = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
pool = int(os.environ.get("POOL", "8"))
workers = int(os.environ.get("WORKERS", "1"))
reps = int(os.environ.get("REPS", "1"))
sluice_bin = os.environ.get("SLUICE", os.path.join(ROOT, "sluice"))
run_timeout = float(os.environ.get("RUN_TIMEOUT", "110"))
xclient_all = bool(os.environ.get("XCLIENT_ALL"))
nodelay = bool(os.environ.get("NODELAY"))
RCPT = "alice@%s" % harness.DOMAIN

if os.getuid() != 0:
    sys.exit("throughput-postfix.py: run as root")

d = tempfile.mkdtemp(prefix="slb-", dir="/tmp")  # short: postlog socket path
os.chmod(d, 0o755)
procs = []
postfix = None


def start(cmd, log, env=None):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                         stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def sent_count(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"status=sent")
    except OSError:
        return 0


def cpu_ticks(ppid):
    t = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(st[1]) == ppid:  # field 4, ppid
            t += int(st[11]) + int(st[12])  # utime, stime
    return t


failed = False
try:
    extra = {"virtual_transport": "discard"}
    if xclient_all:
        extra["smtpd_authorized_xclient_hosts"] = "0.0.0.0/0"
    postfix = harness.Postfix(os.path.join(d, "pf"), extra=extra)
    postfix.write_config().start()

    dns_port = harness.free_port()
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 client.bench.test\n")
    with open(os.path.join(d, "dnsmasq.conf"), "w") as f:
        f.write("port=%d\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\n"
                "no-poll\nno-hosts\naddn-hosts=%s/hosts\nlocal=/bench.test/\n"
                "local=/127.in-addr.arpa/\nuser=nobody\n" % (dns_port, d))
    with open(os.path.join(d, "allow"), "w") as f:
        f.write("127.0.0.1/32\n")
    for n in ("hosts", "dnsmasq.conf", "allow"):
        os.chmod(os.path.join(d, n), 0o644)
    start(["/usr/sbin/dnsmasq", "--conf-file=%s/dnsmasq.conf" % d,
           "--keep-in-foreground"], os.path.join(d, "dnsmasq.log"))

    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if nodelay:
        so = os.path.join(d, "nodelay.so")
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", so,
                        os.path.join(HERE, "nodelay-preload.c"), "-ldl"],
                       check=True)
        env["LD_PRELOAD"] = so
    sluice_port = harness.free_port()
    for sub in ("spool", "state"):
        os.makedirs(os.path.join(d, sub))
    sluice_log = os.path.join(d, "sluice.log")
    sluice = start([sluice_bin, "-f", "-c", "/dev/null",
                    "-o", "listen=127.0.0.1:%d" % sluice_port,
                    "-o", "backend=127.0.0.1:%d" % postfix.port,
                    "-o", "backend_pool_size=%d" % pool,
                    "-o", "workers=%d" % workers,
                    "-o", "myhostname=sluice.bench.test",
                    "-o", "spool_dir=%s/spool" % d, "-o", "state_dir=%s/state" % d,
                    "-o", "dns_servers=127.0.0.1:%d" % dns_port,
                    "-o", "dns_timeout=2s", "-o", "shutdown_timeout=5s",
                    "-o", "cidr_allow_file=%s/allow" % d,
                    "-o", "user="], sluice_log, env=env)
    if not harness.wait_listening(sluice_port, 10, proc=sluice):
        sys.exit("sluice does not listen; log:\n" + open(sluice_log).read()[-2000:])

    hz = os.sysconf("SC_CLK_TCK")
    print("# backend=postfix messages=%d sessions=%d size=%d backend_pool_size=%d "
          "workers=%d reps=%d sluice=%s xclient_all=%s%s" %
          (msgs, sessions, size, pool, workers, reps, sluice_bin,
           "yes" if xclient_all else "no", " nodelay=yes" if nodelay else ""),
          flush=True)

    def run(mode, port, rep):
        before = sent_count(postfix.maillog_path)
        sent_before = sent_count(sluice_log)
        cpu0 = cpu_ticks(sluice.pid)
        t0 = time.time()
        try:
            r = subprocess.run(["/usr/sbin/smtp-source", "-s", str(sessions),
                                "-m", str(msgs), "-l", str(size), "-M", "bench.test",
                                "-f", "bench@client.bench.test", "-t", RCPT,
                                "127.0.0.1:%d" % port], capture_output=True,
                               timeout=run_timeout)
            rc, said = r.returncode, (r.stdout + r.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired:
            rc, said = "timeout", "smtp-source timed out"
        t = time.time() - t0
        cpu = cpu_ticks(sluice.pid) - cpu0
        harness.wait_until(lambda: sent_count(postfix.maillog_path) - before >= msgs,
                           run_timeout, 0.2)
        got = sent_count(postfix.maillog_path) - before
        sent = sent_count(sluice_log) - sent_before if mode == "proxied" else "-"
        ok = rc == 0 and not said.strip() and got == msgs and sent in ("-", msgs)
        line = ("mode=%s rep=%d messages=%d sessions=%d size=%d pool=%d workers=%d "
                "seconds=%.3f msgps=%.0f" % (mode, rep, msgs, sessions, size, pool,
                                             workers, t, msgs / t))
        if mode == "proxied":
            line += " sluice_cpu_s=%.2f sluice_cpu_us_per_msg=%.0f" % (
                cpu / hz, cpu / hz / msgs * 1e6)
        line += " source_rc=%s sink_received=%s sluice_sent=%s ok=%s" % (
            rc, got, sent, "yes" if ok else "no")
        print(line, flush=True)
        if said.strip():
            print("smtp-source (%s, rep %d) said:\n%s" % (mode, rep,
                  "\n".join(said.splitlines()[:5])), file=sys.stderr)
        return ok

    for rep in range(1, reps + 1):
        failed |= not run("direct", postfix.port, rep)
        failed |= not run("proxied", sluice_port, rep)
        if sluice.poll() is not None:
            print("sluice died", file=sys.stderr)
            failed = True
            break

    log = open(sluice_log, errors="replace").read()
    bad = [l for l in log.splitlines()
           if re.search(r"error: |AddressSanitizer|runtime error|killed by signal|"
                        r"exited with status", l)]
    if bad:
        print("sluice logged errors:\n" + "\n".join(bad[:20]), file=sys.stderr)
        failed = True
    warns = [l for l in log.splitlines() if "warning: " in l]
    if warns:
        print("sluice logged %d warnings, first ones:\n%s" %
              (len(warns), "\n".join(warns[:5])), file=sys.stderr)
    print("all messages delivered, no errors" if not failed else "FAILED: see above")
finally:
    for p in reversed(procs):
        stop(p)
    if postfix:
        postfix.stop()
    if os.environ.get("KEEP") or failed:
        print("work directory kept: %s" % d, file=sys.stderr)
    else:
        shutil.rmtree(d, ignore_errors=True)
sys.exit(1 if failed else 0)
