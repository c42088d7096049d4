/**
 * `SessiondClient`: one device's live view of a sessiond session.
 *
 * WebSocket first (AUTH message, so the token stays out of URLs and logs); Server-Sent Events
 * when WebSocket is unavailable (no constructor, or it keeps failing to open while the gateway
 * answers HTTP). Every pushed change carries the session version: the client applies each
 * version at most once, in order, and reconnects with `since=<last applied>` so the gateway
 * sends exactly what it missed (or one `reset` with the full state). A state change whose state
 * version jumps means a change was missed: the client asks the gateway to resend from its version
 * instead of applying it.
 */

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import {
  FINAL_CLOSE_CODES,
  type ConflictStrategy,
  type DeviceInfo,
  type DevicePayload,
  type Envelope,
  type ErrorPayload,
  type JsonObject,
  type MessageName,
  type ResetPayload,
  type Snapshot,
  type StateUpdatePayload,
  type Welcome,
  type WriteAck,
} from "./protocol.js";
import {
  advance,
  applyReset,
  applyStateUpdate,
  presenceFrom,
  type Presence,
  type SessionView,
} from "./state.js";

/** The subset of the browser's WebSocket the client uses (the `ws` package fits too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** The subset of the browser's EventSource the client uses (the `eventsource` package fits). */
export interface EventSourceLike {
  addEventListener(type: string, listener: (ev: { data: string }) => void): void;
  close(): void;
  onerror: ((ev: unknown) => void) | null;
}
export type EventSourceCtor = new (url: string) => EventSourceLike;

export type TokenSource = string | (() => string | Promise<string>);
export type Transport = "websocket" | "sse";
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface ClientOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** An access token, or a function giving a fresh one (called before every connection). */
  token: TokenSource;
  /** This device's id (required by the gateway). */
  deviceId: string;
  /** The session to join; without it the user's session on this device (created if needed). */
  sessionId?: string;
  deviceType?: string;
  deviceName?: string;
  /** "auto" (default): WebSocket, SSE when WebSocket is unavailable. */
  transport?: "auto" | Transport;
  /** Resume a view saved earlier (e.g. in localStorage): its session version, state and state
   * version. Without it the first connection replays the session from version 0. */
  resume?: SessionView;
  backoff?: BackoffOptions;
  /** Heartbeat interval; default: what the gateway's welcome says (15 s). */
  heartbeatIntervalMs?: number;
  /** How long a connection may take to be welcomed before it is dropped and retried
   * (default 10 s): a connection that hangs while opening is no better than a failed one. */
  connectTimeoutMs?: number;
  /** How long a request (write, device list, snapshot) waits for its answer (default 10 s). */
  requestTimeoutMs?: number;
  /** Failed WebSocket opens in a row after which "auto" switches to SSE (default 2). */
  wsFailuresBeforeSse?: number;
  WebSocket?: WebSocketCtor;
  EventSource?: EventSourceCtor;
  fetch?: typeof fetch;
}

/** A write refused because the state moved on (`base_version` / `version` was stale). */
export interface Conflict {
  code: "VERSION_CONFLICT";
  message: string;
  /** The state version the server has now, when the gateway says it. */
  currentVersion: number | undefined;
  /** What this client tried to write. */
  attempted: { changes?: JsonObject; deletedKeys?: string[]; baseVersion?: number; state?: JsonObject };
  /** This client's view when the refusal arrived. */
  local: SessionView;
}

export interface Change {
  version: number;
  operation: StateUpdatePayload["operation"];
  changes?: JsonObject;
  deletedKeys?: string[];
  deviceId?: string;
  state: Readonly<JsonObject>;
  stateVersion: number;
}

export interface ClientEvents {
  open: { transport: Transport; welcome: Welcome };
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delayMs: number; transport: Transport };
  transport: { from: Transport; to: Transport };
  change: Change;
  state: SessionView;
  reset: SessionView & { devices: DeviceInfo[] };
  conflict: Conflict;
  presence: Presence;
  device_joined: DevicePayload;
  device_left: DevicePayload;
  broadcast: JsonObject;
  heartbeat: { rttMs: number };
  message: Envelope;
  error: ErrorPayload;
}

