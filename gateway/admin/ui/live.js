// Live charts from this gateway's own counters (/admin/stats every second: totals become rates
// between two samples) and the broadcast form (every client of every gateway receives it).

import { api, clear, h, notice } from './dom.js';
import { LineChart } from './charts.js';

export function livePage(main) {
  const grid = h('section.charts');
  const message = h('div');
  const sent = h('div#broadcast-result');
  const charts = {
    connections: new LineChart(grid, 'Connections', ['this gateway', 'all gateways']),
    messages: new LineChart(grid, 'Messages/s', ['received', 'pushed'], { unit: '/s' }),
    latency: new LineChart(grid, 'Push latency', ['p50', 'p95'], { unit: ' ms' }),
    lag: new LineChart(grid, 'Projector lag', ['seconds behind'], { unit: ' s' }),
  };
  let previous = null;
  const gateway = h('span.muted#gateway-id');

  async function sample() {
    try {
      const s = await api('/admin/stats');
      gateway.textContent = `gateway ${s.gateway}`;
      charts.connections.push(s.connections, s.connections_all);
      if (previous) {
        const dt = Math.max(0.001, (s.ts - previous.ts) / 1000);
        charts.messages.push((s.messages_in_total - previous.messages_in_total) / dt,
          (s.pushes_total - previous.pushes_total) / dt);
      }
      const lat = s.push_latency_ms;
      charts.latency.push(lat.count ? lat.p50 : null, lat.count ? lat.p95 : null);
      charts.lag.push(s.projector_lag_s);
      previous = s;
      notice(message, '');
    } catch (err) {
      notice(message, err.message);
    }
  }

  const text = h('input#broadcast-message', { placeholder: 'System maintenance scheduled', required: true });
  const kind = h('input#broadcast-type', { value: 'notification' });
  const broadcast = async (e) => {
    e.preventDefault();
    try {
      const r = await api('/admin/broadcast', { method: 'POST', body: { message: text.value, type: kind.value } });
      notice(sent, `sent to ${r.gateways} gateway(s)`, 'ok');
    } catch (err) {
      notice(sent, err.message);
    }
  };

  clear(main,
    h('div.title', {}, h('h1', {}, 'Live'), gateway),
    message, grid,
    h('form.card#broadcast', { onsubmit: broadcast },
      h('h3', {}, 'Broadcast to every client'), text, kind,
      h('button#broadcast-send', { type: 'submit' }, 'Send'), sent));
  sample();
  const timer = setInterval(sample, 1000);
  return () => clearInterval(timer);
}
