#!/usr/bin/env bash
# Validates everything under deploy/ (and the Dockerfile) with the tools operators use, not by
# eye. Installs what it needs when missing, then reuses it (a second run takes seconds):
#   - PyYAML, kubernetes-validate (Kubernetes JSON schemas, bundled: works offline) and dockerfile
#     (Docker's own parser) in a venv at tests/.deploy-venv;
#   - promtool (Debian package prometheus) and systemd-analyze (Debian package systemd).
# Needs kustomize: `kustomize`, or `kubectl kustomize` (kubectl ships it), and the valet binary:
# $VALET_BIN, else target/debug/valet (`cargo build` makes it). It never runs cargo itself.
#
# Checks (each can fail; all run, then the summary line and a non-zero exit on any failure):
#   yaml          every *.yaml / *.yml under deploy/ parses (duplicate keys are errors)
#   kustomize     base and both overlays build
#   schema        the built manifests validate against the Kubernetes schemas (strict: unknown
#                 fields are errors) for the oldest and newest supported Kubernetes versions
#   wiring        what a schema cannot see: security context, probes on the gRPC health
#                 services Valet reports, selectors, ports, volumes, the config file's paths and
#                 listeners against the pod spec, replicas/strategy per overlay
#   config        `valet check-config` on deploy/valet.example.toml and on the ConfigMap each
#                 overlay builds; the vault overlay's against a stand-in Vault that enforces
#                 deploy/vault/valet-policy.hcl and the Kubernetes role from deploy/vault/README.md
#   promtool      `promtool check rules` and `promtool test rules` for deploy/prometheus/
#   metrics       every metric the alerts and the Grafana dashboard use is in the metrics table
#                 of docs/operations.md; every dashboard query is valid PromQL; every runbook_url
#                 and every #link in docs/operations.md points at one of its headings
#   systemd       `systemd-analyze verify` on the unit, its `systemd-analyze security` exposure
#                 no worse than docs/operations.md states, the sysusers.d file creates the user
#   docker        the Dockerfile parses, is multi-stage, ends on a distroless/scratch base as a
#                 non-root user, and .dockerignore keeps target/ and the dev store out
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
venv=tests/.deploy-venv
py=$venv/bin/python
# Kubernetes versions the manifests must validate against: gRPC probes are GA since 1.27.
k8s_versions=(1.27.0 1.37.0)

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
failures=()
# check NAME COMMAND...: runs the command, prints its output only when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL  $name"
    sed 's/^/      /' "$tmp/out"
  fi
}
die() {
  echo "error: $*" >&2
  exit 2
}

# ---- tools -------------------------------------------------------------------------------------
if ! "$py" -c 'import yaml, kubernetes_validate, dockerfile' 2>/dev/null; then
  echo "==> installing PyYAML, kubernetes-validate and dockerfile into $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'PyYAML==6.0.*' 'kubernetes-validate==1.37.0' 'dockerfile==3.4.0' ||
    die "pip install into $venv failed"
fi
apt_updated=
need_deb() { # need_deb COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "==> installing $1 (Debian package $2)"
  [ "$(id -u)" = 0 ] || die "$1 is missing: apt-get install --no-install-recommends $2 (as root)"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null ||
    die "apt-get install $2 failed"
  command -v "$1" >/dev/null 2>&1 || die "$2 is installed but $1 is not on PATH"
}
need_deb promtool prometheus
need_deb systemd-analyze systemd
if command -v kustomize >/dev/null 2>&1; then
  kustomize_build() { kustomize build "$1"; }
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  kustomize_build() { kubectl kustomize "$1"; }
else
  die "kustomize is needed to build deploy/kubernetes: install kustomize or kubectl (>= 1.27, which has 'kubectl kustomize')"
fi
valet_bin=${VALET_BIN:-target/debug/valet}
[ -x "$valet_bin" ] || die "no valet binary at $valet_bin: build it (cargo build) or set VALET_BIN"
valet_bin=$(cd "$(dirname "$valet_bin")" && pwd)/$(basename "$valet_bin")
# Valet warns about unknown VALET_* variables; run it with only the ones a check sets.
valet() { env -u VALET_BIN "$valet_bin" "$@"; }

# ---- the Python half of the checks ------------------------------------------------------------
cat >"$tmp/checks.py" <<'PYTHON'
"""Checks for tests/deploy.sh; `python checks.py COMMAND ARGS...`."""
import base64, json, os, re, sys, tomllib, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import yaml

