"""Simulator provisioners (`local`, `kubernetes`) behind one interface and a circuit breaker."""

from __future__ import annotations

from infra.provisioners.base import (
    CircuitOpen,
    ProvisionerError,
    ProvisionerStatus,
    ProvisionerUnavailable,
    ProvisionFailed,
    ProvisionState,
    SimulatorSpec,
)
from infra.provisioners.breaker import CircuitBreaker, GuardedProvisioner
from infra.sections import SimulatorSettings
from infra.store import SimulatorHosts

__all__ = [
    "CircuitBreaker",
    "CircuitOpen",
    "GuardedProvisioner",
    "ProvisionFailed",
    "ProvisionState",
    "ProvisionerError",
    "ProvisionerStatus",
    "ProvisionerUnavailable",
    "SimulatorSettings",
    "SimulatorSpec",
    "create_provisioner",
]


def create_provisioner(
    settings: SimulatorSettings, hosts: SimulatorHosts | None = None, *, api_client=None
) -> GuardedProvisioner:
    """The configured provisioner, wrapped in its circuit breaker. The `local` one places
    simulators on the store's simulators `hosts`."""
    if settings.provisioner == "kubernetes":
        from infra.provisioners.kubernetes import KubernetesProvisioner, api_client_from_env
        from infra.provisioners.manifests import ManifestParams

        inner = KubernetesProvisioner(
            api_client
            or api_client_from_env(
                settings.k8s_kubeconfig or None,
                settings.k8s_context or None,
                in_cluster=settings.k8s_in_cluster,
            ),
            ManifestParams(namespace=settings.k8s_namespace, image=settings.k8s_image),
            ready_timeout_s=settings.k8s_ready_timeout_ms / 1000,
            poll_interval_s=settings.k8s_poll_ms / 1000,
        )
    else:
        from infra.provisioners.local import LocalProvisioner

        if hosts is None:
            raise ValueError("the local provisioner needs the store's simulators hosts")
        inner = LocalProvisioner(hosts, ack_timeout_s=settings.ack_timeout_ms / 1000)
    breaker = CircuitBreaker(
        f"{inner.name} provisioner",
        failure_threshold=settings.breaker_failures,
        reset_timeout_s=settings.breaker_reset_ms / 1000,
        retries=settings.retries,
        backoff_base_s=settings.backoff_base_ms / 1000,
        backoff_max_s=settings.backoff_max_ms / 1000,
    )
    return GuardedProvisioner(inner, breaker)
