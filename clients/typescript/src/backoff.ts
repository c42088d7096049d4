/** Reconnect delays: exponential with "full jitter" (a random delay between 0 and the cap), so
 * that many clients cut off together do not come back together. */

export interface BackoffOptions {
  /** First cap, ms (default 250). */
  initialMs?: number;
  /** Largest cap, ms (default 15000). */
  maxMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Fraction of the cap that is random: 1 = full jitter (default), 0 = none. */
  jitter?: number;
}

/** The delay before reconnect attempt `attempt` (0-based). `random` is injectable for tests. */
export function backoffDelay(attempt: number, options: BackoffOptions = {},
                             random: () => number = Math.random): number {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 15000;
  const factor = options.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, options.jitter ?? 1));
  const cap = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.round(cap * (1 - jitter) + cap * jitter * random());
}