ROOT = os.getcwd()
problems = []


def bad(msg):
    problems.append(msg)


def finish():
    for p in problems:
        print("  -", p)
    sys.exit(1 if problems else 0)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Kubernetes would silently take the last one)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def cmd_yaml():
    n = 0
    for d, _, files in os.walk("deploy"):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                path = os.path.join(d, f)
                n += 1
                try:
                    with open(path) as fh:
                        list(yaml.load_all(fh, Loader=StrictLoader))
                except yaml.YAMLError as e:
                    bad(f"{path}: {e}")
    if n == 0:
        bad("no YAML file under deploy/")
    print(f"{n} YAML files parsed")
    finish()


# ---- Kubernetes wiring ------------------------------------------------------------------------

def load_docs(path):
    with open(path) as fh:
        return [d for d in yaml.load_all(fh, Loader=StrictLoader) if d]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def cmd_wiring(overlay, built, toml_out, facts_out):
    docs = load_docs(built)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    want = {"Namespace", "ServiceAccount", "ConfigMap", "Service", "Deployment",
            "PodDisruptionBudget", "NetworkPolicy"}
    if overlay == "embedded":
        want.add("PersistentVolumeClaim")
    for k in sorted(want - by_kind.keys()):
        bad(f"no {k} in the build")
    if problems:
        finish()
    ns = by_kind["Namespace"][0]["metadata"]["name"]
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns:
            bad(f"{d['kind']}/{d['metadata']['name']} is not in namespace {ns}")
    [dep] = by_kind["Deployment"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    spec = pod["spec"]
    if not matches(dep["spec"]["selector"].get("matchLabels"), labels):
        bad("the Deployment's selector does not select its own pods")

    # Security: the restricted Pod Security Standard and then some.
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        bad("pod securityContext.runAsNonRoot is not true")
    if not psc.get("runAsUser"):
        bad("pod securityContext.runAsUser is not a non-zero uid")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad("pod seccompProfile is not RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        bad("the API-server token is mounted (automountServiceAccountToken is not false)")
    if spec.get("enableServiceLinks") is not False:
        bad("enableServiceLinks is not false (a Service named valet injects VALET_* variables)")
    sa_names = {s["metadata"]["name"] for s in by_kind["ServiceAccount"]}
    if spec.get("serviceAccountName") not in sa_names:
        bad(f"serviceAccountName {spec.get('serviceAccountName')!r} is not a ServiceAccount of the build")
    containers = spec["containers"]
    [c] = [c for c in containers if c["name"] == "valet"] or [None]
    if c is None:
        bad("no container named valet")
        finish()
    for ctr in containers + spec.get("initContainers", []):
        sc = ctr.get("securityContext", {})
        name = ctr["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(f"{name}: readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            bad(f"{name}: capabilities do not drop ALL")
        if sc.get("capabilities", {}).get("add"):
            bad(f"{name}: adds capabilities")
        if sc.get("privileged"):
            bad(f"{name}: privileged")
        res = ctr.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    bad(f"{name}: no resources.{part}.{r}")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if "grpc" not in ports or "http" not in ports:
        bad("the valet container does not name its grpc and http ports")
        finish()
    # Probes: Kubernetes' native gRPC probe on grpc.health.v1, for services Valet reports.
    health_src = open("src/app/health.rs").read() + open("src/app/mod.rs").read()
    for kind in ("livenessProbe", "readinessProbe"):
        probe = c.get(kind)
        if not probe or "grpc" not in probe:
            bad(f"{kind} is not a gRPC probe")
            continue
        if probe["grpc"].get("port") != ports["grpc"]:
            bad(f"{kind} probes port {probe['grpc'].get('port')}, not the gRPC port {ports['grpc']}")
        service = probe["grpc"].get("service", "")
        if f'"{service}"' not in health_src:
            bad(f"{kind} asks for health service {service!r}, which Valet never reports "
                "(src/app/health.rs, src/app/mod.rs)")
    ready = c.get("readinessProbe", {}).get("grpc", {}).get("service", "")
    if ready == "":
        bad("readinessProbe checks the overall status, which does not follow the store")
    if c.get("livenessProbe", {}).get("grpc", {}).get("service", "") != "":
        bad("livenessProbe checks a service that follows the store: a Vault outage would restart pods")

    # Volumes and mounts.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    for m in mounts:
        if m["name"] not in volumes:
            bad(f"volumeMount {m['name']} has no volume")
    names = {k: {d["metadata"]["name"] for d in by_kind.get(k, [])}
             for k in ("ConfigMap", "Secret", "PersistentVolumeClaim")}
    external_secrets = {"valet-admin-key"}  # created by the operator (docs/operations.md)
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in names["ConfigMap"]:
            bad(f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not in the build")
        if "secret" in v and v["secret"]["secretName"] not in names["Secret"] | external_secrets:
            bad(f"volume {v['name']}: Secret {v['secret']['secretName']} is neither built nor documented")
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in names["PersistentVolumeClaim"]:
            bad(f"volume {v['name']}: PVC {v['persistentVolumeClaim']['claimName']} is not in the build")

    def mount_of(path):
        best = None
        for m in mounts:
            if under(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
                best = m
        return best

    tmpm = mount_of("/tmp")
    if not tmpm or tmpm.get("readOnly"):
        bad("/tmp is not a writable volume (the root filesystem is read-only)")

    # The config file: --config PATH must be a key of the mounted ConfigMap.
    args = c.get("args", [])
    if "--config" not in args:
        bad("the container does not pass --config")
        finish()
    cfg_path = args[args.index("--config") + 1]
    m = mount_of(cfg_path)
    vol = volumes.get(m["name"]) if m else None
    if not vol or "configMap" not in vol:
        bad(f"--config {cfg_path} is not on a ConfigMap volume")
        finish()
    [cm] = [d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == vol["configMap"]["name"]]
    key = os.path.relpath(cfg_path, m["mountPath"])
    if key not in cm.get("data", {}):
        bad(f"ConfigMap {cm['metadata']['name']} has no key {key} (--config {cfg_path})")
        finish()
    text = cm["data"][key]
    with open(toml_out, "w") as fh:
        fh.write(text)
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        bad(f"the ConfigMap's {key} is not TOML: {e}")
        finish()

    for field, port in (("grpc_listen", "grpc"), ("http_listen", "http")):
        addr = cfg.get(field, "")
        if not addr.endswith(f":{ports[port]}"):
            bad(f"{field} = {addr!r} is not on the container's {port} port {ports[port]}")
        if addr.startswith("127.") or addr.startswith("[::1]"):
            bad(f"{field} = {addr!r} is loopback: the Service cannot reach it")
    data_dir = cfg.get("data_dir", "./valet-data")
    dm = mount_of(data_dir)
    if not dm or dm.get("readOnly"):
        bad(f"data_dir {data_dir} is not on a writable volume")
    if "admin_key_file" in cfg:
        am = mount_of(cfg["admin_key_file"])
        if not am or "secret" not in volumes.get(am["name"], {}):
            bad(f"admin_key_file {cfg['admin_key_file']} is not on a Secret volume")
    elif not cfg.get("callers"):
        bad("the config has neither admin_key_file nor [[callers]]: the daemon would refuse it")

    # Service, disruption budget and network policy select the pods and use real ports.
    for svc in by_kind["Service"]:
        if not matches(svc["spec"].get("selector"), labels):
            bad(f"Service {svc['metadata']['name']} does not select the pods")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            if tp not in ports and tp not in ports.values():
                bad(f"Service port {p.get('name')} targets {tp!r}, which the container does not expose")
    for pdb in by_kind["PodDisruptionBudget"]:
        if not matches(pdb["spec"]["selector"].get("matchLabels"), labels):
            bad("the PodDisruptionBudget does not select the pods")
    for np in by_kind["NetworkPolicy"]:
        if not matches(np["spec"]["podSelector"].get("matchLabels"), labels):
            bad("the NetworkPolicy does not select the pods")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str) and p["port"] not in ports:
                    bad(f"NetworkPolicy ingress names port {p['port']!r}, which the container does not have")

    replicas = dep["spec"].get("replicas", 1)
    strategy = dep["spec"].get("strategy", {}).get("type", "RollingUpdate")
    facts = {"namespace": ns, "service_account": spec.get("serviceAccountName")}
    if overlay == "embedded":
        if cfg.get("store", "embedded") != "embedded":
            bad(f"the embedded overlay's config says store = {cfg.get('store')!r}")
        if replicas != 1:
            bad(f"embedded store with {replicas} replicas: one process per data directory")
        if strategy != "Recreate":
            bad(f"embedded store with strategy {strategy}: the new pod would wait for the old one's lock")
        if not dm or "persistentVolumeClaim" not in volumes.get(dm["name"], {}):
            bad(f"data_dir {data_dir} is not on a PersistentVolumeClaim: the store would not survive the pod")
    elif overlay == "vault":
        if cfg.get("store") != "vault":
            bad(f"the vault overlay's config says store = {cfg.get('store')!r}")
        if replicas < 2:
            bad(f"the vault overlay runs {replicas} replica(s); it exists to run several")
        env = {e["name"]: e for e in c.get("env", [])}
        if "VALET_REPLICA_URL" not in env:
            bad("the vault overlay's replicas set no VALET_REPLICA_URL: a consent callback on the wrong replica would fail")
        auth = cfg.get("vault", {}).get("auth", {})
        if auth.get("method") != "kubernetes":
            bad(f"vault.auth.method = {auth.get('method')!r}, not kubernetes")
        jwt = auth.get("jwt_file", "/var/run/secrets/kubernetes.io/serviceaccount/token")
        jm = mount_of(jwt)
        pv = volumes.get(jm["name"], {}) if jm else {}
        sources = [s["serviceAccountToken"] for s in pv.get("projected", {}).get("sources", [])
                   if "serviceAccountToken" in s]
        tok = [s for s in sources if os.path.join(jm["mountPath"], s["path"]) == jwt] if jm else []
        if not tok:
            bad(f"vault.auth.jwt_file {jwt} is not a projected ServiceAccount token of the pod")
        else:
            facts["audience"] = tok[0].get("audience")
        facts["auth_mount"] = auth.get("mount", "kubernetes")
        facts["role"] = auth.get("role")
        facts["kv_mount"] = cfg["vault"].get("mount", "secret")
        facts["prefix"] = cfg["vault"].get("prefix", "valet/")
    with open(facts_out, "w") as fh:
        json.dump(facts, fh)
    if not problems:
        print(f"{overlay}: {len(docs)} resources wired consistently")
    finish()


# ---- a stand-in Vault for check-config -------------------------------------------------------

def parse_role(readme):
    """The `vault write auth/<mount>/role/<name> k=v ...` and `vault policy write` lines."""
    text = re.sub(r"[ \t]*\\\n\s*", " ", open(readme).read())
    roles = {}
    for m in re.finditer(r"vault write auth/([\w-]+)/role/([\w-]+)((?:[ \t]+[\w-]+=\S+)+)", text):
        kv = dict(p.split("=", 1) for p in m.group(3).split())
        roles[(m.group(1), m.group(2))] = kv
    policies = dict(re.findall(r"vault policy write ([\w-]+) (\S+\.hcl)", text))
    return roles, policies


def parse_hcl_policy(path):
    rules = []
    for m in re.finditer(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', open(path).read()):
        caps = set(re.findall(r'"(\w+)"', m.group(2)))
        rules.append((m.group(1), caps))
    if not rules:
        raise SystemExit(f"no path rules in {path}")
    return rules


def allowed(rules, path, cap):
    for pattern, caps in rules:
        rx = "^" + re.escape(pattern).replace(r"\+", "[^/]+")
        rx = rx[:-2] + ".*$" if pattern.endswith("*") else rx + "$"
        if re.match(rx, path) and cap in caps:
            return True
    return False


def b64json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def cmd_fake_vault(facts_path, port_file, jwt_out):
    facts = json.load(open(facts_path))
    roles, policies = parse_role("deploy/vault/README.md")
    key = (facts["auth_mount"], facts["role"])
    if key not in roles:
        raise SystemExit(f"deploy/vault/README.md creates no role auth/{key[0]}/role/{key[1]} "
                         f"(it has {sorted(roles)}); the vault overlay logs in with that one")
    role = roles[key]
    rules = []
    for name in role.get("token_policies", "").split(","):
        if name not in policies:
            raise SystemExit(f"role policy {name!r} is not written by deploy/vault/README.md")
        rules += parse_hcl_policy(policies[name])
    # The token the kubelet would project for this pod.
    claims = {"iss": "https://kubernetes.default.svc", "sub":
              f"system:serviceaccount:{facts['namespace']}:{facts['service_account']}",
              "aud": [facts.get("audience") or "https://kubernetes.default.svc"],
              "kubernetes.io": {"namespace": facts["namespace"],
                                "serviceaccount": {"name": facts["service_account"]}}}
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o).encode()).decode().rstrip("=")
    with open(jwt_out, "w") as fh:
        fh.write(f"{enc({'alg': 'RS256'})}.{enc(claims)}.c2ln\n")
    secrets, tokens = {}, set()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def refuse(self, code, why):
            print(f"stand-in Vault refused {self.command} {self.path}: {why}", file=sys.stderr, flush=True)
            self.reply(code, {"errors": [why]})

        def env(self, data=None, auth=None):
            return {"request_id": "r", "lease_id": "", "renewable": False, "lease_duration": 0,
                    "data": data, "wrap_info": None, "warnings": None, "auth": auth}

        def handle_any(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"null") if n else None
            path = self.path.split("?")[0].removeprefix("/v1/")
            if path.startswith("auth/") and path.endswith("/login"):
                mount = path[len("auth/"):-len("/login")]
                r = roles.get((mount, (body or {}).get("role")))
                if r is None:
                    return self.refuse(400, f"no role {(body or {}).get('role')!r} at auth/{mount}")
                c = b64json((body or {}).get("jwt", "..").split(".")[1])
                ns, sa = c["kubernetes.io"]["namespace"], c["kubernetes.io"]["serviceaccount"]["name"]
                if sa not in r.get("bound_service_account_names", "").split(","):
                    return self.refuse(403, f"service account {sa} is not bound to the role")
                if ns not in r.get("bound_service_account_namespaces", "").split(","):
                    return self.refuse(403, f"namespace {ns} is not bound to the role")
                if "audience" in r and r["audience"] not in c["aud"]:
                    return self.refuse(403, f"token audience {c['aud']} lacks the role's {r['audience']}")
                if "audience" not in r and c["aud"] != ["https://kubernetes.default.svc"]:
                    return self.refuse(403, f"token audience {c['aud']}, but the role sets no audience")
                tok = f"stand-in-{len(tokens)}"
                tokens.add(tok)
                return self.reply(200, self.env(auth={
                    "client_token": tok, "accessor": "a", "policies": ["default"],
                    "token_policies": ["default"], "metadata": {}, "lease_duration": 3600,
                    "renewable": True, "entity_id": "", "token_type": "service", "orphan": True}))
            if self.headers.get("X-Vault-Token") not in tokens:
                return self.refuse(403, "no or unknown token")
            method = self.command
            if method == "GET" and "list=true" in self.path:
                method = "LIST"
            cap = {"GET": "read", "LIST": "list", "DELETE": "delete"}.get(method)
            data_prefix = f"{facts['kv_mount']}/data/"
            if method in ("POST", "PUT"):
                cap = "update" if path.removeprefix(data_prefix) in secrets else "create"
                if path.startswith("auth/token/"):
                    cap = "update"
            if not allowed(rules, path, cap):
                return self.refuse(403, f"policy does not allow {cap} on {path}")
            if path == "auth/token/lookup-self":
                return self.reply(200, self.env({"ttl": 3600, "renewable": True, "policies": ["default"]}))
            if path.startswith(data_prefix):
                k = path[len(data_prefix):]
                if method == "GET":
                    if k not in secrets:
                        return self.reply(404, {"errors": []})
                    v, ver = secrets[k]
                    return self.reply(200, self.env({"data": v, "metadata": {
                        "created_time": "2026-01-01T00:00:00Z", "custom_metadata": None,
                        "deletion_time": "", "destroyed": False, "version": ver}}))
                cur = secrets.get(k, (None, 0))[1]
                cas = ((body or {}).get("options") or {}).get("cas")
                if cas is not None and cas != cur:
                    return self.refuse(400, "check-and-set parameter did not match")
                secrets[k] = (body["data"], cur + 1)
                return self.reply(200, self.env({"created_time": "2026-01-01T00:00:00Z",
                                                 "custom_metadata": None, "deletion_time": "",
                                                 "destroyed": False, "version": cur + 1}))
            meta_prefix = f"{facts['kv_mount']}/metadata/"
            if path.startswith(meta_prefix) and method == "DELETE":
                secrets.pop(path[len(meta_prefix):], None)
                return self.reply(204)
            return self.refuse(404, "the stand-in has no such endpoint")

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = handle_any

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(port_file + ".tmp", "w") as fh:
        fh.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


# ---- metrics, alerts, dashboard ---------------------------------------------------------------

def slug(heading):
    """GitHub's heading anchor."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def cmd_metrics(rules_out):
    doc = open("docs/operations.md").read()
    table = {}
    for m in re.finditer(r"^\|\s*`(valet_\w+)`\s*\|\s*(\w+)\s*\|", doc, re.M):
        table[m.group(1)] = m.group(2)
    if len(table) < 10:
        bad(f"docs/operations.md's metrics table has only {len(table)} rows")
    anchors = {slug(h) for h in re.findall(r"^#+\s+(.*)$", doc, re.M)}
    for link in re.findall(r"\]\(#([\w-]+)\)", doc):
        if link not in anchors:
            bad(f"docs/operations.md links to #{link}, which is not one of its headings")

    def known(name):
        if name in table:
            return True
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and table.get(base) == "histogram":
                return True
        return False

    def names_in(expr):
        return set(re.findall(r"\b(valet_\w+)", expr))

    with open("deploy/prometheus/alerts.yaml") as fh:
        alerts = yaml.safe_load(fh)
    used = set()
    for g in alerts["groups"]:
        for r in g["rules"]:
            for n in names_in(r["expr"]):
                used.add(n)
                if not known(n):
                    bad(f"alert {r.get('alert')}: metric {n} is not in docs/operations.md")
            url = r.get("annotations", {}).get("runbook_url", "")
            if not url.startswith("docs/operations.md#"):
                bad(f"alert {r.get('alert')}: runbook_url {url!r} is not a docs/operations.md anchor")
            elif url.split("#", 1)[1] not in anchors:
                bad(f"alert {r.get('alert')}: docs/operations.md has no heading #{url.split('#', 1)[1]}")
            if "severity" not in r.get("labels", {}):
                bad(f"alert {r.get('alert')}: no severity label")
            if "for" not in r:
                bad(f"alert {r.get('alert')}: no for:")
            for a in ("summary", "description"):
                if a not in r.get("annotations", {}):
                    bad(f"alert {r.get('alert')}: no {a} annotation")

    try:
        dash = json.load(open("deploy/grafana/valet.json"))
    except json.JSONDecodeError as e:
        bad(f"deploy/grafana/valet.json is not JSON: {e}")
        open(rules_out, "w").write("groups: []\n")
        finish()
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    if not exprs:
        bad("the dashboard has no queries")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        for n in names_in(str(q or "")):
            used.add(n)
            if not known(n):
                bad(f"dashboard variable {v['name']}: metric {n} is not in docs/operations.md")
    rules = []
    for i, (title, e) in enumerate(exprs):
        for n in names_in(e):
            used.add(n)
            if not known(n):
                bad(f"dashboard panel {title!r}: metric {n} is not in docs/operations.md")
        # Grafana's variables, as Prometheus would receive them.
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        e = re.sub(r"\$\{?(\w+)\}?", ".*", e)
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    with open(rules_out, "w") as fh:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, fh)
    unused = sorted(set(table) - {re.sub(r"_(bucket|sum|count)$", "", n) for n in used} - set(used))
    print(f"{len(table)} documented metrics; {len(exprs)} dashboard queries; "
          f"documented but neither alerted on nor graphed: {unused or 'none'}")
    finish()


# ---- Dockerfile -------------------------------------------------------------------------------

def dockerignore_excludes(patterns, path):
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent."""
    import fnmatch
    excluded = False
    parts = path.split("/")
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), p) for i in range(len(parts))):
            excluded = not neg
    return excluded


