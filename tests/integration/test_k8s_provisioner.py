"""The kubernetes provisioner, the official client on one side, a real HTTP API on the other."""

from __future__ import annotations

import time

import kubernetes_validate
import pytest

from infra.provisioners import (
    CircuitOpen,
    ProvisionerUnavailable,
    ProvisionFailed,
    ProvisionState,
    SimulatorSettings,
    SimulatorSpec,
    create_provisioner,
)
from infra.provisioners.kubernetes import KubernetesProvisioner, api_client_from_env
from infra.provisioners.manifests import ManifestParams, resource_name
from tests.integration.k8s_fake_api import FakeKubernetesAPI, write_kubeconfig

K8S_VERSION = "1.31"


@pytest.fixture
def api():
    server = FakeKubernetesAPI(ready_after_s=0.3).start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(tmp_path, api):
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


def _spec(n: int = 1) -> SimulatorSpec:
    return SimulatorSpec(
        simulator_id=f"0b5a7c1e-0000-4000-8000-00000000000{n}",
        session_id="5e551011-0000-4000-8000-000000000001",
        owner_id="user-1",
        initial_symbols=["AAPL", "MSFT"],
        initial_cash=25_000.0,
    )


def _provisioner(kubeconfig, **kw) -> KubernetesProvisioner:
    kw.setdefault("poll_interval_s", 0.05)
    kw.setdefault("ready_timeout_s", 5.0)
    return KubernetesProvisioner(
        api_client_from_env(str(kubeconfig)),
        ManifestParams(namespace="sim-test", image="sessiond:test"),
        **kw,
    )


@pytest.mark.anyio
async def test_provision_creates_valid_labelled_limited_probed_resources_and_waits_until_ready(
    api, kubeconfig
):
    prov = _provisioner(kubeconfig)
    spec = _spec()
    started = time.monotonic()
    endpoint = await prov.provision(spec)
    assert time.monotonic() - started >= 0.3  # it waited for the ready replica
    name = resource_name(spec.simulator_id)
    assert endpoint == f"http://{name}.sim-test.svc.cluster.local:8081"
    kinds = [m["kind"] for m in api.received]
    assert kinds == ["Deployment", "Service"]
    for manifest in api.received:  # what the client really sent validates against the schema
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        labels = manifest["metadata"]["labels"]
        assert labels["sessiond.io/session-id"] == spec.session_id
        assert labels["sessiond.io/simulator-id"] == spec.simulator_id
        assert manifest["metadata"]["namespace"] == "sim-test"
    container = api.received[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "sessiond:test"
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    spec_env = next(e for e in container["env"] if e["name"] == "SIMULATOR_SPEC")
    assert '"initial_symbols":["AAPL","MSFT"]' in spec_env["value"]
    status = await prov.status(spec.simulator_id)
    assert status.state is ProvisionState.READY and status.endpoint == endpoint
    await prov.deprovision(spec.simulator_id)
    assert api.deployments == {} and api.services == {}
    assert (await prov.status(spec.simulator_id)).state is ProvisionState.ABSENT
    await prov.deprovision(spec.simulator_id)  # idempotent
    await prov.close()


@pytest.mark.anyio
async def test_a_retried_provision_finds_its_resources_already_created(api, kubeconfig):
    prov = _provisioner(kubeconfig)
    first = await prov.provision(_spec())
    assert await prov.provision(_spec()) == first  # 409 AlreadyExists is not an error
    assert len(api.deployments) == 1
    await prov.close()


@pytest.mark.anyio
async def test_a_failed_deployment_fails_with_the_api_reason(api, kubeconfig):
    api.fail_deployments["*"] = 'Back-off pulling image "sessiond:test": ImagePullBackOff'
    prov = _provisioner(kubeconfig)
    with pytest.raises(ProvisionFailed) as err:
        await prov.provision(_spec())
    assert "ProgressDeadlineExceeded" in err.value.message
    assert "ImagePullBackOff" in err.value.message
    await prov.close()


@pytest.mark.anyio
async def test_an_api_refusal_is_final_and_carries_the_api_message(api, kubeconfig):
    api.reject_create = (
        403,
        "Forbidden",
        'deployments.apps is forbidden: User "reactor" cannot create resource "deployments"',
    )
    guarded = create_provisioner(
        SimulatorSettings(provisioner="kubernetes", retries=3),
        api_client=api_client_from_env(str(kubeconfig)),
    )
    with pytest.raises(ProvisionFailed, match=r"403 Forbidden.*cannot create resource"):
        await guarded.provision(_spec())
    assert len([r for r in api.requests if r[0] == "POST"]) == 1  # not retried
    await guarded.close()


@pytest.mark.anyio
async def test_a_wrong_token_is_refused(api, tmp_path):
    config = write_kubeconfig(tmp_path / "bad", api.url, token="wrong")
    prov = _provisioner(config)
    with pytest.raises(ProvisionFailed, match="401"):
        await prov.provision(_spec())
    await prov.close()


@pytest.mark.anyio
async def test_a_down_api_is_retried_then_opens_the_breaker_with_a_clear_error(api, kubeconfig):
    api.stop()
    settings = SimulatorSettings(
        provisioner="kubernetes",
        retries=2,
        backoff_base_ms=10,
        breaker_failures=2,
        breaker_reset_ms=60_000,
    )
    guarded = create_provisioner(settings, api_client=api_client_from_env(str(kubeconfig)))
    for _ in range(2):
        with pytest.raises(ProvisionerUnavailable, match=r"after 3 attempt.*unreachable"):
            await guarded.provision(_spec())
    started = time.monotonic()
    with pytest.raises(CircuitOpen) as err:
        await guarded.provision(_spec())
    assert time.monotonic() - started < 0.1  # fails fast: no call made
    assert "kubernetes provisioner unavailable: circuit breaker open" in err.value.message
    await guarded.close()


@pytest.mark.anyio
async def test_a_deployment_never_ready_times_out(api, kubeconfig):
    api.ready_after_s = 60
    prov = _provisioner(kubeconfig, ready_timeout_s=0.3)
    with pytest.raises(ProvisionFailed, match="not ready after"):
        await prov.provision(_spec())
    await prov.close()
