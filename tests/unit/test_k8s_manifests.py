"""The Kubernetes deployment (infra/k8s: a kustomize base, the dev and prod overlays, the
monitoring component) and the per-simulator manifests the reactor renders at run time.

Both overlays are rendered with `kubectl kustomize` (kubectl ships kustomize) and every built-in
object is validated offline by kubernetes-validate against the schemas of `K8S_VERSIONS`. The
Prometheus Operator's objects (PodMonitor, PrometheusRule) have no schema there: their required
fields are checked here, every PromQL expression is parsed (promql-parser), and every metric the
alerts and the dashboard use is either exported by the code today or listed as pending in
docs/operations.md. Every pod template must pass Pod Security "restricted".
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import promql_parser
import pytest
import yaml

from infra.provisioners.base import SimulatorSpec
from infra.provisioners.manifests import ManifestParams, label_value, render, resource_name
from tests.imagekit import ROOT, procfile

K8S = ROOT / "infra" / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"
OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes we support, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())
CRD_KINDS = {"PodMonitor", "PrometheusRule"}
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
IMAGE_UID = 10001  # the Dockerfile's USER
PRODUCT_PACKAGES = ("actors", "events", "projections", "gateway", "infra")
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (it ships kustomize) is needed: apt-get install kubectl"
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay}: {done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in _render(overlay) if d["kind"] == kind]


def _one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _objects(overlay, kind) if d["metadata"]["name"] == name]
    return found


def _config(overlay: str) -> dict[str, str]:
    return _one(overlay, "ConfigMap", "sessiond-config")["data"]


def _pod_templates(overlay: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _render(overlay):
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]


def _simulator_manifests(simulator_id: str = "0b5a7c1e-0000-4000-8000-000000000001"):
    spec = SimulatorSpec(
        simulator_id=simulator_id, session_id="s-1", owner_id="u", initial_symbols=["AAPL"]
    )
    return render(spec, ManifestParams())


def _addr_port(addr: str) -> int:
    port = urlsplit(f"//{addr}").port
    assert port is not None, addr
    return port


# --------------------------------------------------------------------------- render, validate


def _validation_cases() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (overlay, version, doc)
        for overlay in OVERLAYS
        for doc in _render(overlay)
        if doc["kind"] not in CRD_KINDS
        for version in K8S_VERSIONS
    ]


@pytest.mark.parametrize(
    ("overlay", "version", "doc"),
    _validation_cases(),
    ids=[f"{o}:{v}:{d['kind']}/{d['metadata']['name']}" for o, v, d in _validation_cases()],
)
def test_every_rendered_object_validates(overlay: str, version: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_keeps_every_object_in_its_namespace(overlay: str) -> None:
    (namespace,) = _objects(overlay, "Namespace")
    name = namespace["metadata"]["name"]
    for doc in _render(overlay):
        if doc["kind"] not in ("Namespace",):
            assert doc["metadata"]["namespace"] == name, doc["metadata"]["name"]
    # values kustomize's namespace transformer does not reach: the overlay's replacements do
    assert _config(overlay)["SIMULATOR_K8S_NAMESPACE"] == name
    for binding in _objects(overlay, "RoleBinding"):
        assert {s["namespace"] for s in binding["subjects"]} == {name}
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_overlays_differ_where_their_files_say() -> None:
    assert _objects("dev", "Namespace")[0]["metadata"]["name"] == "sessiond-dev"
    assert _config("dev")["SESSIOND_ENV"] == "dev" and _config("prod")["SESSIOND_ENV"] == "prod"
    assert _config("dev")["SIMULATOR_PROVISIONER"] == "local"
    assert _config("prod")["SIMULATOR_PROVISIONER"] == "kubernetes"
    assert {d["metadata"]["name"] for d in _objects("dev", "StatefulSet")} == {"valkey", "postgres"}
    assert not _objects("prod", "StatefulSet")
    assert not [d for d in _render("dev") if d["kind"] in CRD_KINDS]  # applies without the CRDs
    assert {d["kind"] for d in _render("prod")} >= CRD_KINDS | {"HorizontalPodAutoscaler"}
    assert _one("prod", "Ingress", "sessiond")["spec"]["tls"]
    assert _one("dev", "Ingress", "sessiond")["spec"]["rules"][0]["host"] == "sessiond.localhost"


# --------------------------------------------------------------------------- processes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_procfile_process_runs_from_the_one_image_with_its_name(overlay: str) -> None:
    images = set()
    for name, command in procfile().items():
        deployment = _one(overlay, "Deployment", f"sessiond-{name}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == command[1:], name  # the image's entrypoint is `sessiond`
        images.add(container["image"])
    (job_container,) = _one(overlay, "Job", "sessiond-migrate")["spec"]["template"]["spec"][
        "containers"
    ]
    assert job_container["args"] == ["migrate"]
    images.add(job_container["image"])
    assert len(images) == 1
    # the reactor's simulator pods run the same image
    assert _config(overlay)["SIMULATOR_K8S_IMAGE"] == images.pop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_is_probed_and_serves_metrics_on_the_configured_port(overlay: str) -> None:
    config = _config(overlay)
    metrics_port = _addr_port(config["SESSIOND_METRICS_ADDR"])
    for name in procfile():
        template = _one(overlay, "Deployment", f"sessiond-{name}")["spec"]["template"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == metrics_port, name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (name, probe)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        readiness = container["readinessProbe"]["httpGet"]
        if name == "gateway":
            assert readiness == {"path": "/ready", "port": "http"}
            assert ports["http"] == _addr_port(config["SERVER_ADDR"])
        else:
            assert readiness == {"path": "/healthz", "port": "metrics"}
        live = container["livenessProbe"]
        # a store outage or failover (503 for a while) must not restart every pod at once
        assert live["periodSeconds"] * live["failureThreshold"] >= 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_resource_limits_and_a_disruption_budget(overlay: str) -> None:
    budgets = {
        tuple(sorted(b["spec"]["selector"]["matchLabels"].items()))
        for b in _objects(overlay, "PodDisruptionBudget")
    }
    for name, template in _pod_templates(overlay):
        for container in template["spec"]["containers"]:
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
            assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
    for deployment in _objects(overlay, "Deployment"):
        selector = tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items()))
        assert selector in budgets, deployment["metadata"]["name"]


def test_prod_leaves_the_replica_count_of_autoscaled_deployments_to_the_autoscaler() -> None:
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in _objects("prod", "HorizontalPodAutoscaler")
    }
    assert scaled == {"sessiond-gateway", "sessiond-worker"}
    partitions = int(_config("prod")["SESSIOND_PARTITIONS"])
    for hpa in _objects("prod", "HorizontalPodAutoscaler"):
        assert (
            "replicas"
            not in _one("prod", "Deployment", hpa["spec"]["scaleTargetRef"]["name"])["spec"]
        )
        if hpa["metadata"]["name"] == "sessiond-worker":
            assert hpa["spec"]["maxReplicas"] <= partitions
    # production refuses to start without its secrets: the pods wait for the Secret instead
    for _name, template in _pod_templates("prod"):
        (container,) = template["spec"]["containers"]
        refs = [e["secretRef"] for e in container["envFrom"] if "secretRef" in e]
        assert refs == [{"name": "sessiond-secrets", "optional": False}]


def test_the_migration_job_runs_to_completion_and_cleans_up() -> None:
    for overlay in OVERLAYS:
        job = _one(overlay, "Job", "sessiond-migrate")["spec"]
        assert job["template"]["spec"]["restartPolicy"] == "OnFailure"
        assert job["backoffLimit"] > 0 and job["activeDeadlineSeconds"] > 0
        assert 0 < job["ttlSecondsAfterFinished"] <= 3600


def test_the_reactor_may_manage_simulator_deployments_and_services() -> None:
    for overlay in OVERLAYS:
        role = _one(overlay, "Role", "sessiond-simulator-provisioner")
        granted = {
            (g, r)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            if {"create", "delete", "get"} <= set(rule["verbs"])
        }
        assert ("apps", "deployments") in granted and ("", "services") in granted
        reactor = _one(overlay, "Deployment", "sessiond-reactor")["spec"]["template"]["spec"]
        assert reactor["serviceAccountName"] == "sessiond-reactor"
        # no other sessiond process holds a Kubernetes API token
        for where, template in _pod_templates(overlay):
            if where != "Deployment/sessiond-reactor":
                assert template["spec"]["automountServiceAccountToken"] is False, where


# --------------------------------------------------------------------------- pod security


def _restricted_violations(where: str, pod: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" (the baseline checks included) refuses in a pod spec."""
    bad = []
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}  # fmt: skip
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(f"{where}: {key}")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= allowed_volumes:
            bad.append(f"{where}: volume {volume['name']}")
    pod_ctx = pod.get("securityContext", {})
    if pod_ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        bad.append(f"{where}: pod seccompProfile")
    for container in pod.get("initContainers", []) + pod["containers"]:
        ctx = container.get("securityContext", {})
        name = f"{where}/{container['name']}"
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation")
        if ctx.get("privileged"):
            bad.append(f"{name}: privileged")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities")
        if ctx.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            bad.append(f"{name}: hostPort")
    return bad


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_template_passes_pod_security_restricted(overlay: str) -> None:
    templates = list(_pod_templates(overlay))
    assert len(templates) >= 6
    bad = [v for where, t in templates for v in _restricted_violations(where, t["spec"])]
    assert not bad
    for where, template in templates:
        for container in template["spec"]["containers"]:
            if container["image"] == _config(overlay)["SIMULATOR_K8S_IMAGE"]:
                assert template["spec"]["securityContext"]["runAsUser"] == IMAGE_UID, where


