// The built client in a real headless Chromium (Debian's), driven by playwright-core, against a
// real gateway: a page served on loopback connects, updates state, sees a second device (a Node
// client) change it, survives a dropped connection and resumes without a gap; without WebSocket
// it falls back to SSE.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { chromium } from "playwright-core";
import { SessiondClient } from "../dist/sessiond.js";
import { dev, env, startProxy, startStatic, until, assertContiguous } from "./harness.mjs";

const live = Boolean(env.url && env.staticPort && env.expiredTicket);
const skip = !live && "SESSIOND_URL / SESSIOND_STATIC_PORT / SESSIOND_EXPIRED_TICKET not set (run through pytest)";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
let browser, site, proxy, profile;
const others = [];

before(async () => {
  if (!live) return;
  site = await startStatic(join(dirname(fileURLToPath(import.meta.url)), ".."), env.staticPort);
  proxy = await startProxy(env.url);
  profile = mkdtempSync(join(tmpdir(), "sessiond-chromium-"));
  // a new empty profile (playwright passes it as --user-data-dir)
  browser = await chromium.launchPersistentContext(profile, { executablePath: env.chromium,
                                                              headless: true, args: FLAGS });
});

after(async () => {
  for (const c of others) c.close();
  if (browser) await browser.close();
  if (proxy) await proxy.close();
  if (site) await site.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function openPage() {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${site.url}/test/page.html`);
  await page.waitForFunction(() => document.title === "ready");
  return { page, errors };
}

const view = (page) => page.evaluate(() => window.sessiondTest.view());

async function pageUntil(page, pred, what, ms = 15000) {
  await until(async () => pred(await view(page)), ms, what);
}

test("in Chromium: connect, update, see a second device, survive a drop, resume gap-free", { skip }, async () => {
  const { page, errors } = await openPage();
  const welcome = await page.evaluate(([u, t, d]) => window.sessiondTest.connect(u, t, d),
                                      [proxy.url, env.tokenA, dev("chromium-1")]);
  assert.equal((await view(page)).transport, "websocket");
  const peer = dev("node-peer");
  const other = new SessiondClient({ url: env.url, token: env.tokenA, deviceId: peer,
                                     sessionId: welcome.session_id, WebSocket });
  others.push(other);
  await other.connect();
  await pageUntil(page, (v) => v.devices[peer] === true, "the page sees the peer join");

  await page.evaluate(() => window.sessiondTest.client.update({ from: "browser", n: 1 }));
  await until(() => other.state.from === "browser", 10000, "the peer sees the page's write");
  await other.update({ from: "node", n: 2 });
  await pageUntil(page, (v) => v.state.from === "node" && v.state.n === 2, "the page sees the peer's write");
  assert.match(await page.textContent("#state"), /"from":"node"/);

  proxy.mode = "down";
  proxy.dropAll();
  await pageUntil(page, (v) => v.connection === "reconnecting", "the page notices the drop");
  for (let n = 3; n <= 6; n += 1) await other.update({ n });
  proxy.mode = "pass";
  await pageUntil(page, (v) => v.connection === "open" && v.state.n === 6, "the page resumes");

  const seen = await page.evaluate(() => window.sessiondTest.seen);
  assertContiguous(assert, seen);
  assert.deepEqual(seen.map((s) => s.stateVersion), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual((await view(page)).state, other.state);
  await page.screenshot({ path: join(profile, "page.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

test("in Chromium: without WebSocket the page falls back to SSE", { skip }, async () => {
  const { page, errors } = await openPage();
  proxy.mode = "no-ws";
  try {
    const welcome = await page.evaluate(([u, t, d]) => window.sessiondTest.connect(u, t, d),
                                        [proxy.url, env.tokenA, dev("chromium-sse")]);
    assert.equal((await view(page)).transport, "sse");
    const other = new SessiondClient({ url: env.url, token: env.tokenA, deviceId: dev("node-peer-sse"),
                                       sessionId: welcome.session_id, WebSocket });
    others.push(other);
    await other.connect();
    await page.evaluate(() => window.sessiondTest.client.update({ via: "sse" }));
    await until(() => other.state.via === "sse", 10000, "the peer sees the SSE page's write");
    await other.update({ back: true });
    await pageUntil(page, (v) => v.state.back === true, "the SSE page sees the peer's write");
    assert.deepEqual(errors, []);
  } finally {
    proxy.mode = "pass";
    await page.close();
  }
});

test("in Chromium: the README's browser example connects, writes and sees its change", { skip }, async () => {
  const here = dirname(fileURLToPath(import.meta.url));
  const readme = readFileSync(join(here, "..", "..", "..", "README.md"), "utf8");
  const block = readme.match(/<!-- browser-example[^>]*-->\s*```js\n([\s\S]*?)```/);
  assert.ok(block, "the README has the browser example");
  const code = block[1]
    .replace('"paste the token here"', JSON.stringify(env.tokenA))
    .replace("ws://127.0.0.1:8080", env.url.replace(/^http/, "ws"))
    .replace('"browser-1"', JSON.stringify(dev("readme")));
  assert.notEqual(code, block[1]);
  const { page, errors } = await openPage();
  const logged = [];
  page.on("console", (m) => logged.push(m.text()));
  await page.evaluate(code);
  await until(() => logged.some((l) => l.startsWith("state_update")), 10000, "the example's own change");
  assert.ok(logged[0].startsWith("auth_success"), logged.join("\n"));
  assert.deepEqual(errors, []);
  await page.close();
});

test("in Chromium: a page's own EventSource opens with an SSE ticket and gets pushes; an expired or misused ticket is refused", { skip }, async () => {
  const { page, errors } = await openPage();
  const peer = new SessiondClient({ url: env.url, token: env.tokenA, deviceId: dev("ticket-peer"), WebSocket });
  others.push(peer);
  const { session_id: sid } = await peer.connect();
  // the page: mint a ticket with its access token, open a plain EventSource with it
  const opened = await page.evaluate(async ([base, token, sid]) => {
    const r = await fetch(`${base}/api/sessions/${sid}/events/ticket`,
                          { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    const t = await r.json();
    window.ticketEvents = [];
    window.ticket = t.ticket;
    const es = new EventSource(`${base}${t.url}&device_id=page-es`);
    window.es = es;
    es.addEventListener("state_update", (e) => window.ticketEvents.push(JSON.parse(e.data)));
    await new Promise((resolve, reject) => {
      es.addEventListener("connected", resolve);
      es.onerror = () => reject(new Error("EventSource failed"));
    });
    return { status: r.status, expiresIn: t.expires_in };
  }, [env.url, env.tokenA, sid]);
  assert.deepEqual(opened, { status: 200, expiresIn: 60 });
  await peer.update({ pushed: "to the page" });
  await until(async () => (await page.evaluate(() => window.ticketEvents.length)) >= 1, 10000, "a push over the ticket's stream");
  const push = (await page.evaluate(() => window.ticketEvents))[0];
  assert.deepEqual(push.payload.changes, { pushed: "to the page" });

  // refused: an expired ticket, a ticket for another session, a ticket used as an access token
  const other = new SessiondClient({ url: env.url, token: env.tokenA, deviceId: dev("ticket-other"), WebSocket });
  others.push(other);
  const { session_id: otherSid } = await other.connect();
  const refused = await page.evaluate(async ([base, sid, otherSid, expired, expiredSid]) => {
    const code = async (url, init) => { const r = await fetch(base + url, init); return [r.status, (await r.json()).error.code]; };
    const failsToOpen = (url) => new Promise((resolve) => {
      const es = new EventSource(base + url);
      es.onerror = () => { resolve(es.readyState === EventSource.CLOSED); es.close(); };
      es.addEventListener("connected", () => { resolve(false); es.close(); });
    });
    return {
      expired: await code(`/api/sessions/${expiredSid}/events?ticket=${expired}`),
      expiredEventSourceClosed: await failsToOpen(`/api/sessions/${expiredSid}/events?ticket=${expired}`),
      otherSession: await code(`/api/sessions/${otherSid}/events?ticket=${window.ticket}`),
      asBearer: await code(`/session/${sid}`, { headers: { Authorization: `Bearer ${window.ticket}` } }),
    };
  }, [env.url, sid, otherSid, env.expiredTicket, env.expiredTicketSid]);
  assert.deepEqual(refused, {
    expired: [401, "TOKEN_EXPIRED"], expiredEventSourceClosed: true,
    otherSession: [401, "TOKEN_INVALID"], asBearer: [401, "TOKEN_INVALID"],
  });
  await page.evaluate(() => window.es.close());
  assert.deepEqual(errors, []);
  await page.close();
});
