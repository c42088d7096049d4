// Time travel: every event of a session and its simulator on one timeline (a virtualised list),
// a scrubber to any event showing the actor's state after it and what it changed, a live tail
// of new events, filters by type and correlation id, export to JSON lines, and the same view
// over an exported file loaded back (`replayPage`): its states come from /admin/replays.

import { api, clear, fmtTime, h, jsonBlock, diffTable, notice, short } from './dom.js';
import { VirtualList } from './vlist.js';

const PAGE = 5000;

/** An event of the API as a timeline row. */
function row(e) {
  return {
    actor: e.actor_id, version: e.version, type: e.type, ts: e.ts, time: e.time,
    correlation_id: e.correlation_id, command_id: e.command_id, causation_id: e.causation_id,
    event_id: e.event_id, partition: e.partition, payload: e.payload,
  };
}

/** A timeline row as an exported line (`sessiond export`'s shape; `sessiond replay --file` reads it). */
function exportLine(r) {
  return JSON.stringify({
    event_id: r.event_id, actor_id: r.actor, version: r.version, partition: r.partition, ts: r.ts,
    command_id: r.command_id, correlation_id: r.correlation_id, causation_id: r.causation_id,
    type: r.type, data: r.payload,
  });
}

function byTime(a, b) {
  return a.ts - b.ts || (a.actor < b.actor ? -1 : a.actor > b.actor ? 1 : a.version - b.version);
}

async function readAll(actor, after = 0) {
  const out = [];
  for (;;) {
    const page = await api(`/admin/actors/${actor}/events?after=${after}&limit=${PAGE}`);
    out.push(...page.events.map(row));
    if (page.next_after == null) return out;
    after = page.next_after;
  }
}

/**
 * The timeline view. `source` knows where events and states come from:
 *   { title, actors(): Promise<string[]>, events(actor, after): Promise<row[]>,
 *     state(actor, version): Promise<ActorState>, live: boolean }
 */
