/**
 * The gateway's WebSocket / SSE protocol, hand-written to match `gateway/protocol.py`,
 * `gateway/push.py` and the message table of docs/protocol.md (names form: the client always
 * speaks names, so the server answers with names).
 */

/** Every message, both ways: seed 004's envelope. `version` is on every message that carries a
 * change of the session (the session's event version, used to resume with `since`). */
export interface Envelope<P = Record<string, unknown>> {
  type: MessageName;
  session_id?: string;
  user_id?: string;
  device_id?: string;
  timestamp?: number;
  payload: P;
  correlation_id?: string;
  idempotency_key?: string;
  version?: number;
}

export type MessageName =
  | "heartbeat" | "heartbeat_ack" | "snapshot_request" | "snapshot_response" | "state_update"
  | "error" | "auth" | "auth_success" | "auth_failure" | "device_joined" | "device_left"
  | "device_list" | "broadcast" | "admin_update" | "connected" | "reconnect"
  | "connection_state" | "simulator_status" | "exchange_data" | "reset" | "start_simulator"
  | "stop_simulator" | "session_update" | "handoff";

/** `auth_success` / `connected`: the server's welcome. */
export interface Welcome {
  session_id: string;
  user_id: string;
  device_id: string;
  connection_id: string;
  /** The session version right after this device joined. */
  version: number;
  resumed_from: number | null;
  /** Seconds (WebSocket only). */
  heartbeat_interval?: number;
  gateway?: string;
}

export type JsonObject = Record<string, unknown>;

/** A pushed `state_update`: PATCH (changes + deleted_keys), REPLACE or RESOLVE (state). */
export interface StateUpdatePayload {
  operation: "PATCH" | "REPLACE" | "RESOLVE";
  changes?: JsonObject;
  deleted_keys?: string[];
  state?: JsonObject;
  state_version: number;
  device_id?: string;
  strategy?: ConflictStrategy;
  event: string;
  version: number;
  ts?: number;
}

/** The answer to a write that carried an `idempotency_key`. */
export interface WriteAck {
  accepted: boolean;
  version: number | null;
  idempotency_key: string;
}

export interface DevicePayload {
  device_id: string;
  connection_id?: string;
  transport?: string;
  device_type?: string;
  device_name?: string;
  os?: string;
  reason?: string;
  event?: string;
  version?: number;
}

/** A device as `device_list`, `GET /session/{id}/devices` and `reset` describe it. */
export interface DeviceInfo {
  device_id: string;
  device_type?: string;
  device_name?: string;
  is_online?: boolean;
  [field: string]: unknown;
}

/** The session snapshot (`GET /session/{id}`, `snapshot_response`, inside `reset`). */
export interface Snapshot {
  session_id: string;
  user_id: string;
  status: string;
  state_data: JsonObject;
  /** The state's own version (the `base_version` of the next write). */
  version: number;
  /** The session's event version the snapshot reflects. */
  session_version: number;
  [field: string]: unknown;
}

/** `reset`: history no longer reaches the client's version: the full current state. */
export interface ResetPayload {
  session: Snapshot;
  devices: DeviceInfo[];
  simulator: JsonObject | null;
  version: number;
}

export interface ErrorPayload {
  code: string;
  message: string;
  current_version?: number;
  idempotency_key?: string;
  retry_after?: number;
  [field: string]: unknown;
}

export type ConflictStrategy = "server_wins" | "client_wins" | "merge";

/** Close codes after which reconnecting cannot help (docs/protocol.md, WebSocket). */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  4400, // bad handshake
  4403, // forbidden
  4410, // session ended or expired
  4000, // this device was disconnected
]);
