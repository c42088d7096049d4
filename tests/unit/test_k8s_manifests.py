"""Every manifest we ship, and the per-simulator ones we render, validate offline."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from infra.provisioners.base import SimulatorSpec
from infra.provisioners.manifests import ManifestParams, label_value, render, resource_name

K8S_DIR = Path(__file__).resolve().parents[2] / "infra" / "k8s"
K8S_VERSION = "1.31"
PROCESSES = ("gateway", "worker", "projector", "reactor", "simulators")


def _docs() -> list[tuple[str, dict]]:
    return [
        (p.name, d)
        for p in sorted(K8S_DIR.glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]


@pytest.mark.parametrize(("name", "doc"), _docs(), ids=[f"{n}:{d['kind']}" for n, d in _docs()])
def test_shipped_manifest_validates(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_process_has_a_deployment_with_limits_and_a_disruption_budget():
    docs = [d for _, d in _docs()]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for proc in PROCESSES:
        assert ("Deployment", f"sessiond-{proc}") in kinds
        assert ("PodDisruptionBudget", f"sessiond-{proc}") in kinds
    assert ("Service", "sessiond-gateway") in kinds
    assert ("HorizontalPodAutoscaler", "sessiond-gateway") in kinds
    assert ("HorizontalPodAutoscaler", "sessiond-worker") in kinds
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_reactor_may_manage_simulator_deployments_and_services():
    docs = [d for _, d in _docs()]
    role = next(d for d in docs if d["kind"] == "Role")
    granted = {
        (g, r)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        if {"create", "delete", "get"} <= set(rule["verbs"])
    }
    assert ("apps", "deployments") in granted and ("", "services") in granted
    reactor = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sessiond-reactor"
    )
    assert reactor["spec"]["template"]["spec"]["serviceAccountName"] == "sessiond-reactor"


@pytest.mark.parametrize(
    "simulator_id",
    [
        "0b5a7c1e-0000-4000-8000-000000000001",
        "Weird_ID with spaces/and/slashes and a very long tail " + "x" * 80,
    ],
)
def test_rendered_simulator_manifests_validate_for_any_id(simulator_id):
    spec = SimulatorSpec(
        simulator_id=simulator_id, session_id="s-1", owner_id="u", initial_symbols=["AAPL"]
    )
    deployment, service = render(spec, ManifestParams())
    for doc in (deployment, service):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    name = resource_name(simulator_id)
    assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
    assert deployment["spec"]["selector"]["matchLabels"]["sessiond.io/simulator-id"] == label_value(
        simulator_id
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