def cmd_docker():
    import dockerfile
    cmds = dockerfile.parse_file("Dockerfile")
    froms = [c for c in cmds if c.cmd.upper() == "FROM"]
    if len(froms) < 2:
        bad("the Dockerfile is not multi-stage")
    last = froms[-1].value[0] if froms else ""
    if not (last.startswith("gcr.io/distroless/") or last == "scratch"):
        bad(f"the final stage is {last!r}, not distroless or scratch")
    final = cmds[cmds.index(froms[-1]):] if froms else []
    users = [c.value[0] for c in final if c.cmd.upper() == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        bad("the final stage does not switch to a non-root USER")
    if not any(c.cmd.upper() == "ENTRYPOINT" for c in final):
        bad("the final stage has no ENTRYPOINT")
    build = " ".join(" ".join(c.value) for c in cmds if c.cmd.upper() == "RUN")
    if "--locked" not in build or "--release" not in build:
        bad("the build is not `cargo build --release --locked`")
    patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
    for p in ("target/debug/valet", "valet-data/store.key", ".git/config", "tests/.deploy-venv/x",
              "clients/python/x"):
        if not dockerignore_excludes(patterns, p):
            bad(f".dockerignore lets {p} into the build context")
    # Everything the release build reads must be in the context.
    needed = ["Cargo.toml", "Cargo.lock", "build.rs", "src/main.rs", "proto/valet/v1/valet.proto"]
    needed += [f"profiles/{f}" for f in os.listdir("profiles")]
    needed += [f"benches/{f}" for f in os.listdir("benches")]  # [[bench]] targets must exist
    for p in needed:
        if not dockerignore_excludes(patterns, p):
            continue
        bad(f".dockerignore keeps {p} out, but the build needs it")
    print(f"{len(cmds)} Dockerfile instructions, final stage {last}")
    finish()


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"yaml": cmd_yaml, "wiring": cmd_wiring, "fake-vault": cmd_fake_vault,
     "metrics": cmd_metrics, "docker": cmd_docker}[cmd](*args)