function timelineView(main, source) {
  let rows = [];
  let shown = [];
  const last = {};
  let request = 0;
  let following = true;
  const message = h('div');
  const typeFilter = h('select#filter-type', {}, h('option', { value: '' }, 'every type'));
  const cidFilter = h('input#filter-correlation', { placeholder: 'correlation id (or part of it)' });
  const scrubber = h('input#scrubber', { type: 'range', min: 0, max: 0, value: 0 });
  const position = h('span#position.muted', {}, '—');
  const tail = h('input#live-tail', { type: 'checkbox', checked: source.live, disabled: !source.live });
  const counts = h('span#event-count.muted');
  const stateHead = h('div#state-head', {}, 'select an event');
  const stateBody = h('div#state');
  const diffBody = h('div#diff');
  const detail = h('div#event-detail');
  const listHost = h('div.timeline');
  const list = new VirtualList(listHost, (r) => h('div.event', { dataset: { actor: r.actor.split(':')[0], version: r.version } },
    h('span.v', {}, String(r.version)),
    h('span.kind.' + r.actor.split(':')[0], {}, r.actor.split(':')[0]),
    h('span.t', {}, r.type),
    h('span.time', {}, fmtTime(r.ts)),
    h('span.cid', { title: r.correlation_id }, short(r.correlation_id, 28))), { onSelect: (i) => show(i) });

  function applyFilters() {
    const type = typeFilter.value;
    const cid = cidFilter.value.trim();
    const selected = shown[list.selected];
    shown = rows.filter((r) => (!type || r.type === type) && (!cid || r.correlation_id.includes(cid)));
    list.setItems(shown);
    scrubber.max = String(Math.max(0, shown.length - 1));
    counts.textContent = `${shown.length} of ${rows.length} events`;
    const keep = selected ? shown.indexOf(selected) : -1;
    if (keep >= 0) list.select(keep, { notify: false });
    else if (shown.length) list.select(shown.length - 1);
    scrubber.value = String(Math.max(0, list.selected));
    position.textContent = shown.length ? `${list.selected + 1} / ${shown.length}` : '—';
  }

  function refreshTypes() {
    const types = [...new Set(rows.map((r) => r.type))].sort();
    const current = typeFilter.value;
    clear(typeFilter, h('option', { value: '' }, 'every type'),
      types.map((t) => h('option', { value: t, selected: t === current }, t)));
  }

  async function show(index) {
    const r = shown[index];
    if (!r) return;
    following = index === shown.length - 1;
    scrubber.value = String(index);
    position.textContent = `${index + 1} / ${shown.length}`;
    clear(detail, h('dl.compact', {},
      h('dt', {}, 'actor'), h('dd', {}, r.actor),
      h('dt', {}, 'version'), h('dd', {}, String(r.version)),
      h('dt', {}, 'time'), h('dd', {}, fmtTime(r.ts)),
      h('dt', {}, 'correlation'), h('dd', {}, r.correlation_id || '—'),
      h('dt', {}, 'command'), h('dd', {}, r.command_id || '—')), jsonBlock(r.payload, 'small'));
    const mine = ++request;
    try {
      const s = await source.state(r.actor, r.version);
      if (mine !== request) return;  // the scrubber moved on meanwhile
      clear(stateHead, h('b', {}, `${r.actor.split(':')[0]} v${s.version}`), ` ${r.type} · of ${s.last_version}`);
      clear(stateBody, jsonBlock(s.state));
      clear(diffBody, diffTable(s.diff));
      stateHead.dataset.version = String(s.version);
      stateHead.dataset.actor = s.actor_id;
    } catch (err) {
      if (mine === request) notice(message, err.message);
    }
  }

  async function poll() {
    let added = 0;
    for (const actor of Object.keys(last)) {
      const fresh = await source.events(actor, last[actor]);
      if (fresh.length) {
        last[actor] = fresh[fresh.length - 1].version;
        rows.push(...fresh);
        added += fresh.length;
      }
    }
    if (!added) return;
    const follow = following;
    rows.sort(byTime);
    refreshTypes();
    applyFilters();
    if (follow && shown.length) list.select(shown.length - 1);
  }

  function exportFile() {
    const blob = new Blob([rows.map(exportLine).join('\n') + '\n'], { type: 'application/x-ndjson' });
    const a = h('a', { href: URL.createObjectURL(blob), download: `${source.title.replace(/[^\w.-]+/g, '_')}.jsonl` });
    document.body.append(a);
    a.click();
    a.remove();
  }

  scrubber.addEventListener('input', () => list.select(Number(scrubber.value)));
  typeFilter.addEventListener('change', applyFilters);
  cidFilter.addEventListener('input', applyFilters);

  clear(main,
    h('div.title', {}, h('h1', {}, 'Time travel ', h('code', {}, source.title)), source.back || ''),
    message,
    h('div.card.controls', {},
      typeFilter, cidFilter,
      h('label.check', {}, tail, ' live tail'),
      h('button#export', { onclick: exportFile }, 'Export'),
      counts),
    h('div.card.scrub', {}, h('label', { for: 'scrubber' }, 'Scrub'), scrubber, position),
    h('div.travel', {},
      h('section.card', {}, h('h3', {}, 'Timeline'),
        h('div.event.head', {}, h('span.v', {}, 'ver'), h('span.kind', {}, 'actor'), h('span.t', {}, 'type'),
          h('span.time', {}, 'time'), h('span.cid', {}, 'correlation id')), listHost, detail),
      h('section.card', {}, h('h3', {}, 'State after the event'), stateHead,
        h('h4', {}, 'Changed by it'), diffBody, h('h4', {}, 'State'), stateBody)));

  let timer = null;
  (async () => {
    try {
      for (const actor of await source.actors()) {
        const events = await source.events(actor, 0);
        last[actor] = events.length ? events[events.length - 1].version : 0;
        rows.push(...events);
      }
      rows.sort(byTime);
      refreshTypes();
      applyFilters();
      if (source.live) {
        timer = setInterval(() => { if (tail.checked) poll().catch((e) => notice(message, e.message)); }, 1000);
      }
    } catch (err) {
      notice(message, err.message);
    }
  })();
  return () => { if (timer) clearInterval(timer); request++; };
}

export function travelPage(main, sessionId) {
  return timelineView(main, {
    title: `session ${sessionId}`,
    live: true,
    back: h('a.button', { href: `#/session/${sessionId}` }, '← Session'),
    async actors() {
      const actors = [`session:${sessionId}`];
      const overview = await api(`/admin/sessions/${sessionId}`);
      if (overview.simulator_actor) actors.push(overview.simulator_actor);
      return actors;
    },
    events: readAll,
    state: (actor, version) => api(`/admin/actors/${actor}/state?version=${version}`),
  });
}

export function replayPage(main) {
  const input = h('input#replay-file', { type: 'file', accept: '.jsonl,.json,.ndjson,application/json' });
  const message = h('div');
  const host = h('div');
  input.addEventListener('change', async () => {
    const file = input.files[0];
    if (!file) return;
    try {
      const text = await file.text();
      const lines = text.trim().startsWith('[') ? JSON.parse(text)
        : text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
      const loaded = await api('/admin/replays', { method: 'POST', raw: text });
      notice(message, `loaded ${loaded.events} events of ${Object.keys(loaded.actors).length} actor(s)`, 'ok');
      const rows = lines.map((l) => row({ ...l, payload: l.data }));
      timelineView(host, {
        title: file.name,
        live: false,
        actors: async () => Object.keys(loaded.actors),
        events: async (actor, after) => rows.filter((r) => r.actor === actor && r.version > after)
          .sort((a, b) => a.version - b.version),
        state: (actor, version) => api(`/admin/replays/${loaded.replay_id}/actors/${actor}/state?version=${version}`),
      });
    } catch (err) {
      notice(message, `not an exported history: ${err.message}`);
    }
  });
  clear(main, h('h1', {}, 'Replay an exported history'),
    h('div.card', {}, h('p', {}, 'A file from the time travel page\'s Export, or from ', h('code', {}, 'sessiond export'), '.'), input),
    message, host);
}