type Listener<T> = (value: T) => void;

/** An error answer of the gateway (`{code, message}`), for a request or a refused connection. */
export class SessiondError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: ErrorPayload;
  constructor(details: ErrorPayload, status = 0) {
    super(`${details.code}: ${details.message}`);
    this.name = "SessiondError";
    this.code = details.code;
    this.status = status;
    this.details = details;
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  frame: Envelope | null; // resent after a reconnect (writes carry an idempotency key)
  timer: ReturnType<typeof setTimeout>;
  attempted?: Conflict["attempted"];
}

const SSE_EVENTS: MessageName[] = [
  "connected", "state_update", "device_joined", "device_left", "reset", "session_update",
  "connection_state", "simulator_status", "exchange_data", "broadcast", "admin_update",
  "reconnect", "handoff", "error", "heartbeat",
];

let counter = 0;
function newId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  counter += 1;
  return `${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2)}`;
}

export class SessiondClient {
  private readonly opts: ClientOptions;
  private readonly base: string;
  private listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  private view: SessionView;
  private devicesById = new Map<string, DeviceInfo>();
  private pending = new Map<string, Pending>();
  private ws: WebSocketLike | null = null;
  private es: EventSourceLike | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private openTimer: ReturnType<typeof setTimeout> | null = null;
  private lastRx = 0;
  private attempt = 0;
  private wsFailures = 0;
  private transportNow: Transport;
  private stateNow: ConnectionState = "idle";
  private sid: string | undefined;
  private welcomeNow: Welcome | null = null;
  private firstOpen: { resolve: (w: Welcome) => void; reject: (e: Error) => void } | null = null;
  private generation = 0; // bumps per connection: late events of an old one are ignored

  constructor(options: ClientOptions) {
    this.opts = options;
    this.base = options.url.replace(/\/+$/, "");
    this.sid = options.sessionId;
    this.view = options.resume ?? { version: 0, stateVersion: 0, state: {} };
    const wanted = options.transport ?? "auto";
    this.transportNow = wanted === "sse" || (wanted === "auto" && !this.wsCtor()) ? "sse" : "websocket";
  }

  // ------------------------------------------------------------------ public surface
  get sessionId(): string | undefined { return this.sid; }
  get version(): number { return this.view.version; }
  get stateVersion(): number { return this.view.stateVersion; }
  get state(): Readonly<JsonObject> { return this.view.state; }
  /** The whole view, to save and pass back as `resume` later. */
  get snapshotView(): SessionView { return this.view; }
  get devices(): Presence { return this.devicesById; }
  get transport(): Transport { return this.transportNow; }
  get connectionState(): ConnectionState { return this.stateNow; }
  get welcome(): Welcome | null { return this.welcomeNow; }

  /** Subscribe to an event; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents>(event: K, listener: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set!.delete(listener as Listener<never>);
  }

  /** Connect; resolves with the first welcome, rejects if the first connection is refused for
   * good (bad token, forbidden session). Later drops reconnect by themselves. */
  connect(): Promise<Welcome> {
    if (this.stateNow !== "idle" && this.stateNow !== "closed") {
      return this.welcomeNow ? Promise.resolve(this.welcomeNow) : new Promise((resolve, reject) => {
        this.firstOpen = { resolve, reject };
      });
    }
    return new Promise((resolve, reject) => {
      this.firstOpen = { resolve, reject };
      this.stateNow = "connecting";
      void this.open();
    });
  }

  /** Close for good: no reconnect; requests still waiting are rejected. */
  close(): void {
    this.stateNow = "closed";
    this.generation += 1;
    this.clearTimers();
    this.ws?.close(1000, "client closed");
    this.es?.close();
    this.ws = null;
    this.es = null;
    this.failPending(new SessiondError({ code: "CLIENT_CLOSED", message: "the client was closed" }));
  }

  /** Set/delete keys of the shared state. With `baseVersion` the write is refused (and
   * `conflict` emitted) unless the state is still at that version. Safe to retry: it carries an
   * idempotency key and is resent after a reconnect. */
  update(changes: JsonObject, options: { deletedKeys?: string[]; baseVersion?: number;
                                         idempotencyKey?: string } = {}): Promise<WriteAck> {
    const payload: JsonObject = { changes, deleted_keys: options.deletedKeys ?? [] };
    if (options.baseVersion !== undefined) payload.base_version = options.baseVersion;
    return this.write(payload, options.idempotencyKey,
      { changes, deletedKeys: options.deletedKeys, baseVersion: options.baseVersion });
  }

