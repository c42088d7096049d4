// Small DOM and API helpers shared by the console's views (no framework, no build step).

/** h('div.card#id', {onclick, ...attrs}, ...children): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || 'div');
  for (const part of rest) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && key !== 'list' && key !== 'form') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The admin token, kept for this browser tab only. */
export const auth = {
  get token() { return sessionStorage.getItem('sessiond.token') || ''; },
  set token(value) {
    if (value) sessionStorage.setItem('sessiond.token', value);
    else sessionStorage.removeItem('sessiond.token');
  },
};

/** fetch with the bearer token; JSON in and out; errors as ApiError with the API's code. */
export async function api(path, { method = 'GET', body, raw, relogin = true } = {}) {
  const headers = { Authorization: `Bearer ${auth.token}` };
  let payload = raw;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (response.status === 401 && relogin) {  // expired or revoked: back to the sign-in form
    auth.token = '';
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  }
  if (!response.ok) {
    const err = (doc && doc.error) || {};
    throw new ApiError(response.status, err.code || 'HTTP_' + response.status,
      err.message || response.statusText);
  }
  return doc;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

export function fmtTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  return isNaN(d) ? String(value) : d.toISOString().replace('T', ' ').replace('Z', '');
}

export function short(id, n = 8) {
  return id && id.length > n + 2 ? id.slice(0, n) + '…' : id || '';
}

/** A JSON value, indented, as a <pre>. */
export function jsonBlock(value, cls = '') {
  return h('pre.json' + (cls ? '.' + cls : ''), {}, JSON.stringify(value, null, 2));
}

/** path -> [old, new] as a table (the state diff of one version). */
export function diffTable(diff) {
  const rows = Object.entries(diff || {});
  if (!rows.length) return h('p.muted', {}, 'no change to the state');
  const cell = (v) => (v === undefined ? '—' : JSON.stringify(v));
  return h('table.diff', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'path'), h('th', {}, 'before'), h('th', {}, 'after'))),
    h('tbody', {}, rows.map(([path, [before, after]]) => h('tr', { dataset: { path } },
      h('td.path', {}, path), h('td.old', {}, cell(before)), h('td.new', {}, cell(after))))));
}

export function badge(text) {
  const cls = String(text || '').toLowerCase();
  return h('span.badge.' + (cls || 'none'), {}, text || '—');
}

export function notice(el, message, kind = 'error') {
  clear(el, message ? h('div.notice.' + kind, { role: 'status' }, message) : null);
}
