"""Simulator settings, read from the environment (dev defaults; see the README section)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

__all__ = ["SimulatorSettings", "load_simulator_settings"]


class SimulatorSettings(msgspec.Struct, frozen=True, kw_only=True):
    provisioner: str = "local"  # SIMULATOR_PROVISIONER: local | kubernetes
    tick_hz: float = 10.0  # SIMULATOR_TICK_HZ
    heartbeat_interval_ms: int = 5000  # SIMULATOR_HEARTBEAT_INTERVAL_MS
    md_maxlen: int = 1000  # SIMULATOR_MD_MAXLEN: ticks kept per simulator stream
    host_ttl_ms: int = 6000  # SIMULATOR_HOST_TTL_MS: a simulators process is dead after this
    ack_timeout_ms: int = 5000  # SIMULATOR_ACK_TIMEOUT_MS: local start/stop answer deadline
    breaker_failures: int = 3  # SIMULATOR_BREAKER_FAILURES: failed calls that open the breaker
    breaker_reset_ms: int = 30_000  # SIMULATOR_BREAKER_RESET_MS: open -> half-open
    retries: int = 3  # SIMULATOR_RETRIES: retries of a transient failure per call
    backoff_base_ms: int = 200  # SIMULATOR_BACKOFF_BASE_MS
    backoff_max_ms: int = 5000  # SIMULATOR_BACKOFF_MAX_MS
    activity_interval_ms: int = 60_000  # SIMULATOR_ACTIVITY_INTERVAL_MS: gateway activity reports
    k8s_namespace: str = "sessiond"  # SIMULATOR_K8S_NAMESPACE
    k8s_image: str = "sessiond:latest"  # SIMULATOR_K8S_IMAGE
    k8s_kubeconfig: str = ""  # SIMULATOR_K8S_KUBECONFIG (empty: in-cluster or ~/.kube/config)
    k8s_context: str = ""  # SIMULATOR_K8S_CONTEXT
    k8s_ready_timeout_ms: int = 120_000  # SIMULATOR_K8S_READY_TIMEOUT_MS
    k8s_poll_ms: int = 1000  # SIMULATOR_K8S_POLL_MS


def load_simulator_settings(env: Mapping[str, str] = os.environ) -> SimulatorSettings:
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(SimulatorSettings):
        key = f"SIMULATOR_{field.name.upper()}"
        if key in env:
            values[field.name] = env[key]
    settings = msgspec.convert(values, SimulatorSettings, strict=False)
    if settings.provisioner not in ("local", "kubernetes"):
        raise ValueError(
            f"SIMULATOR_PROVISIONER must be local or kubernetes, not {settings.provisioner!r}"
        )
    return settings
