"""Render the per-simulator Deployment + Service from `infra/k8s/simulator.yaml.tmpl`."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Any

import msgspec
import yaml

from infra.exchange.control import EngineSpec

__all__ = ["TEMPLATE_PATH", "ManifestParams", "label_value", "render", "resource_name"]

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "k8s" / "simulator.yaml.tmpl"


class ManifestParams(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str = "sessiond"
    image: str = "sessiond:latest"
    port: int = 8081
    cpu_request: str = "50m"
    cpu_limit: str = "500m"
    memory_request: str = "64Mi"
    memory_limit: str = "256Mi"
    progress_deadline_s: int = 120


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]
    return cleaned.strip("-_.")


def resource_name(simulator_id: str) -> str:
    """A DNS-1035 label for the Deployment and Service: `sim-<id>`, lower case, <= 63 chars."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", simulator_id.lower())
    return f"sim-{cleaned}"[:63].rstrip("-")


def render(
    spec: EngineSpec, params: ManifestParams, template: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(deployment, service) as plain dicts, ready for the API and for validation."""
    text = Template(template if template is not None else TEMPLATE_PATH.read_text()).substitute(
        name=resource_name(spec.simulator_id),
        namespace=params.namespace,
        image=params.image,
        port=params.port,
        cpu_request=params.cpu_request,
        cpu_limit=params.cpu_limit,
        memory_request=params.memory_request,
        memory_limit=params.memory_limit,
        progress_deadline_s=params.progress_deadline_s,
        session_label=label_value(spec.session_id),
        simulator_label=label_value(spec.simulator_id),
    )
    docs = [d for d in yaml.safe_load_all(text) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"] == "SIMULATOR_SPEC":
            env["value"] = msgspec.json.encode(spec).decode()
    return deployment, service