def test_the_restricted_check_refuses_what_restricted_refuses() -> None:
    deployment, _service = _simulator_manifests()
    pod = deployment["spec"]["template"]["spec"]
    assert not _restricted_violations("simulator", pod)
    broken = json.loads(json.dumps(pod))
    broken["securityContext"].pop("seccompProfile")
    broken["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    broken["hostNetwork"] = True
    assert len(_restricted_violations("broken", broken)) == 3


# --------------------------------------------------------------------------- network, ingress


def _gateway_routes() -> list[str]:
    from gateway.app import create_app
    from gateway.config import GatewayConfig

    app = create_app(GatewayConfig())
    return sorted({route.path for route in app.app.routes})


def _routed(path: str, rule_paths: list[dict[str, Any]]) -> bool:
    """Whether an Ingress path matches `path` (Prefix: by whole path elements)."""
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    for rule in rule_paths:
        prefix = rule["path"].rstrip("/")
        if rule["pathType"] == "Exact" and concrete == rule["path"]:
            return True
        if rule["pathType"] == "Prefix" and (
            concrete == prefix or concrete.startswith(prefix + "/")
        ):
            return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_routes_every_public_gateway_route_and_no_internal_one(overlay: str) -> None:
    ingress = _one(overlay, "Ingress", "sessiond")
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    service = _one(overlay, "Service", "sessiond-gateway")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == "sessiond-gateway" and backend["port"]["name"] in port_names
    internal = {"/metrics", "/health", "/ready"}
    for route in _gateway_routes():
        assert _routed(route, paths) == (route not in internal), route
    notes = ingress["metadata"]["annotations"]
    # WebSockets and SSE streams outlive the default 60 s proxy timeouts; SSE must not buffer
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_the_named_ports(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _objects(overlay, "NetworkPolicy")}
    deny = policies["sessiond-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    pods = [
        t["metadata"]["labels"] | {"_ports": _named_ports(t)} for _, t in _pod_templates(overlay)
    ]
    opened = set()
    for name, spec in policies.items():
        selected = [
            p for p in pods
            if all(p.get(k) == v for k, v in spec["podSelector"].get("matchLabels", {}).items())
        ]  # fmt: skip
        assert selected, f"{name} selects no pod"
        for rule in spec.get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str):  # a named port that some selected pod has
                    assert any(port["port"] in p["_ports"] for p in selected), (name, port)
                opened.add(port["port"])
    assert {"http", "grpc", "metrics"} <= opened
    egress = {p["port"] for s in policies.values() for r in s.get("egress", []) for p in r["ports"]}
    assert {53, 6379, 5432} <= egress