  /** `update` on the state version this client has: refused if someone changed it meanwhile. */
  updateIfCurrent(changes: JsonObject, deletedKeys: string[] = []): Promise<WriteAck> {
    return this.update(changes, { deletedKeys, baseVersion: this.view.stateVersion });
  }

  set(key: string, value: unknown): Promise<WriteAck> { return this.update({ [key]: value }); }

  delete(key: string): Promise<WriteAck> { return this.update({}, { deletedKeys: [key] }); }

  /** Replace the whole state; with `version` (the next state version) it is conditional. */
  replace(state: JsonObject, version?: number): Promise<WriteAck> {
    const payload: JsonObject = { state };
    if (version !== undefined) payload.version = version;
    return this.write(payload, undefined, { state });
  }

  /** Settle a conflict (REST `POST /session/conflict/resolve`): `server_wins` keeps the
   * server's state, `client_wins` writes `clientState`, `merge` writes both (client wins on
   * keys in both). The result arrives as a versioned change like any other. */
  async resolveConflict(strategy: ConflictStrategy, clientState: JsonObject = {}
  ): Promise<{ resolved_state: JsonObject; version: number; session_version: number }> {
    const sid = await this.requireSession();
    return this.rest("POST", "/session/conflict/resolve", {
      session_id: sid, client_state: clientState, client_version: this.view.stateVersion,
      resolution_strategy: strategy,
    }, newId());
  }

  /** The session's devices as the gateway's read model has them. */
  async listDevices(): Promise<DeviceInfo[]> {
    if (this.transportNow === "websocket" && this.stateNow === "open") {
      const ans = (await this.request("device_list", {})) as { devices: DeviceInfo[] };
      return ans.devices;
    }
    const sid = await this.requireSession();
    const ans = await this.rest<{ devices: DeviceInfo[] }>("GET", `/session/${sid}/devices`);
    return ans.devices;
  }

  /** The session snapshot from the gateway's read model (not the live view). */
  async fetchSnapshot(): Promise<Snapshot> {
    const sid = await this.requireSession();
    return this.rest<Snapshot>("GET", `/session/${sid}`);
  }

  // ------------------------------------------------------------------ connecting
  private wsCtor(): WebSocketCtor | undefined {
    return this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  }

  private esCtor(): EventSourceCtor | undefined {
    return this.opts.EventSource ?? (globalThis as { EventSource?: EventSourceCtor }).EventSource;
  }

  private fetcher(): typeof fetch {
    const f = this.opts.fetch ?? globalThis.fetch;
    return f.bind(globalThis);
  }

  private async token(): Promise<string> {
    const t = this.opts.token;
    return typeof t === "function" ? await t() : t;
  }

  private async open(): Promise<void> {
    const gen = ++this.generation;
    this.openTimer = setTimeout(() => {
      if (gen !== this.generation || this.stateNow === "open") return;
      this.generation += 1; // whatever the hung connection does later is ignored
      this.ws?.close();
      this.es?.close();
      this.dropped(0, "connect timeout");
    }, this.opts.connectTimeoutMs ?? 10000);
    try {
      if (this.transportNow === "websocket") await this.openWebSocket(gen);
      else await this.openSse(gen);
    } catch (err) {
      if (gen !== this.generation) return;
      this.dropped(0, String((err as Error).message ?? err), err as Error);
    }
  }

