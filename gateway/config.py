"""The gateway's section of the configuration, as the gateway's modules import it.

`GatewayConfig` is defined with the other sections in `infra.sections` and filled from the
environment by `infra.config.load_settings` (seed 004's `SERVER_ADDR`, `REDIS_ADDR`,
`JWT_SECRET`... and the `GATEWAY_*` knobs); `sessiond gateway` passes `settings.gateway` down.
"""

from __future__ import annotations

from infra.config import ConfigError
from infra.sections import (
    DEV_JWT_REFRESH_SECRET,
    DEV_JWT_SECRET,
    DEV_SECRETS,
    MAX_JSON_DEPTH,
    GatewayConfig,
)

__all__ = [
    "DEV_JWT_REFRESH_SECRET",
    "DEV_JWT_SECRET",
    "DEV_SECRETS",
    "MAX_JSON_DEPTH",
    "ConfigError",
    "GatewayConfig",
]