def _named_ports(template: dict[str, Any]) -> set[str]:
    return {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


# --------------------------------------------------------------------------- monitoring


def test_the_pod_monitor_scrapes_the_metrics_port_of_every_sessiond_pod() -> None:
    (monitor,) = _objects("prod", "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    labels = spec["selector"]["matchLabels"]
    assert spec["podMetricsEndpoints"], "a PodMonitor needs at least one endpoint"
    for endpoint in spec["podMetricsEndpoints"]:
        assert isinstance(endpoint.get("port"), str) or isinstance(endpoint.get("portNumber"), int)
        assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])
        for relabel in endpoint.get("relabelings", []):
            assert relabel.get("action", "replace") != "replace" or relabel.get("targetLabel")
    selected = [
        (where, t) for where, t in _pod_templates("prod")
        if all(t["metadata"]["labels"].get(k) == v for k, v in labels.items())
    ]  # fmt: skip
    deployments = {w for w, _ in selected if w.startswith("Deployment/")}
    assert deployments == {f"Deployment/sessiond-{name}" for name in procfile()}
    for where, template in selected:
        if where.startswith("Deployment/"):
            assert spec["podMetricsEndpoints"][0]["port"] in _named_ports(template), where
    simulator, _ = _simulator_manifests()
    sim_labels = simulator["spec"]["template"]["metadata"]["labels"]
    assert all(sim_labels.get(k) == v for k, v in labels.items())
    assert "metrics" in _named_ports(simulator["spec"]["template"])


