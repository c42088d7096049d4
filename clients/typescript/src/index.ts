/** sessiond's browser (and Node) client. See docs/clients.md. */
export { SessiondClient, SessiondError } from "./client.js";
export type {
  ClientEvents, ClientOptions, Change, Conflict, ConnectionState, EventSourceCtor,
  EventSourceLike, TokenSource, Transport, WebSocketCtor, WebSocketLike,
} from "./client.js";
export { backoffDelay } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { applyStateUpdate, applyReset, advance } from "./state.js";
export type { Presence, SessionView, Applied } from "./state.js";
export * from "./protocol.js";
