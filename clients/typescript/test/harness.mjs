// Test helpers: a TCP proxy in front of the gateway that can cut connections (a real dropped
// connection, not a mock), refuse WebSocket upgrades (a network where WebSocket is unavailable),
// and a static file server for the browser page. Loopback only.
import net from "node:net";
import http from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

export const env = {
  url: process.env.SESSIOND_URL,
  tokenA: process.env.SESSIOND_TOKEN_A,
  tokenB: process.env.SESSIOND_TOKEN_B,
  staticPort: Number(process.env.SESSIOND_STATIC_PORT || 0),
  chromium: process.env.SESSIOND_CHROMIUM || "/usr/bin/chromium",
  // an SSE ticket that expired a while ago, for the session SESSIOND_EXPIRED_TICKET_SID
  expiredTicket: process.env.SESSIOND_EXPIRED_TICKET,
  expiredTicketSid: process.env.SESSIOND_EXPIRED_TICKET_SID,
};

const run = Date.now().toString(36);
/** A device id unique to this run: each run starts with new sessions, even on a reused stack. */
export const dev = (name) => `${name}-${run}`;

/** mode: "pass" | "down" (refuse new connections) | "no-ws" (drop WebSocket upgrades) |
 * "freeze" (keep connections open but forward nothing: a half-open connection). */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const proxy = { mode: "pass", upgradesRefused: 0 };
  const server = net.createServer((client) => {
    if (proxy.mode === "down") { client.destroy(); return; }
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client); sockets.add(upstream);
    let first = true;
    client.on("data", (chunk) => {
      if (first && proxy.mode === "no-ws" && /upgrade:\s*websocket/i.test(chunk.toString("latin1"))) {
        proxy.upgradesRefused += 1;
        client.destroy(); upstream.destroy();
        return;
      }
      first = false;
      if (proxy.mode !== "freeze") upstream.write(chunk);
    });
    upstream.on("data", (chunk) => { if (proxy.mode !== "freeze") client.write(chunk); });
    const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on("close", end); upstream.on("close", end);
    client.on("error", end); upstream.on("error", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  /** Cut every open connection (as a network failure would: no close frame). */
  proxy.dropAll = () => { for (const s of sockets) s.destroy(); sockets.clear(); };
  proxy.close = () => new Promise((r) => { proxy.dropAll(); server.close(r); });
  return proxy;
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".map": "application/json" };

/** Serve `root` on 127.0.0.1:`port`. */
export async function startStatic(root, port) {
  const server = http.createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(root, path));
      res.writeHead(200, { "content-type": TYPES[extname(path)] || "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404); res.end("not found");
    }
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Wait until `pred()` is true (polling), or fail after `ms`. */
export async function until(pred, ms = 10000, what = "condition") {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Record every state change a client applies, to prove no version twice and none skipped. */
export function recordChanges(client) {
  const seen = [];
  client.on("change", (c) => seen.push({ version: c.version, stateVersion: c.stateVersion }));
  return seen;
}

/** The state versions seen must be consecutive from the first: nothing applied twice or skipped. */
export function assertContiguous(assert, seen) {
  const sv = seen.map((s) => s.stateVersion);
  for (let i = 1; i < sv.length; i += 1) assert.equal(sv[i], sv[i - 1] + 1, `state versions ${sv.join(",")}`);
  const v = seen.map((s) => s.version);
  for (let i = 1; i < v.length; i += 1) assert.ok(v[i] > v[i - 1], `session versions ${v.join(",")}`);
}