def _rules() -> list[dict[str, Any]]:
    (rule,) = _objects("prod", "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    return [r for g in groups for r in g["rules"]]


def _dashboard() -> dict[str, Any]:
    configmap = _one("prod", "ConfigMap", "sessiond-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    return json.loads(configmap["data"]["sessiond.json"])


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_the_required_fields_a_parsable_expression_and_a_runbook() -> None:
    headings = {
        _slug(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    alerts = []
    for rule in _rules():
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        assert ("alert" in rule) != ("record" in rule), rule
        assert DURATION.match(rule.get("for", "0")), rule
        for key in ("labels", "annotations"):
            assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule
        if "alert" in rule:
            alerts.append(rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning")
            notes = rule["annotations"]
            assert notes["summary"] and notes["description"]
            page, _, anchor = notes["runbook"].partition("#")
            assert page == "docs/operations.md" and anchor in headings, rule["alert"]
    # what the issue asks to be alerted on
    for wanted in ("PartitionsWithoutWorker", "PartitionsWithoutProjector", "ProjectorLagging",
                   "HTTPErrors", "SlowClientDisconnects"):  # fmt: skip
        assert f"Sessiond{wanted}" in alerts


def test_the_dashboard_is_grafana_json_whose_queries_parse() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = _dashboard_exprs()
    assert len(exprs) >= 20
    for expr in exprs:
        promql_parser.parse(expr)


def _metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(re.sub(r"_(bucket|sum|count)$", "", node.name))

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def _exported_metrics() -> set[str]:
    """The first argument of every prometheus_client constructor (or infra.metrics helper) call
    in the product's code."""
    makers = {"Counter", "Gauge", "Histogram", "Summary", "counter", "gauge", "histogram"}
    names = set()
    for package in PRODUCT_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) in makers
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names.add(node.args[0].value)
    return names


def _collected_metrics() -> set[str]:
    """What the process's registry really serves that no constructor call names: the
    process, platform and GC collectors' series (``process_*``, ``python_*``)."""
    from infra.metrics import REGISTRY

    return {sample.name for family in REGISTRY.collect() for sample in family.samples}


def _pending_metrics() -> set[str]:
    """The metric names docs/operations.md lists under "Pending metrics" (none when it has no
    such section)."""
    text = OPERATIONS.read_text()
    if "### Pending metrics" not in text:
        return set()
    section = text.split("### Pending metrics", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z_:*]+)`", section, flags=re.MULTILINE))


def test_alerts_and_dashboard_use_exported_metrics_or_ones_listed_as_pending() -> None:
    used = set().union(*(_metric_names(e) for e in [r["expr"] for r in _rules()]
                         + _dashboard_exprs()))  # fmt: skip
    exported = _exported_metrics() | {
        name for name in _collected_metrics() if name.startswith(("process_", "python_"))
    }
    pending = _pending_metrics()
    assert len(exported) >= 20, exported
    generated = {"up"}  # Prometheus makes it for every target
    collectors = {n for n in pending if n.startswith(("process_", "python_"))}
    unknown = used - exported - pending - generated
    assert not unknown, f"neither exported nor listed as pending in {OPERATIONS.name}: {unknown}"
    # the list stays true: a metric that now exists, or that nothing uses, leaves it
    assert not pending & exported, (
        f"exported now, remove from the pending list: {pending & exported}"
    )
    assert not (pending - collectors) - used, f"listed but unused: {(pending - collectors) - used}"


# --------------------------------------------------------------------------- simulator template


@pytest.mark.parametrize(
    "simulator_id",
    [
        "0b5a7c1e-0000-4000-8000-000000000001",
        "Weird_ID with spaces/and/slashes and a very long tail " + "x" * 80,
    ],
)
def test_rendered_simulator_manifests_validate_and_pass_restricted(simulator_id: str) -> None:
    deployment, service = _simulator_manifests(simulator_id)
    for doc in (deployment, service):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    assert not _restricted_violations("simulator", deployment["spec"]["template"]["spec"])
    name = resource_name(simulator_id)
    assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
    assert deployment["spec"]["selector"]["matchLabels"]["sessiond.io/simulator-id"] == label_value(
        simulator_id
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # it reads the deployment's settings by name: both overlays must keep these names
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = {next(iter(v.values()))["name"] for v in container["envFrom"]}
    for overlay in OVERLAYS:
        assert {"sessiond-config"} <= {
            c["metadata"]["name"] for c in _objects(overlay, "ConfigMap")
        }
    assert refs == {"sessiond-config", "sessiond-secrets"}
