#!/usr/bin/python3
"""
Checks contrib/grafana/sluice.json against sluice's metrics: every metric
a panel or variable queries exists in the metrics table (src/metrics.h,
METRICS X-macro), every label matcher with a literal value names a label
and value the table has, and every `by (label)` groups by a label those
metrics carry. With --url URL the same is checked against a live /metrics
page as well (test-deb.sh does so with the installed binary).

Reads only files in the repository (and URL when given). Exit 0 when all
is well, 1 with one line per problem.
"""
import json
import re
import sys
import urllib.request

REPO_FILES = ("src/metrics.h", "contrib/grafana/sluice.json")
GENERIC_LABELS = {"instance", "job"}  # added by Prometheus at scrape


def table_metrics(text):
    """{name: {label: {values}}} from the X-macro rows of metrics.h."""
    out = {}
    for m in re.finditer(r'X\(\s*\w+\s*,\s*"((?:[^"\\]|\\.)*)"', text):
        parse_series(m.group(1).replace('\\"', '"'), out)
    return out


def parse_series(s, out):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$', s)
    if not m:
        return
    labels = out.setdefault(m.group(1), {})
    for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""):
        labels.setdefault(k, set()).add(v)


def page_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parse_series(line.rsplit(" ", 1)[0], out)
    return out


def queries(dash):
    """Every PromQL text in the dashboard: panel targets and variables."""
    found = []

    def walk(o, where):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    found.append((where, v))
                elif k == "query" and isinstance(v, str) and where.startswith("variable"):
                    found.append((where, v))
                else:
                    walk(v, where if k != "title" else where)
            return
        if isinstance(o, list):
            for x in o:
                walk(x, where)

    for p in dash.get("panels", []):
        walk(p, "panel %r" % p.get("title"))
    for v in dash.get("templating", {}).get("list", []):
        walk(v, "variable %r" % v.get("name"))
    return found


def check(dash, known, what):
    problems = []
    qs = queries(dash)
    if not qs:
        problems.append("the dashboard has no queries")
    for where, q in qs:
        if not q.strip() or q.strip() == "prometheus":  # datasource variable
            continue
        names = re.findall(r'\b(sluice_[a-zA-Z0-9_:]*)', q)
        if not names:
            problems.append("%s: no sluice metric in %r" % (where, q))
        for n in names:
            if n not in known:
                problems.append("%s: %s is not in %s" % (where, n, what))
        for n, matchers in re.findall(r'\b(sluice_[a-zA-Z0-9_:]*)\{([^}]*)\}', q):
            for k, op, v in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
                if k in GENERIC_LABELS:
                    continue
                labels = known.get(n, {})
                if k not in labels:
                    problems.append("%s: %s has no label %s in %s" % (where, n, k, what))
                elif op == "=" and v not in labels[k]:
                    problems.append("%s: %s{%s=%r} is not in %s" % (where, n, k, v, what))
        for group in re.findall(r'\b(?:by|without)\s*\(([^)]*)\)', q):
            for k in [x.strip() for x in group.split(",") if x.strip()]:
                if k in GENERIC_LABELS:
                    continue
                if not any(k in known.get(n, {}) for n in names):
                    problems.append("%s: groups by %s, which none of %s has in %s"
                                    % (where, k, sorted(set(names)), what))
    return problems


def main(argv):
    url = None
    if len(argv) == 3 and argv[1] == "--url":
        url = argv[2]
    elif len(argv) != 1:
        print("usage: check-dashboard.py [--url http://host:port/metrics]", file=sys.stderr)
        return 2
    with open(REPO_FILES[0]) as f:
        known = table_metrics(f.read())
    with open(REPO_FILES[1]) as f:
        dash = json.load(f)
    if len(known) < 10:
        print("check-dashboard: could not read the metrics table in %s" % REPO_FILES[0])
        return 1
    problems = check(dash, known, "the metrics table (src/metrics.h)")
    if url:
        with urllib.request.urlopen(url, timeout=10) as r:
            live = page_metrics(r.read().decode())
        problems += check(dash, live, url)
    for p in problems:
        print("check-dashboard: " + p)
    n = len(queries(dash))
    print("check-dashboard: %d queries, %d problems%s" % (n, len(problems),
                                                        " (and %s)" % url if url else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
