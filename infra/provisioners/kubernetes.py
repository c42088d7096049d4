"""`kubernetes` provisioner: one Deployment + Service per simulator, via the official client.

Created with the labels of its session and simulator, resource limits and a readiness probe
(`infra/k8s/simulator.yaml.tmpl`), then watched (its status polled) until a replica is ready,
or until the API reports that the rollout failed (the condition's reason and message become the
simulator's ERROR reason). The official client is synchronous: calls run in a worker thread.

Auth: in-cluster service account inside a pod (`KUBERNETES_SERVICE_HOST` set, read by
`infra.config` into `SimulatorSettings.k8s_in_cluster`), else a kubeconfig
(`SIMULATOR_K8S_KUBECONFIG`, default `~/.kube/config`), or a ready `ApiClient` (tests).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from infra.provisioners.base import (
    ProvisionerStatus,
    ProvisionerUnavailable,
    ProvisionFailed,
    ProvisionState,
    SimulatorSpec,
)
from infra.provisioners.manifests import ManifestParams, render, resource_name

__all__ = ["KubernetesProvisioner", "api_client_from_env", "deployment_state"]

T = TypeVar("T")

_TRANSIENT_STATUSES = {0, 408, 429, 500, 502, 503, 504}


def api_client_from_env(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    in_cluster: bool = False,
    timeout_retries: int = 0,
) -> k8s.ApiClient:
    """An `ApiClient`: the pod's service account `in_cluster` (inside a pod, unless a
    `kubeconfig` is given), otherwise the kubeconfig."""
    configuration = k8s.Configuration()
    if in_cluster and not kubeconfig:
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    # our circuit breaker does the retrying, with backoff; urllib3's own retries would hide it
    configuration.retries = timeout_retries
    return k8s.ApiClient(configuration)


def _api_reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        message = body.get("message") or ""
        reason = body.get("reason") or exc.reason or ""
    except (ValueError, AttributeError):
        message, reason = (exc.body or "").strip()[:300], exc.reason or ""
    return f"Kubernetes API {exc.status} {reason}: {message}".strip().rstrip(":")


def _network_reason(exc: BaseException) -> str:
    """The short cause of a network failure ("[Errno 111] Connection refused", "timed out")."""
    inner = getattr(exc, "reason", None) or exc
    text = str(inner)
    match = re.search(r"(\[Errno -?\d+\][^)\"']*)", text)
    if match:
        return match.group(1).strip()
    if isinstance(inner, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timed out"
    return f"{type(inner).__name__}: {text}"[:200]


def deployment_state(deployment: Any) -> ProvisionerStatus:
    """READY / PENDING / FAILED (with the API's reason) from a V1Deployment's status."""
    status = deployment.status
    if status is None:
        return ProvisionerStatus(state=ProvisionState.PENDING)
    for cond in status.conditions or []:
        failed = (cond.type == "ReplicaFailure" and cond.status == "True") or (
            cond.type == "Progressing" and cond.status == "False"
        )
        if failed:
            reason = ": ".join(p for p in (cond.reason, cond.message) if p)
            return ProvisionerStatus(
                state=ProvisionState.FAILED, reason=reason or "deployment failed"
            )
    if (status.ready_replicas or 0) >= 1:
        return ProvisionerStatus(state=ProvisionState.READY)
    return ProvisionerStatus(state=ProvisionState.PENDING)


class KubernetesProvisioner:
    name = "kubernetes"

    def __init__(
        self,
        api_client: k8s.ApiClient,
        params: ManifestParams | None = None,
        *,
        ready_timeout_s: float = 120.0,
        poll_interval_s: float = 1.0,
        request_timeout_s: float = 10.0,
        on_manifest: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.api_client = api_client
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.params = params or ManifestParams()
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self.request_timeout_s = request_timeout_s
        self.on_manifest = on_manifest

    def endpoint(self, simulator_id: str) -> str:
        name = resource_name(simulator_id)
        return f"http://{name}.{self.params.namespace}.svc.cluster.local:{self.params.port}"

    async def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        ok_statuses: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> T | None:
        """Run one API call in a thread; map the client's errors onto ours."""
        kwargs["_request_timeout"] = self.request_timeout_s
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status in ok_statuses:
                return None
            if exc.status in _TRANSIENT_STATUSES:
                raise ProvisionerUnavailable(_api_reason(exc)) from exc
            raise ProvisionFailed(_api_reason(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = self.api_client.configuration.host
            raise ProvisionerUnavailable(
                f"Kubernetes API at {host} unreachable: {_network_reason(exc)}"
            ) from exc

    async def provision(self, spec: SimulatorSpec) -> str:
        deployment, service = render(spec, self.params)
        if self.on_manifest is not None:
            self.on_manifest(deployment)
            self.on_manifest(service)
        ns = self.params.namespace
        # 409 AlreadyExists: a retry of a create that went through; carry on and watch it
        await self._call(
            self.apps.create_namespaced_deployment, ns, deployment, ok_statuses=frozenset({409})
        )
        await self._call(
            self.core.create_namespaced_service, ns, service, ok_statuses=frozenset({409})
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            current = await self.status(spec.simulator_id)
            if current.state is ProvisionState.READY:
                return current.endpoint
            if current.state is ProvisionState.FAILED:
                raise ProvisionFailed(current.reason)
            if current.state is ProvisionState.ABSENT:
                raise ProvisionFailed("the simulator's Deployment disappeared while starting")
            if time.monotonic() >= deadline:
                raise ProvisionFailed(
                    f"Deployment {resource_name(spec.simulator_id)} not ready after "
                    f"{self.ready_timeout_s:.0f}s"
                )
            await asyncio.sleep(self.poll_interval_s)

    async def deprovision(self, simulator_id: str) -> None:
        name, ns = resource_name(simulator_id), self.params.namespace
        gone = frozenset({404})
        await self._call(
            self.apps.delete_namespaced_deployment,
            name,
            ns,
            propagation_policy="Foreground",
            ok_statuses=gone,
        )
        await self._call(self.core.delete_namespaced_service, name, ns, ok_statuses=gone)

    async def status(self, simulator_id: str) -> ProvisionerStatus:
        name, ns = resource_name(simulator_id), self.params.namespace
        deployment = await self._call(
            self.apps.read_namespaced_deployment_status, name, ns, ok_statuses=frozenset({404})
        )
        if deployment is None:
            return ProvisionerStatus(state=ProvisionState.ABSENT)
        state = deployment_state(deployment)
        if state.state is ProvisionState.READY:
            return ProvisionerStatus(
                state=ProvisionState.READY, endpoint=self.endpoint(simulator_id)
            )
        return state

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)
