"""
Fixtures for sluice's scenario tests: a real Postfix backend, a real DNS
server (dnsmasq) and the real sluice binary, all on 127.0.0.0/8.

  workdir        per-test directory (mode 0755), kept when the test fails
  dns            session-wide dnsmasq (see harness.Dnsmasq for its records)
  tls_cert       session-wide self-signed (cert, key) for sluice.test
  postfix        factory: postfix(xclient_hosts=, bare_newline=, allow_log=,
                 extra=, name=, master_extra=) -> started harness.Postfix;
                 stopped at teardown
  sluice         factory: sluice(pf, pool=4, tls=False, overrides=(), **settings)
                 -> started harness.Sluice; SIGTERM then SIGKILL at teardown
  sluice_settings  the same settings sluice() would write, without starting
  postfix_log_findings  forbidden backend log lines collected so far

Markers: @pytest.mark.deadline(SECONDS) bounds the test body (SIGALRM;
default 120 s). Fixture set-up and teardown have their own bounds.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/scenario
(SLUICE_BIN=/path/to/sluice; default: the repository's ./sluice).
"""

import os
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

DEFAULT_DEADLINE = 120

# Forbidden Postfix log lines found at each backend's teardown:
# [(test name, line)]. Read by the last test of test_core.py.
_LOG_FINDINGS = []


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deadline(seconds): fail the test body after this long")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("deadline")
    secs = m.args[0] if m else DEFAULT_DEADLINE

    def on_alarm(signum, frame):
        raise TimeoutError("%s exceeded its %s s deadline" % (item.name, secs))

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, secs)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture(scope="session")
def scenario_base():
    base = tempfile.mkdtemp(prefix="sluice-scn-", dir="/tmp")
    os.chmod(base, 0o755)  # sluice and virtual(8) run as nobody below it
    yield base
    if not os.listdir(base) or all(n == "session" for n in os.listdir(base)):
        shutil.rmtree(base, ignore_errors=True)
    else:
        print("\nscenario: kept %s for the failed tests" % base)


@pytest.fixture
def workdir(request, scenario_base):
    # Short: Postfix's unix sockets (queue/public/postlog) must fit in
    # sun_path (108 bytes).
    name = request.node.name
    if name.startswith("test_"):
        name = name[5:]
    # One directory per run of a test, made atomically: a rerun must not
    # start from the failed run's world (kept for reading), whose store
    # still held the clients' reputation from it (a shaped client of the
    # failed run was not shaped in the rerun); and parameters whose names
    # share the first 24 characters must not share one while they run
    # side by side.
    base = os.path.join(scenario_base, name[:24])
    d, n = base, 1
    while True:
        try:
            os.mkdir(d)
            break
        except FileExistsError:
            n += 1
            d = "%s.%d" % (base, n)
    harness.make_world_dir(d)
    yield d
    if not _failed(request):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def dns(scenario_base):
    d = harness.Dnsmasq(os.path.join(scenario_base, "session", "dns"))
    d.write_config()
    try:
        d.start()
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def tls_cert(scenario_base):
    d = harness.make_world_dir(os.path.join(scenario_base, "session", "tls"))
    return harness.make_cert(d)


@pytest.fixture
def postfix(request, workdir):
    started = []

    def make(xclient_hosts="127.0.0.1", bare_newline="reject", allow_log=(),
             extra=None, name="postfix", master_extra=()):
        pf = harness.Postfix(os.path.join(workdir, name),
                             xclient_hosts=xclient_hosts,
                             bare_newline=bare_newline, extra=extra,
                             master_extra=master_extra)
        pf.allow_log = tuple(allow_log)
        pf.write_config()
        started.append(pf)
        pf.start()
        return pf

    yield make
    forbidden = []
    for pf in started:
        try:
            pf.stop()
        finally:
            for line in harness.forbidden_log_lines(pf.maillog(), pf.allow_log):
                _LOG_FINDINGS.append((request.node.name, line))
                forbidden.append(line)
            if _failed(request):
                print("\n--- %r maillog (tail) ---\n%s" % (pf, pf.maillog()[-6000:]))
    # Checked per test as well as at the end (test_core_99): with several
    # pytest workers, each only sees its own tests' backends.
    if forbidden:
        pytest.fail("backend log shows sluice breaking Postfix's rules (G7):\n"
                    + "\n".join(forbidden[:20]), pytrace=False)


@pytest.fixture
def postfix_log_findings():
    return _LOG_FINDINGS


def _settings(workdir, dns, pf, pool, tls, tls_cert, settings):
    s = {
        "listen": "127.0.0.1:%d" % harness.free_port(),
        "backend": "127.0.0.1:%d" % (pf.port if pf is not None else 10025),
        "backend_pool_size": str(pool),
        "backend_xclient": "yes",
        "myhostname": harness.SLUICE_HOSTNAME,
        "dns_servers": "127.0.0.1:%d" % dns.port,
        "spool_dir": os.path.join(workdir, "sluice", "spool"),
        "state_dir": os.path.join(workdir, "sluice", "state"),
        "workers": "1",
        "user": "nobody",
        "smtpd_timeout": "60s",
        "backend_timeout": "30s",
        "checkout_timeout": "60s",
        # The core tests are about the relay, not the pre-greeting wait;
        # shaping tests set greet_wait themselves.
        "greet_wait": "0s",
    }
    if tls:
        s["tls_cert_file"], s["tls_key_file"] = tls_cert
    for k, v in settings.items():
        if v is None:
            s.pop(k, None)
        else:
            s[k] = str(v)
    return s


@pytest.fixture
def sluice_settings(workdir, dns, tls_cert):
    def make(pf=None, pool=4, tls=False, **settings):
        return _settings(workdir, dns, pf, pool, tls, tls_cert, settings)
    return make


@pytest.fixture
def sluice(request, workdir, dns, tls_cert, postfix):
    # Depends on postfix so that sluice is always stopped before Postfix.
    started = []

    def make(pf, pool=4, tls=False, overrides=(), binary=None, **settings):
        s = harness.Sluice(os.path.join(workdir, "sluice"),
                           _settings(workdir, dns, pf, pool, tls, tls_cert,
                                     settings), overrides, binary=binary)
        if not os.access(s.binary, os.X_OK):
            pytest.fail("sluice binary %s is missing or not executable: build "
                        "it (make sluice) or set SLUICE_BIN" % s.binary,
                        pytrace=False)
        s.write_config()
        started.append(s)
        s.start()
        return s

    yield make
    for s in started:
        alive = s.alive()
        rc = s.stop()
        if _failed(request) or not alive:
            print("\n--- sluice (alive at teardown: %s, exit %r) log tail ---\n%s"
                  % (alive, rc, s.log()[-8000:]))
