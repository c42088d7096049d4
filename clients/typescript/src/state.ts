/** The session's shared state as a client holds it: a pure fold of versioned pushes. */

import type { DeviceInfo, JsonObject, ResetPayload, StateUpdatePayload } from "./protocol.js";

export interface SessionView {
  /** The last session version applied (what `since` resumes from). */
  readonly version: number;
  /** The state's own version (the `base_version` of the next conditional write). */
  readonly stateVersion: number;
  readonly state: Readonly<JsonObject>;
}

export const EMPTY_VIEW: SessionView = { version: 0, stateVersion: 0, state: {} };

/** What applying one push did. `gap`: the state version jumped (a change was missed). */
export type Applied = "applied" | "duplicate" | "gap";

/** Apply a `state_update` push at `version`; a version already applied is a duplicate. */
export function applyStateUpdate(view: SessionView, p: StateUpdatePayload, version: number
): [SessionView, Applied] {
  if (version <= view.version) return [view, "duplicate"];
  // every state change moves the state version on by one (server_wins keeps it)
  if (p.state_version > view.stateVersion + 1) return [view, "gap"];
  let state: JsonObject;
  if (p.operation === "PATCH") {
    // as the actor does: deletions first, then the changes (a key in both is kept)
    const gone = new Set(p.deleted_keys ?? []);
    state = {};
    for (const [k, v] of Object.entries(view.state)) if (!gone.has(k)) state[k] = v;
    Object.assign(state, p.changes ?? {});
  } else {
    state = { ...(p.state ?? {}) };
  }
  return [{ version, stateVersion: p.state_version, state }, "applied"];
}

/** A push that changes no state still moves the version on. */
export function advance(view: SessionView, version: number): [SessionView, Applied] {
  if (version <= view.version) return [view, "duplicate"];
  return [{ ...view, version }, "applied"];
}

/** `reset`: replace everything. */
export function applyReset(p: ResetPayload): SessionView {
  const snap = p.session;
  return { version: p.version, stateVersion: snap?.version ?? 0, state: { ...(snap?.state_data ?? {}) } };
}

/** Presence: the session's devices by id, folded from device_joined / device_left pushes. */
export type Presence = ReadonlyMap<string, DeviceInfo>;

export function presenceFrom(devices: DeviceInfo[]): Map<string, DeviceInfo> {
  return new Map(devices.map((d) => [d.device_id, { ...d }]));
}
