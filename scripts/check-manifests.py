#!/usr/bin/env python3
"""Checks the operator's Kubernetes manifests without a cluster and without Helm.

    scripts/check-manifests.py chart charts/bft-operator
    kubectl kustomize deploy/ | scripts/check-manifests.py kustomize -

`chart`: Chart.yaml's appVersion is the workspace version (Cargo.toml); values.yaml valid against
values.schema.json (jsonschema, draft-07), and some bad values refused by it; the copies under the chart (crds/,
files/) identical to the repository's files; every non-template file parses (YAML, JSON); every template balanced
(each {{ closed by }}, each if/with/define by an end); then the templates rendered by a small Go-template subset
of our own (the constructs the chart uses and nothing else: range, tpl, parentheses... are refused) for three sets
of values, and the objects checked as below. What a machine with Helm runs instead of the rendering:

    helm lint charts/bft-operator && helm template charts/bft-operator | kubectl apply --dry-run=client -f -

`kustomize`: the rendered base (stdin or a file) holds the CRD as in crds/, and the checks below.

Both: one Deployment, hardened (non-root 65532, read-only root, no privilege escalation, no capabilities, seccomp
RuntimeDefault), with the operator's arguments, environment, port and probes; its ServiceAccount; RBAC with
exactly the rules the operator's API calls need (RULES below) and the Lease Role; a Service for the metrics port.
"""
import copy
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the operator's API calls need (operator/src/platform/kube.rs, controller.rs): (group, resource) -> verbs.
RULES = {
    ("bft.dev", "byzantineclusters"): {"get", "list", "watch", "patch", "update"},
    ("bft.dev", "byzantineclusters/status"): {"get", "patch", "update"},
    ("", "secrets"): {"get", "list", "create", "delete"},
    ("", "configmaps"): {"get", "create"},
    ("", "services"): {"get", "create", "patch"},
    ("", "persistentvolumeclaims"): {"list", "deletecollection"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("monitoring.coreos.com", "servicemonitors"): {"get", "create", "patch", "delete"},
    ("monitoring.coreos.com", "prometheusrules"): {"get", "create", "patch", "delete"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace"}

errors = []


def fail(message):
    errors.append(message)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# -- A Go-template subset ------------------------------------------------------------------------------------------

ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.S)
TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\||:=|\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.[A-Za-z0-9_.]*|-?[0-9]+%?|[A-Za-z_][A-Za-z0-9_]*|\S)')


class TemplateError(Exception):
    pass


def parse(text, where):
    """Text and actions into a tree: ("text", s), ("out", expr), ("set", var, expr), ("if", expr, then, else),
    ("with", expr, body, else), ("define", name, body). Whitespace trimming ({{- and -}}) is applied here."""
    pieces, pos = [], 0
    for m in ACTION.finditer(text):
        pieces.append(["text", text[pos:m.start()]])
        line = text.count("\n", 0, m.start()) + 1
        if "{{" in m.group(3):
            raise TemplateError(f"{where}:{line}: a {{{{ without }}}}")
        pieces.append(["action", m.group(3), m.group(1) == "-", m.group(5) == "-", f"{where}:{line}"])
        pos = m.end()
    pieces.append(["text", text[pos:]])
    if "{{" in "".join(p[1] for p in pieces if p[0] == "text") or "}}" in "".join(p[1] for p in pieces if p[0] == "text"):
        raise TemplateError(f"{where}: a {{{{ without }}}} or a }}}} without {{{{")
    for i, p in enumerate(pieces):
        if p[0] == "action":
            if p[2]:
                pieces[i - 1][1] = pieces[i - 1][1].rstrip(" \t\r\n")
            if p[3]:
                pieces[i + 1][1] = pieces[i + 1][1].lstrip(" \t\r\n")
    root, stack = [], []
    current = root
    for p in pieces:
        if p[0] == "text":
            if p[1]:
                current.append(("text", p[1]))
            continue
        body, at = p[1], p[4]
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"{at}: unclosed comment")
            continue
        word = body.split(None, 1)[0] if body else ""
        rest = body[len(word):].strip()
        if word in ("if", "with", "define"):
            node = [word, rest, [], [], at]
            current.append(node)
            stack.append((node, current))
            current = node[2]
        elif word == "else":
            if not stack or stack[-1][0][0] not in ("if", "with") or rest:
                raise TemplateError(f"{at}: an else outside if/with, or an else if (not supported)")
            current = stack[-1][0][3]
        elif word == "end":
            if not stack:
                raise TemplateError(f"{at}: an end with nothing to close")
            current = stack.pop()[1]
        elif word in ("range", "block", "template", "break", "continue", "tpl"):
            raise TemplateError(f"{at}: {word} is not in this checker's subset; keep the templates simple or use helm")
        else:
            current.append(["out", body, at])
    if stack:
        node = stack[-1][0]
        raise TemplateError(f"{node[4]}: {node[0]} without an end")
    return root


