// The sessions list: search by user (or its beginning), device and status; keyset pages (the
// API's next_cursor; the cursors seen are kept so "Previous" goes back).

import { api, badge, clear, fmtTime, h, notice, query } from './dom.js';

const STATUSES = ['', 'ACTIVE', 'RECONNECTING', 'INACTIVE', 'EXPIRED', 'ANY'];

export function sessionsPage(main, params) {
  const user = h('input#search-user', { placeholder: 'user id (or its beginning)', value: params.get('user') || '' });
  const device = h('input#search-device', { placeholder: 'device id', value: params.get('device') || '' });
  const status = h('select#search-status', {}, STATUSES.map((s) =>
    h('option', { value: s, selected: s === (params.get('status') || '') }, s || 'live')));
  const table = h('div#sessions');
  const message = h('div');
  const pager = h('div.pager');
  const cursors = [''];
  let page = 0;

  async function load() {
    notice(message, '');
    try {
      const found = await api('/admin/sessions' + query({
        user: user.value.trim(), device: device.value.trim(), status: status.value,
        cursor: cursors[page], limit: 20,
      }));
      if (found.next_cursor) cursors[page + 1] = found.next_cursor;
      render(found);
    } catch (err) {
      notice(message, err.message);
    }
  }

  function render(found) {
    clear(table, found.count === 0 ? h('p.muted', {}, 'no session matches') : h('table.grid', {},
      h('thead', {}, h('tr', {}, ['session', 'user', 'status', 'devices', 'connections', 'simulator', 'last active']
        .map((t) => h('th', {}, t)))),
      h('tbody', {}, found.sessions.map((s) => h('tr', { dataset: { session: s.session_id } },
        h('td', {}, h('a.session-link', { href: `#/session/${s.session_id}` }, s.session_id)),
        h('td', {}, s.user_id),
        h('td', {}, badge(s.status)),
        h('td', {}, (s.metadata.device_ids || []).join(', ') || '—'),
        h('td', {}, String((s.metadata.frontend_connections || 0) + (s.metadata.sse_connections || 0))),
        h('td', {}, s.metadata.simulator_status ? badge(s.metadata.simulator_status) : '—'),
        h('td', {}, fmtTime(s.last_active)))))));
    clear(pager,
      h('button#prev-page', { disabled: page === 0, onclick: () => { page -= 1; load(); } }, '← Previous'),
      h('span.muted', {}, `page ${page + 1}`),
      h('button#next-page', { disabled: !found.next_cursor, onclick: () => { page += 1; load(); } }, 'Next →'));
  }

  const search = (e) => {
    e.preventDefault();
    cursors.length = 1;
    page = 0;
    history.replaceState(null, '', '#/sessions' + query({ user: user.value.trim(), device: device.value.trim(), status: status.value }));
    load();
  };
  clear(main,
    h('h1', {}, 'Sessions'),
    h('form.search.card#search', { onsubmit: search }, user, device, status, h('button#search-go', { type: 'submit' }, 'Search')),
    message, table, pager);
  load();
}
