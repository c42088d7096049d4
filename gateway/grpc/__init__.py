"""The gRPC adapter (seed 001: service to service): `sessiond.proto`, its generated code, the
servicer (`service`), the error mapping (`status`) and the server (`server`), run inside the
gateway process on `GRPC_ADDR` beside uvicorn, sharing its `Context` (one hub, one drain)."""

__all__: list[str] = []