def truthy(v):
    return v not in (None, False, 0, "") and v != [] and v != {}


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n") if v not in (None, {}) else "{}"


def quote(v):
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def indent(n, s):
    return "\n".join(" " * n + line for line in s.split("\n"))


FUNCS = {
    "quote": lambda v: quote(show(v)),
    "default": lambda d, v: v if truthy(v) else d,
    "indent": lambda n, s: indent(n, s),
    "nindent": lambda n, s: "\n" + indent(n, s),
    "toYaml": to_yaml,
    "trunc": lambda n, s: s[:n],
    "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
    "contains": lambda sub, s: sub in s,
    "ternary": lambda a, b, cond: a if truthy(cond) else b,
    "printf": lambda fmt, *args: fmt % tuple(args),
    "not": lambda v: not truthy(v),
    "and": lambda *vs: all(truthy(v) for v in vs),
    "or": lambda *vs: any(truthy(v) for v in vs),
    "eq": lambda a, b: a == b,
}


def show(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        raise TemplateError("renders a missing value")
    if isinstance(v, (dict, list)):
        raise TemplateError(f"renders a {type(v).__name__} without toYaml")
    return str(v)


class Renderer:
    def __init__(self, chart_dir, values, release):
        self.chart_dir = chart_dir
        chart = yaml.safe_load(read(os.path.join(chart_dir, "Chart.yaml")))
        self.root = {
            "Values": values,
            "Release": release,
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
        }
        self.defines = {}

    def field(self, base, path, at):
        value = base
        for name in [p for p in path.split(".") if p]:
            if not isinstance(value, dict) or name not in value:
                raise TemplateError(f"{at}: no {path!r} (stops at {name!r})")
            value = value[name]
        return value

    def term(self, token, dot, scope, at):
        if token.startswith('"'):
            return json.loads(token)
        if re.fullmatch(r"-?[0-9]+", token):
            return int(token)
        if token in ("true", "false"):
            return token == "true"
        if token == ".":
            return dot
        if token.startswith(".Files.Get"):
            raise TemplateError(f"{at}: .Files.Get takes its argument as a call")
        if token.startswith("."):
            return self.field(dot, token, at)
        if token.startswith("$"):
            name, _, path = token.partition(".")
            if name == "$":
                return self.field(self.root, path, at)
            if name not in scope:
                raise TemplateError(f"{at}: {name} is not set")
            return self.field(scope[name], path, at)
        raise TemplateError(f"{at}: cannot evaluate {token!r}")

    def command(self, words, dot, scope, at, piped):
        head, args = words[0], words[1:]
        if head == ".Files.Get":
            values = [self.term(a, dot, scope, at) for a in args] + piped
            return read(os.path.join(self.chart_dir, values[0]))
        if head == "include":
            values = [self.term(a, dot, scope, at) for a in args] + piped
            if values[0] not in self.defines:
                raise TemplateError(f"{at}: include of an undefined {values[0]!r}")
            return self.run(self.defines[values[0]], values[1], {})
        if head in FUNCS:
            values = [self.term(a, dot, scope, at) for a in args] + piped
            try:
                return FUNCS[head](*values)
            except TypeError as e:
                raise TemplateError(f"{at}: {head}: {e}")
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head) and head not in ("true", "false"):
            raise TemplateError(f"{at}: {head} is not in this checker's subset")
        if args or piped:
            raise TemplateError(f"{at}: {head} takes no arguments")
        return self.term(head, dot, scope, at)

    def expr(self, text, dot, scope, at):
        tokens = TOKEN.findall(text)
        if "(" in tokens or ")" in tokens:
            raise TemplateError(f"{at}: parentheses are not in this checker's subset")
        commands, current = [], []
        for t in tokens:
            if t == "|":
                commands.append(current)
                current = []
            else:
                current.append(t)
        commands.append(current)
        value, piped = None, []
        for words in commands:
            if not words:
                raise TemplateError(f"{at}: an empty command in {text!r}")
            value = self.command(words, dot, scope, at, piped)
            piped = [value]
        return value

    def run(self, nodes, dot, scope):
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "out":
                body, at = node[1], node[2]
                m = re.match(r"(\$[A-Za-z0-9_]+)\s*:=\s*(.*)$", body, re.S)
                if m:
                    scope[m.group(1)] = self.expr(m.group(2), dot, scope, at)
                else:
                    try:
                        out.append(show(self.expr(body, dot, scope, at)))
                    except TemplateError as e:
                        raise TemplateError(f"{at}: {body}: {e}") if not str(e).startswith(at) else e
            elif kind == "define":
                self.defines[json.loads(node[1])] = node[2]
            elif kind == "if":
                branch = node[2] if truthy(self.expr(node[1], dot, scope, node[4])) else node[3]
                out.append(self.run(branch, dot, scope))
            elif kind == "with":
                value = self.expr(node[1], dot, scope, node[4])
                out.append(self.run(node[2], value, scope) if truthy(value) else self.run(node[3], dot, scope))
        return "".join(out)

    def render(self, templates):
        """templates: {path: text}. Helpers (_*.tpl) are read first; returns {path: rendered} for the others."""
        trees = {path: parse(text, path) for path, text in templates.items()}
        for path, tree in trees.items():
            if os.path.basename(path).startswith("_"):
                self.run(tree, self.root, {})
        return {
            path: self.run(tree, self.root, {"$": self.root})
            for path, tree in trees.items()
            if not os.path.basename(path).startswith("_")
        }