PYTHON
checks() { "$py" "$tmp/checks.py" "$@"; }

# ---- YAML ---------------------------------------------------------------------------------------
echo "==> YAML under deploy/"
check "yaml: every file under deploy/ parses" checks yaml

# ---- Kubernetes ---------------------------------------------------------------------------------
echo "==> Kubernetes (deploy/kubernetes)"
for target in base overlays/embedded overlays/vault; do
  name=${target#overlays/}
  check "kustomize: $target builds" kustomize_build "deploy/kubernetes/$target"
  kustomize_build "deploy/kubernetes/$target" >"$tmp/$name.yaml" 2>/dev/null
  for v in "${k8s_versions[@]}"; do
    check "schema: $target against Kubernetes $v (strict)" \
      "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/$name.yaml"
  done
done
for overlay in embedded vault; do
  check "wiring: overlays/$overlay" \
    checks wiring "$overlay" "$tmp/$overlay.yaml" "$tmp/$overlay.toml" "$tmp/$overlay.facts.json"
done

# ---- valet check-config ---------------------------------------------------------------------
echo "==> valet check-config ($valet_bin)"
config_ok() { # config_ok LOG COMMAND...: exit 0 and the store probe succeeded
  local log=$1
  shift
  "$@" >"$log" 2>&1
  local rc=$?
  cat "$log"
  [ $rc = 0 ] && grep -q "configuration is valid" "$log"
}
# The example lists every key; its [[callers]] are commented out (each deployment makes its own
# keys), so the check names an admin key file, as a deployment would. Data goes to a temp dir.
echo "valet_example-admin-key-0123456789abcdef" >"$tmp/admin-key"
chmod 600 "$tmp/admin-key"
# The data directories exist, as the pod's volume does: check-config reports a missing one
# instead of probing the store in it.
mkdir -p -m 700 "$tmp/example-data" "$tmp/embedded-data"
check "config: deploy/valet.example.toml" config_ok "$tmp/example.log" \
  valet check-config --config deploy/valet.example.toml \
  --data-dir "$tmp/example-data" --admin-key-file "$tmp/admin-key"
# A commented-out section, uncommented as the example shows, is still valid (no key of another
# section lands under it).
sed -e 's/^# \[telemetry\]$/[telemetry]/' -e 's/^# otlp_endpoint = /otlp_endpoint = /' \
  deploy/valet.example.toml >"$tmp/example-telemetry.toml"
check "config: valet.example.toml with [telemetry] uncommented" config_ok "$tmp/example-tel.log" \
  valet check-config --config "$tmp/example-telemetry.toml" \
  --data-dir "$tmp/example-data" --admin-key-file "$tmp/admin-key"
# The embedded overlay's ConfigMap, as built; its data_dir is a volume in the pod, a temp dir here.
check "config: overlays/embedded ConfigMap" config_ok "$tmp/embedded.log" \
  valet check-config --config "$tmp/embedded.toml" --data-dir "$tmp/embedded-data"
# The vault overlay's ConfigMap against a stand-in Vault: Kubernetes login with the role from
# deploy/vault/README.md for the pod's ServiceAccount and token audience, then check-config's
# write/read/delete probe under the policy deploy/vault/valet-policy.hcl. The address and the
# token path are the pod's; here they point at the stand-in and a token made from the manifests.
vault_check() {
  [ -s "$tmp/vault.facts.json" ] || { echo "the vault overlay's wiring check found no facts"; return 1; }
  rm -f "$tmp/vault.port"
  # Started directly (not through the checks function) so that $! is the server itself.
  "$py" "$tmp/checks.py" fake-vault "$tmp/vault.facts.json" "$tmp/vault.port" "$tmp/sa-token" \
    2>"$tmp/fake-vault.log" &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$tmp/vault.port" ] && break; sleep 0.1; done
  if [ ! -s "$tmp/vault.port" ]; then
    cat "$tmp/fake-vault.log"
    return 1
  fi
  local n
  n=$(grep -c '^jwt_file = ' "$tmp/vault.toml")
  [ "$n" = 1 ] || { echo "the vault ConfigMap should set vault.auth.jwt_file once (found $n)"; return 1; }
  sed "s#^jwt_file = .*#jwt_file = \"$tmp/sa-token\"#" "$tmp/vault.toml" >"$tmp/vault-local.toml"
  VALET_VAULT_ADDR="http://127.0.0.1:$(cat "$tmp/vault.port")" \
    config_ok "$tmp/vault.log" valet check-config --config "$tmp/vault-local.toml" \
    --data-dir "$tmp/vault-data"
  local rc=$?
  cat "$tmp/fake-vault.log"
  return $rc
}
check "config: overlays/vault ConfigMap (Kubernetes auth, policy enforced)" vault_check

# ---- Prometheus -------------------------------------------------------------------------------
echo "==> Prometheus rules (deploy/prometheus)"
check "promtool: check rules alerts.yaml" promtool check rules deploy/prometheus/alerts.yaml
check "promtool: test rules alerts_test.yaml" promtool test rules deploy/prometheus/alerts_test.yaml

# ---- metrics names, dashboard ------------------------------------------------------------------
echo "==> metric names and the Grafana dashboard"
check "metrics: alerts and dashboard use documented metrics" checks metrics "$tmp/dashboard-rules.yaml"
check "metrics: every dashboard query is valid PromQL" promtool check rules "$tmp/dashboard-rules.yaml"

# ---- systemd ------------------------------------------------------------------------------------
echo "==> systemd (deploy/systemd)"
# The unit runs /usr/local/bin/valet, which does not exist on this machine; verify a copy whose
# ExecStart is the binary under test (everything else unchanged).
unit_copy() {
  mkdir -p "$tmp/unit"
  sed "s#^ExecStart=/usr/local/bin/valet #ExecStart=$valet_bin #" deploy/systemd/valet.service \
    >"$tmp/unit/valet.service"
  grep -q "^ExecStart=$valet_bin " "$tmp/unit/valet.service" ||
    { echo "ExecStart is not /usr/local/bin/valet …"; return 1; }
}
verify_unit() {
  unit_copy || return 1
  local out
  out=$(systemd-analyze verify "$tmp/unit/valet.service" 2>&1)
  local rc=$?
  echo "$out"
  # verify exits 0 on some warnings; any output about our unit is a problem.
  [ $rc = 0 ] && ! grep -q "valet.service" <<<"$out"
}
check "systemd: systemd-analyze verify valet.service" verify_unit
security_unit() {
  unit_copy || return 1
  local doc measured
  doc=$(grep -oP 'overall exposure level \*\*\K[0-9.]+' docs/operations.md | head -1)
  [ -n "$doc" ] || { echo "docs/operations.md states no 'overall exposure level **N.N'"; return 1; }
  measured=$(systemd-analyze security --offline=true --no-pager "$tmp/unit/valet.service" 2>&1 |
    grep -oP 'Overall exposure level for valet.service: \K[0-9.]+')
  echo "measured exposure $measured, documented $doc"
  [ -n "$measured" ] && awk -v m="$measured" -v d="$doc" 'BEGIN { exit !(m <= d) }'
}
check "systemd: security exposure no worse than documented" security_unit
sysusers() {
  mkdir -p "$tmp/sysroot/etc/sysusers.d"
  cp deploy/systemd/valet.sysusers.conf "$tmp/sysroot/etc/sysusers.d/valet.conf"
  local out
  out=$(systemd-sysusers --root="$tmp/sysroot" 2>&1)
  echo "$out"
  ! grep -qi "ignoring\|unknown\|failed\|invalid" <<<"$out" &&
    grep -q "^valet:" "$tmp/sysroot/etc/passwd" &&
    grep -q "User=valet" deploy/systemd/valet.service
}
check "systemd: valet.sysusers.conf creates the unit's user" sysusers

# ---- container image ----------------------------------------------------------------------------
echo "==> Dockerfile"
check "docker: Dockerfile and .dockerignore" checks docker

echo
if [ "$failed" -gt 0 ]; then
  echo "deploy checks failed: ${failures[*]}" >&2
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
