// One session: its status, devices (presence, connection quality, round trip), connections per
// gateway, simulator status and live shared state, refreshed every 2 seconds; disconnect a device.

import { api, badge, clear, fmtTime, h, jsonBlock, notice } from './dom.js';

export function sessionPage(main, sessionId) {
  const body = h('div#session-body');
  const message = h('div');
  let stopped = false;

  async function disconnect(deviceId) {
    if (!confirm(`Disconnect ${deviceId}?`)) return;
    try {
      await api(`/session/${sessionId}/device/${encodeURIComponent(deviceId)}`, { method: 'DELETE' });
      notice(message, `${deviceId} disconnected`, 'ok');
      load();
    } catch (err) {
      notice(message, err.message);
    }
  }

  function render(s) {
    const meta = (s.session && s.session.metadata) || {};
    const quality = meta.connection_quality || '—';
    clear(body,
      h('section.cards', {},
        h('div.card', {}, h('h3', {}, 'Session'),
          h('dl', {},
            h('dt', {}, 'status'), h('dd#session-status', {}, badge(s.session ? s.session.status : 'ENDED')),
            h('dt', {}, 'user'), h('dd', {}, s.session ? s.session.user_id : '—'),
            h('dt', {}, 'version'), h('dd#session-version', {}, String(s.version)),
            h('dt', {}, 'quality'), h('dd', {}, badge(quality), meta.rtt_ms ? ` ${meta.rtt_ms} ms` : ''),
            h('dt', {}, 'created'), h('dd', {}, s.session ? fmtTime(s.session.created_at) : '—'),
            h('dt', {}, 'expires'), h('dd', {}, s.session ? fmtTime(s.session.expires_at) : '—'))),
        h('div.card', {}, h('h3', {}, 'Simulator'),
          s.simulator ? h('dl', {},
            h('dt', {}, 'id'), h('dd', {}, s.simulator.simulator_id),
            h('dt', {}, 'status'), h('dd#simulator-status', {}, badge(s.simulator.status)),
            h('dt', {}, 'endpoint'), h('dd', {}, s.simulator.endpoint || '—')) : h('p.muted', {}, 'no simulator')),
        h('div.card', {}, h('h3', {}, 'Connections per gateway'),
          Object.keys(s.connections_by_gateway).length ? h('ul#connections', {},
            Object.entries(s.connections_by_gateway).map(([gw, conns]) =>
              h('li', {}, h('b', {}, gw || '?'), `: ${conns.length} (`,
                conns.map((c) => `${c.device_id} ${c.transport}`).join(', '), ')'))) : h('p.muted', {}, 'none open'))),
      h('section.card', {}, h('h3', {}, 'Devices'),
        s.devices.length ? h('table.grid#devices', {},
          h('thead', {}, h('tr', {}, ['device', 'type', 'presence', 'connections', 'round trip', 'last seen', 'left', '']
            .map((t) => h('th', {}, t)))),
          h('tbody', {}, s.devices.map((d) => h('tr', { dataset: { device: d.device_id } },
            h('td', {}, d.device_id), h('td', {}, [d.device_type, d.device_name, d.os].filter(Boolean).join(' · ') || '—'),
            h('td', {}, h('span.dot.' + d.status), d.status),
            h('td', {}, String(d.connections)),
            h('td', {}, d.rtt_ms ? `${d.rtt_ms} ms` : '—'),
            h('td', {}, fmtTime(d.last_seen)), h('td', {}, d.left_reason || '—'),
            h('td', {}, d.status === 'online'
              ? h('button.danger.disconnect', { onclick: () => disconnect(d.device_id) }, 'Disconnect') : ''))))) : h('p.muted', {}, 'no device')),
      h('section.card', {}, h('h3', {}, 'Live state ', h('span.muted', {}, s.state ? `(state version ${s.state.state_version})` : '')),
        h('div#live-state', {}, jsonBlock(s.state ? s.state.state : {}))));
  }

  async function load() {
    try {
      const s = await api(`/admin/sessions/${sessionId}`);
      if (!stopped) render(s);
    } catch (err) {
      notice(message, err.message);
    }
  }

  clear(main,
    h('div.title', {}, h('h1', {}, 'Session ', h('code', {}, sessionId)),
      h('a.button#open-travel', { href: `#/travel/${sessionId}` }, 'Time travel →')),
    message, body);
  load();
  const timer = setInterval(load, 2000);
  return () => { stopped = true; clearInterval(timer); };
}
