#!/usr/bin/env bash
# Every metric that monitoring/dashboard.json and monitoring/alerts.yaml query is one a live replica exports.
#
# Starts a 4-replica testnet (bftctl testnet up, release binaries), commits some transfers so the histograms and
# labelled counters have samples, runs a short fault drill so refusals and detections have some too (a labelled
# family is absent from /metrics until its first value), reads every replica's /metrics, and checks each metric name in every dashboard
# query, template variable and alert or recording rule against the names those pages declare (# TYPE lines, with
# the suffixes Prometheus stores: counters as _total, histograms as _bucket, _sum, _count). Recording rule names
# must be recorded in alerts.yaml; the only other name allowed is Prometheus' own `up`.
#
# METRICS_URL=http://host:port/metrics (one or more, space-separated) checks against running replicas instead.
# BASE_PORT (default 7400) is the testnet's first port. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "monitoring/check-dashboard.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || die "python3 is not installed"
command -v curl >/dev/null 2>&1 || die "curl is not installed"

dir=$(mktemp -d /tmp/bft-check-dashboard.XXXXXX)
bftctl=""
cleanup() {
    if [ -n "$bftctl" ]; then "$bftctl" testnet down --dir "$dir/testnet" >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

if [ -z "${METRICS_URL:-}" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed; install a Rust toolchain (rustup) first"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bft-validator/target}"
    base_port="${BASE_PORT:-7400}"
    cargo build --release --locked -q -p bft-replica -p bft-client --bin bftctl --bin bft-replica
    bftctl="$CARGO_TARGET_DIR/release/bftctl"
    "$bftctl" testnet up --replicas 4 --dir "$dir/testnet" --base-port "$base_port" --accounts 16
    "$bftctl" bench --cluster "$dir/testnet" --count 200 --clients 8
    METRICS_URL=""
    for i in 0 1 2 3; do METRICS_URL+="http://127.0.0.1:$((base_port + 100 + i))/metrics "; done
    # A labelled family appears on /metrics only once it has a value: a fault drill (bft-agent-4 corrupting its
    # signatures, F = 1) gives refusals and detections, which the dashboard and the alerts read too.
    "$bftctl" inject-fault --cluster "$dir/testnet" --member 4 --fault signature-corruption --probability 1
    "$bftctl" bench --cluster "$dir/testnet" --count 50 --clients 8
    detected() { for url in $METRICS_URL; do grep -q '^bft_detections_total{' <<<"$(curl -fsS "$url")" && return 0; done; return 1; }
    end=$((SECONDS + 30))
    until detected; do
        ((SECONDS < end)) || die "no replica detected bft-agent-4's corrupt signatures within 30s"
        sleep 0.5
    done
    "$bftctl" inject-fault --cluster "$dir/testnet" --member 4 --clear
fi
n=0
for url in $METRICS_URL; do
    n=$((n + 1))
    curl -fsS --max-time 5 "$url" >"$dir/metrics-$n.txt" || die "$url does not answer"
done

python3 - monitoring/dashboard.json monitoring/alerts.yaml "$dir"/metrics-*.txt <<'EOF'
import json, re, sys

dashboard_path, alerts_path, *metric_pages = sys.argv[1:]

# -- What the replicas export ---------------------------------------------------------------------------------------
exported = {}  # stored name -> type
for page in metric_pages:
    for line in open(page):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            if kind == "counter":
                names = [name if name.endswith("_total") else name + "_total"]
            elif kind in ("histogram", "gaugehistogram"):
                names = [name + "_bucket", name + "_sum", name + "_count"]
            elif kind == "summary":
                names = [name, name + "_sum", name + "_count"]
            else:
                names = [name]
            for stored in names:
                exported[stored] = kind
        elif line.strip() and not line.startswith("#"):
            exported.setdefault(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0), "untyped")
if not any(name.startswith("bft_") for name in exported):
    sys.exit("no bft_ metric on the pages read: is that a replica's /metrics?")

# -- The names a PromQL expression reads ------------------------------------------------------------------------------
NOT_METRICS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "inf", "nan",
}
def names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables
    found = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() not in NOT_METRICS:
            found.add(m.group(0))
    return found

# -- The dashboard's queries: panel targets (rows nest panels) and template variables ---------------------------------
queries = []  # (where, expr)
dashboard = json.load(open(dashboard_path))
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                queries.append((f"dashboard panel {p.get('title')!r}", t["expr"]))
        walk(p.get("panels", []))
walk(dashboard.get("panels", []))
for v in dashboard.get("templating", {}).get("list", []):
    if v.get("type") == "query":
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        queries.append((f"dashboard variable ${v['name']}", m.group(1) if m else q))

# -- The rules: a plain rules file whose expressions are one line or a `|` block ---------------------------------
recorded, lines = set(), open(alerts_path).read().splitlines()
i = 0
current = None
while i < len(lines):
    line = lines[i]
    m = re.match(r"\s*-\s*(record|alert):\s*(\S+)", line)
    if m:
        current = f"{m.group(1)} {m.group(2)}"
        if m.group(1) == "record":
            recorded.add(m.group(2))
    m = re.match(r"(\s*)expr:\s*(.*)$", line)
    if m:
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in ("|", ">", "|-", ">-"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            queries.append((f"alerts.yaml {current}", "\n".join(block)))
            continue
        if rest.startswith(("'", '"', "[", "{")):
            sys.exit(f"alerts.yaml {current}: write the expression plain or as a | block, not {rest[:1]}...")
        queries.append((f"alerts.yaml {current}", rest))
    i += 1

# -- The check ------------------------------------------------------------------------------------------------------
ALLOWED = {"up": "scrape health"}
used, missing = {}, []
for where, expr in queries:
    found = names(expr)
    if not found and "vector(" not in expr:
        missing.append(f"{where}: no metric name found in {expr!r}")
    for name in found:
        used.setdefault(name, set()).add(where.split(" ")[0])
        if name in exported or name in ALLOWED:
            continue
        if ":" in name and name in recorded:
            continue
        missing.append(f"{where}: {name} is not exported by the replicas")
dashboard_queries = sum(1 for w, _ in queries if w.startswith("dashboard"))
rule_queries = len(queries) - dashboard_queries
for name in sorted(used):
    kind = exported.get(name) or ("recording rule" if name in recorded else ALLOWED.get(name, "MISSING"))
    print(f"  {name:<42} {kind:<16} {', '.join(sorted(used[name]))}")
unused = sorted(n for n in exported if n.startswith("bft_") and n not in used)
if unused:
    print(f"  exported, queried nowhere: {', '.join(unused)}")
if missing:
    print("\n".join(missing), file=sys.stderr)
    sys.exit(f"check-dashboard: {len(missing)} problems")
print(f"check-dashboard: {dashboard_queries} dashboard queries and {rule_queries} rule expressions read "
      f"{len(used)} names, all exported by the replicas ({len(metric_pages)} /metrics pages) or recorded")
EOF