# -- Checks of rendered objects ------------------------------------------------------------------------------------


def rules_of(role):
    rules = {}
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                rules.setdefault((group, resource), set()).update(rule.get("verbs", []))
    return rules


def check_objects(objects, label, watch_namespace):
    """watch_namespace: the namespace the operator must be limited to, or None for cluster-wide."""
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o.get("kind"), []).append(o)
        if o.get("kind") not in CLUSTER_SCOPED and not o.get("metadata", {}).get("namespace"):
            fail(f"{label}: {o.get('kind')} {o.get('metadata', {}).get('name')} has no namespace")
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        fail(f"{label}: {len(deployments)} Deployments, expected 1")
        return
    dep = deployments[0]
    ns = dep["metadata"]["namespace"]
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if dep["spec"]["selector"]["matchLabels"].items() - pod_labels.items():
        fail(f"{label}: the Deployment's selector does not match its pod labels")
    containers = pod["containers"]
    if len(containers) != 1:
        fail(f"{label}: {len(containers)} containers in the operator pod, expected 1")
        return
    c = containers[0]
    if c.get("args") != ["run", "--log-json"]:
        fail(f"{label}: operator args {c.get('args')}, expected ['run', '--log-json']")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(f"{label}: POD_NAME is not the pod's metadata.name")
    if env.get("BFT_OPERATOR_NAMESPACE", {}).get("value") != ns:
        fail(f"{label}: BFT_OPERATOR_NAMESPACE is not the operator's namespace {ns}")
    if env.get("BFT_WATCH_NAMESPACE", {}).get("value") != watch_namespace:
        fail(f"{label}: BFT_WATCH_NAMESPACE {env.get('BFT_WATCH_NAMESPACE', {}).get('value')!r}, expected {watch_namespace!r}")
    ports = {p.get("name"): p for p in c.get("ports", [])}
    if ports.get("metrics", {}).get("containerPort") != 8080:
        fail(f"{label}: no container port 8080 named metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("metrics", 8080):
            fail(f"{label}: {probe} is not GET {path} on the metrics port")
    if not c.get("resources"):
        fail(f"{label}: the operator container has no resources")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    either = lambda key: sc.get(key, psc.get(key))
    hardening = {
        "runAsNonRoot": (either("runAsNonRoot"), True),
        "runAsUser": (either("runAsUser"), 65532),
        "readOnlyRootFilesystem": (sc.get("readOnlyRootFilesystem"), True),
        "allowPrivilegeEscalation": (sc.get("allowPrivilegeEscalation"), False),
        "capabilities.drop": (sc.get("capabilities", {}).get("drop"), ["ALL"]),
        "seccompProfile.type": ((either("seccompProfile") or {}).get("type"), "RuntimeDefault"),
    }
    for key, (got, want) in hardening.items():
        if got != want:
            fail(f"{label}: securityContext {key} is {got!r}, expected {want!r}")
    sa = pod.get("serviceAccountName")
    if not any(o["metadata"]["name"] == sa and o["metadata"].get("namespace") == ns for o in by_kind.get("ServiceAccount", [])):
        fail(f"{label}: no ServiceAccount {sa} in {ns}")

    # RBAC: the operator's role has exactly RULES, where it should; the Lease role exactly LEASE_RULES.
    role_kind = "ClusterRole" if watch_namespace is None else "Role"
    roles = [r for r in by_kind.get("Role", []) + by_kind.get("ClusterRole", []) if rules_of(r) != LEASE_RULES]
    leases = [r for r in by_kind.get("Role", []) if rules_of(r) == LEASE_RULES]
    if len(roles) != 1 or roles[0]["kind"] != role_kind:
        fail(f"{label}: operator roles {[(r['kind'], r['metadata']['name']) for r in roles]}, expected one {role_kind}")
    else:
        role = roles[0]
        got = rules_of(role)
        for key in sorted(set(got) | set(RULES)):
            if got.get(key, set()) != RULES.get(key, set()):
                fail(f"{label}: {role['kind']} {role['metadata']['name']} gives {key} {sorted(got.get(key, []))}, "
                     f"the operator needs {sorted(RULES.get(key, []))}")
        if watch_namespace is not None and role["metadata"].get("namespace") != watch_namespace:
            fail(f"{label}: the operator's Role is in {role['metadata'].get('namespace')}, not {watch_namespace}")
        check_binding(by_kind, label, role, sa, ns)
    if len(leases) != 1 or leases[0]["metadata"].get("namespace") != ns:
        fail(f"{label}: expected one Role for leases (get, create, update) in {ns}")
    else:
        check_binding(by_kind, label, leases[0], sa, ns)

    services = [s for s in by_kind.get("Service", []) if s["spec"].get("selector", {}).items() <= pod_labels.items()]
    if not any(p.get("name") == "metrics" and p.get("port") == 8080 for s in services for p in s["spec"]["ports"]):
        fail(f"{label}: no Service with port metrics (8080) selecting the operator pods")


def check_binding(by_kind, label, role, sa, ns):
    kind = role["kind"] + "Binding"
    for b in by_kind.get(kind, []):
        if b["roleRef"]["kind"] == role["kind"] and b["roleRef"]["name"] == role["metadata"]["name"] and \
                b["metadata"].get("namespace") == role["metadata"].get("namespace"):
            if [{"kind": "ServiceAccount", "name": sa, "namespace": ns}] != b.get("subjects"):
                fail(f"{label}: {kind} {b['metadata']['name']} does not bind exactly ServiceAccount {ns}/{sa}")
            return
    fail(f"{label}: no {kind} for {role['kind']} {role['metadata']['name']}")


def load_docs(text, label):
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        fail(f"{label}: not YAML: {e}")
        return []


# -- chart ---------------------------------------------------------------------------------------------------------


def merge(base, overlay):
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_chart(chart_dir):
    try:
        import jsonschema
    except ImportError:
        sys.exit("scripts/check-manifests.py: python3 has no jsonschema: pip install jsonschema")
    copies = {
        "crds/byzantineclusters.bft.dev.yaml": "crds/byzantineclusters.bft.dev.yaml",
        "files/alerts.yaml": "monitoring/alerts.yaml",
        "files/dashboard.json": "monitoring/dashboard.json",
    }
    for copy_path, original in copies.items():
        if read(os.path.join(chart_dir, copy_path)) != read(os.path.join(ROOT, original)):
            fail(f"{chart_dir}/{copy_path} differs from {original}: cp {original} {chart_dir}/{copy_path}")

    chart = yaml.safe_load(read(os.path.join(chart_dir, "Chart.yaml")))
    workspace = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', read(os.path.join(ROOT, "Cargo.toml")), re.M | re.S)
    if not workspace or str(chart.get("appVersion")) != workspace.group(1):
        fail(f"Chart.yaml: appVersion {chart.get('appVersion')!r} is not the workspace version in Cargo.toml")

    templates = {}
    for base, _, files in os.walk(chart_dir):
        for name in sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, chart_dir)
            if rel.startswith("templates" + os.sep):
                templates[rel] = read(path)
            elif name.endswith((".yaml", ".yml")):
                load_docs(read(path), rel)
            elif name.endswith(".json"):
                try:
                    json.loads(read(path))
                except ValueError as e:
                    fail(f"{rel}: not JSON: {e}")

    schema = json.loads(read(os.path.join(chart_dir, "values.schema.json")))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load(read(os.path.join(chart_dir, "values.yaml")))
    for e in validator.iter_errors(defaults):
        fail(f"values.yaml: {'.'.join(map(str, e.path))}: {e.message}")
    for bad in ({"replicas": 2}, {"replicaCount": "2"}, {"image": {"pullPolicy": "Sometimes"}},
                {"rbac": {"clusterWide": "yes"}}, {"watchNamespace": "Not_A_Namespace"}, {"test": {"image": ""}}):
        if validator.is_valid(merge(defaults, bad)):
            fail(f"values.schema.json accepts {bad}")

    # The balance of every template, on its own: parse() refuses a lone {{ or }}, and an if/with/define without end.
    for path, text in templates.items():
        try:
            parse(text, path)
        except TemplateError as e:
            fail(str(e))
    if errors:
        return

    release = {"Name": "bft-operator", "Namespace": "bft-system", "Service": "Helm"}
    cases = {
        "defaults": ({}, "bft-system"),
        "watchNamespace=bft-clusters": ({"watchNamespace": "bft-clusters"}, "bft-clusters"),
        "clusterWide, every option on": ({
            "rbac": {"clusterWide": True},
            "imagePullSecrets": [{"name": "regcred"}],
            "podAnnotations": {"example.com/a": "b"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "dashboard": {"enabled": True, "namespace": "grafana"},
        }, None),
    }
    alerts = yaml.safe_load(read(os.path.join(ROOT, "monitoring/alerts.yaml")))
    dashboard = json.loads(read(os.path.join(ROOT, "monitoring/dashboard.json")))
    for case, (overlay, watch) in cases.items():
        values = merge(defaults, overlay)
        for e in validator.iter_errors(values):
            fail(f"values ({case}): {'.'.join(map(str, e.path))}: {e.message}")
        try:
            rendered = Renderer(chart_dir, values, release).render(templates)
        except TemplateError as e:
            fail(f"rendering ({case}): {e}")
            continue
        objects = []
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in load_docs(text, f"{path} ({case})"):
                if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("metadata", {}).get("name"):
                    fail(f"{path} ({case}): a document without kind or metadata.name")
                objects.append(doc)
        label = f"chart ({case})"
        check_objects([o for o in objects if "helm.sh/hook" not in o["metadata"].get("annotations", {})], label, watch)
        kinds = sorted(o["kind"] for o in objects)
        print(f"  {case}: {len(objects)} objects: {', '.join(kinds)}")
        by_kind = {}
        for o in objects:
            by_kind.setdefault(o["kind"], []).append(o)
        tests = [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        service = by_kind["Service"][0]["metadata"]["name"] if by_kind.get("Service") else "?"
        if len(tests) != 1 or f"{service}.bft-system.svc:8080/metrics" not in json.dumps(tests[0]) or "bft_operator_leader 1" not in json.dumps(tests[0]):
            fail(f"{label}: expected one helm test pod looking for bft_operator_leader 1 at http://{service}.bft-system.svc:8080/metrics")
        monitoring_on = bool(overlay.get("prometheusRule"))
        if monitoring_on:
            rule = (by_kind.get("PrometheusRule") or [{}])[0]
            if rule.get("spec", {}).get("groups") != alerts["groups"]:
                fail(f"{label}: the PrometheusRule's groups are not those of monitoring/alerts.yaml")
            maps = [m for m in by_kind.get("ConfigMap", []) if m["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
            if len(maps) != 1 or json.loads(next(iter(maps[0]["data"].values()))) != dashboard:
                fail(f"{label}: no ConfigMap labelled grafana_dashboard: \"1\" holding monitoring/dashboard.json")
            elif maps[0]["metadata"]["namespace"] != "grafana":
                fail(f"{label}: the dashboard ConfigMap is not in dashboard.namespace")
            monitors = by_kind.get("ServiceMonitor", [])
            if len(monitors) != 1 or monitors[0]["spec"]["selector"]["matchLabels"].items() - by_kind["Service"][0]["metadata"]["labels"].items():
                fail(f"{label}: the ServiceMonitor does not select the operator's Service")
        elif {"PrometheusRule", "ServiceMonitor"} & set(kinds) or "ConfigMap" in kinds:
            fail(f"{label}: monitoring objects rendered while they are off")


# -- kustomize -----------------------------------------------------------------------------------------------------


def check_kustomize(text):
    objects = load_docs(text, "kustomize output")
    crd = yaml.safe_load(read(os.path.join(ROOT, "crds/byzantineclusters.bft.dev.yaml")))
    if [o for o in objects if o.get("kind") == "CustomResourceDefinition"] != [crd]:
        fail("kustomize: the CRD is not exactly crds/byzantineclusters.bft.dev.yaml")
    if any(o.get("kind") == "ByzantineCluster" for o in objects):
        fail("kustomize: the base holds ByzantineClusters (deploy/examples/ must stay out of it)")
    check_objects(objects, "kustomize", None)
    print(f"  {len(objects)} objects: {', '.join(sorted(o.get('kind', '?') for o in objects))}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("chart", "kustomize"):
        sys.exit(__doc__)
    if sys.argv[1] == "chart":
        check_chart(sys.argv[2])
    else:
        check_kustomize(sys.stdin.read() if sys.argv[2] == "-" else read(sys.argv[2]))
    for e in errors:
        print(f"scripts/check-manifests.py: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"{sys.argv[1]}: ok")


if __name__ == "__main__":
    main()