  private async openWebSocket(gen: number): Promise<void> {
    const Ctor = this.wsCtor();
    if (!Ctor) throw new Error("no WebSocket implementation");
    const token = await this.token();
    if (gen !== this.generation) return;
    const ws = new Ctor(this.base.replace(/^http/, "ws") + "/ws");
    this.ws = ws;
    let opened = false;
    let refusal: ErrorPayload | null = null;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      opened = true;
      const payload: JsonObject = {
        token, device_id: this.opts.deviceId, since: this.view.version,
        device_type: this.opts.deviceType ?? "browser", device_name: this.opts.deviceName ?? "",
      };
      if (this.sid) payload.session_id = this.sid;
      ws.send(JSON.stringify({ type: "auth", payload }));
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      const msg = JSON.parse(String(ev.data)) as Envelope;
      if (msg.type === "auth_failure" || (msg.type === "error" && !this.welcomeOpen())) {
        refusal = msg.payload as unknown as ErrorPayload;
      }
      this.receive(msg, "websocket");
    };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      if (!opened) this.wsFailures += 1;
      const err = refusal ? new SessiondError(refusal) : undefined;
      this.dropped(ev.code, ev.reason || (refusal?.code ?? ""), err);
    };
  }

  private welcomeOpen(): boolean { return this.stateNow === "open"; }

  private async openSse(gen: number): Promise<void> {
    const Ctor = this.esCtor();
    if (!Ctor) throw new Error("no EventSource implementation");
    const sid = await this.requireSession();
    const auth = await this.sseAuth(sid);
    if (gen !== this.generation) return;
    const q = new URLSearchParams({ device_id: this.opts.deviceId, since: String(this.view.version), ...auth });
    const es = new Ctor(`${this.base}/api/sessions/${sid}/events?${q}`);
    this.es = es;
    for (const name of SSE_EVENTS) {
      es.addEventListener(name, (ev) => {
        // "error" is also EventSource's own event for a failed connection (no data)
        if (gen !== this.generation || typeof ev.data !== "string") return;
        this.receive(JSON.parse(ev.data) as Envelope, "sse");
      });
    }
    es.onerror = () => {
      if (gen !== this.generation) return;
      es.close(); // our own reconnect: a fresh credential and `since` from the applied view
      this.dropped(0, "sse error");
    };
  }

  /** What authenticates an EventSource, which cannot send headers: a one-minute ticket for this
   * session, minted with the access token for each connection (never the token in the URL). */
  private async sseAuth(sid: string): Promise<Record<string, string>> {
    const t = await this.rest<{ ticket: string }>("POST", `/api/sessions/${sid}/events/ticket`);
    return { ticket: t.ticket };
  }

  private async requireSession(): Promise<string> {
    if (this.sid) return this.sid;
    const ans = await this.rest<{ session_id: string }>("POST", "/api/sessions",
      { device_id: this.opts.deviceId });
    this.sid = ans.session_id;
    return this.sid;
  }

  /** A connection ended (or never opened): reconnect with backoff unless that cannot help. */
  private dropped(code: number, reason: string, err?: Error): void {
    this.clearTimers();
    this.ws = null;
    this.es = null;
    if (this.stateNow === "closed") return;
    const wasOpen = this.stateNow === "open";
    const refusedForGood = FINAL_CLOSE_CODES.has(code)
      || (code === 4401 && typeof this.opts.token === "string");
    const willReconnect = !refusedForGood;
    this.emit("close", { code, reason, willReconnect });
    if (!willReconnect) {
      this.stateNow = "closed";
      const e = err ?? new SessiondError({ code: reason || `CLOSED_${code}`, message: `closed with ${code}` });
      this.firstOpen?.reject(e);
      this.firstOpen = null;
      this.failPending(e);
      return;
    }
    if (this.transportNow === "websocket" && (this.opts.transport ?? "auto") === "auto"
        && this.wsFailures >= (this.opts.wsFailuresBeforeSse ?? 2) && this.esCtor()) {
      this.transportNow = "sse";
      this.attempt = 0;
      this.emit("transport", { from: "websocket", to: "sse" });
    }
    this.stateNow = "reconnecting";
    const delayMs = wasOpen && this.attempt === 0 ? backoffDelay(0, this.opts.backoff)
      : backoffDelay(this.attempt, this.opts.backoff);
    this.attempt += 1;
    this.emit("reconnecting", { attempt: this.attempt, delayMs, transport: this.transportNow });
    this.reconnectTimer = setTimeout(() => { void this.open(); }, delayMs);
  }

  private clearTimers(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.openTimer) clearTimeout(this.openTimer);
    this.heartbeatTimer = null;
    this.reconnectTimer = null;
    this.openTimer = null;
  }

  private opened(welcome: Welcome, transport: Transport): void {
    this.welcomeNow = welcome;
    this.sid = welcome.session_id;
    this.stateNow = "open";
    this.attempt = 0;
    if (this.openTimer) clearTimeout(this.openTimer);
    this.openTimer = null;
    if (transport === "websocket") {
      this.wsFailures = 0;
      this.startHeartbeat(welcome);
      for (const p of this.pending.values()) if (p.frame) this.ws?.send(JSON.stringify(p.frame));
    }
    this.emit("open", { transport, welcome });
    this.firstOpen?.resolve(welcome);
    this.firstOpen = null;
  }

  private startHeartbeat(welcome: Welcome): void {
    const every = this.opts.heartbeatIntervalMs ?? (welcome.heartbeat_interval ?? 15) * 1000;
    this.lastRx = Date.now();
    let rtt: number | undefined;
    const off = this.on("heartbeat", (h) => { rtt = h.rttMs; });
    const gen = this.generation;
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (gen !== this.generation || !ws) { off(); return; }
      if (Date.now() - this.lastRx > every * 2.5) { // half-open: nothing heard for too long
        off();
        this.generation += 1;
        ws.close(4000 + 8, "heartbeat timeout");
        this.dropped(1006, "heartbeat timeout");
        return;
      }
      const payload: JsonObject = { client_time: Date.now() };
      if (rtt !== undefined) payload.rtt_ms = rtt;
      ws.send(JSON.stringify({ type: "heartbeat", payload }));
    }, every);
  }

  // ------------------------------------------------------------------ receiving
  private receive(msg: Envelope, transport: Transport): void {
    this.lastRx = Date.now();
    this.emit("message", msg);
    const p = msg.payload as JsonObject;
    const cid = msg.correlation_id;
    if (cid && this.pending.has(cid) && !(msg.version !== undefined && p.event)) {
      this.answer(cid, msg);
      return;
    }
    switch (msg.type) {
      case "auth_success":
      case "connected":
        if (this.stateNow !== "open") this.opened(p as unknown as Welcome, transport);
        return;
      case "heartbeat":
        this.ws?.send(JSON.stringify({ type: "heartbeat_ack", payload: { server_time: p.server_time } }));
        return;
      case "heartbeat_ack":
        if (typeof p.client_time === "number") this.emit("heartbeat", { rttMs: Date.now() - p.client_time });
        return;
      case "reset":
        this.reset(p as unknown as ResetPayload);
        return;
      case "state_update":
        if (msg.version !== undefined) this.stateUpdate(p as unknown as StateUpdatePayload, msg.version);
        return;
      case "device_joined":
      case "device_left":
        this.presence(msg.type, p as unknown as DevicePayload, msg.version);
        return;
      case "broadcast":
        this.emit("broadcast", p);
        return;
      case "error":
        this.emit("error", p as unknown as ErrorPayload);
        return;
      default:
        if (msg.version !== undefined) {
          if (p.event === "DeviceForgotten" && typeof p.device_id === "string") {
            this.devicesById.delete(p.device_id);
            this.emit("presence", this.devicesById);
          }
          this.view = advance(this.view, msg.version)[0];
        }
    }
  }

  private stateUpdate(p: StateUpdatePayload, version: number): void {
    const [next, result] = applyStateUpdate(this.view, p, version);
    if (result === "duplicate") return;
    if (result === "gap") { this.resync(); return; }
    this.view = next;
    this.emit("change", {
      version, operation: p.operation, changes: p.changes, deletedKeys: p.deleted_keys,
      deviceId: p.device_id, state: next.state, stateVersion: next.stateVersion,
    });
    this.emit("state", next);
  }

  /** A change was missed: ask for everything after the version applied. */
  private resync(): void {
    if (this.transportNow === "websocket" && this.ws) {
      this.ws.send(JSON.stringify({ type: "reconnect", payload: { since: this.view.version } }));
    } else if (this.es) {
      this.generation += 1;
      this.es.close();
      this.dropped(0, "resync");
    }
  }

  private reset(p: ResetPayload): void {
    this.view = applyReset(p);
    this.devicesById = presenceFrom(p.devices ?? []);
    this.emit("reset", { ...this.view, devices: p.devices ?? [] });
    this.emit("state", this.view);
    this.emit("presence", this.devicesById);
  }

  private presence(type: "device_joined" | "device_left", p: DevicePayload, version?: number): void {
    if (version !== undefined) {
      const [next, result] = advance(this.view, version);
      if (result === "duplicate") return;
      this.view = next;
    }
    const known = this.devicesById.get(p.device_id) ?? { device_id: p.device_id };
    this.devicesById.set(p.device_id, { ...known, ...p, is_online: type === "device_joined" });
    this.emit(type, p);
    this.emit("presence", this.devicesById);
  }

  // ------------------------------------------------------------------ requests
  private write(payload: JsonObject, key: string | undefined, attempted: Conflict["attempted"]
  ): Promise<WriteAck> {
    const idem = key ?? newId();
    if (this.transportNow === "sse") return this.restWrite(payload, idem, attempted);
    return this.request("state_update", payload, idem, attempted) as Promise<WriteAck>;
  }

  private request(type: MessageName, payload: JsonObject, idempotencyKey?: string,
                  attempted?: Conflict["attempted"]): Promise<unknown> {
    const cid = idempotencyKey ?? newId();
    const frame: Envelope = { type, payload, correlation_id: cid };
    if (idempotencyKey) frame.idempotency_key = idempotencyKey;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(cid);
        reject(new SessiondError({ code: "TIMEOUT", message: `no answer to ${type}` }));
      }, this.opts.requestTimeoutMs ?? 10000);
      // only writes are resent after a reconnect (their key makes that safe)
      this.pending.set(cid, { resolve, reject, timer, attempted, frame: idempotencyKey ? frame : null });
      if (this.ws && this.stateNow === "open") this.ws.send(JSON.stringify(frame));
      else if (!idempotencyKey) {
        clearTimeout(timer);
        this.pending.delete(cid);
        reject(new SessiondError({ code: "NOT_CONNECTED", message: "not connected" }));
      }
    });
  }

  private answer(cid: string, msg: Envelope): void {
    const p = this.pending.get(cid)!;
    this.pending.delete(cid);
    clearTimeout(p.timer);
    if (msg.type === "error") {
      const err = msg.payload as unknown as ErrorPayload;
      if (err.code === "VERSION_CONFLICT") this.conflict(err, p.attempted ?? {});
      p.reject(new SessiondError(err));
    } else {
      p.resolve(msg.payload);
    }
  }

  private conflict(err: ErrorPayload, attempted: Conflict["attempted"]): void {
    this.emit("conflict", {
      code: "VERSION_CONFLICT", message: err.message, currentVersion: err.current_version,
      attempted, local: this.view,
    });
  }

  private async restWrite(payload: JsonObject, idem: string, attempted: Conflict["attempted"]
  ): Promise<WriteAck> {
    const sid = await this.requireSession();
    try {
      if ("state" in payload) {
        const ans = await this.rest<{ session_version: number }>("POST", "/session/snapshot", {
          session_id: sid, state_data: payload.state, version: payload.version,
          device_id: this.opts.deviceId }, idem);
        return { accepted: true, version: ans.session_version, idempotency_key: idem };
      }
      const ans = await this.rest<{ session_version: number }>("POST", "/session/incremental", {
        session_id: sid, device_id: this.opts.deviceId, ...payload }, idem);
      return { accepted: true, version: ans.session_version, idempotency_key: idem };
    } catch (e) {
      if (e instanceof SessiondError && e.code === "VERSION_CONFLICT") this.conflict(e.details, attempted);
      throw e;
    }
  }

  private async rest<T>(method: string, path: string, body?: unknown, idempotencyKey?: string): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${await this.token()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const res = await this.fetcher()(this.base + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = (data as { error?: ErrorPayload }).error
        ?? { code: `HTTP_${res.status}`, message: res.statusText };
      throw new SessiondError(err, res.status);
    }
    return data as T;
  }

  private failPending(err: Error): void {
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(err); }
    this.pending.clear();
  }

  private emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    for (const l of this.listeners.get(event) ?? []) {
      try { (l as Listener<ClientEvents[K]>)(value); } catch (e) { console.error(e); }
    }
  }
}
