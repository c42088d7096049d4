// The sessiond console: sign in with an admin token, then the pages, routed by the URL's hash:
//   #/sessions?user=&device=&status=   the sessions list (search, keyset pages)
//   #/session/<id>                     one session (devices, connections, simulator, live state)
//   #/travel/<id>                      time travel over the session's and its simulator's events
//   #/replay                           load an exported file and step through it
//   #/live                             live charts and the broadcast form
// Every page stops its timers when the route changes (`cleanup`).

import { api, auth, clear, h, notice } from './dom.js';
import { livePage } from './live.js';
import { sessionPage } from './session.js';
import { sessionsPage } from './sessions.js';
import { replayPage, travelPage } from './travel.js';

const root = document.getElementById('app');
let cleanup = () => {};

function loginPage() {
  const input = h('textarea#token', { rows: 4, placeholder: 'an access token with the admin role (sessiond token <user> --role admin)' });
  const status = h('div');
  const submit = async (e) => {
    e.preventDefault();
    auth.token = input.value.trim();
    try {
      await api('/admin/stats', { relogin: false });
      location.hash = '#/sessions';
      route();
    } catch (err) {
      auth.token = '';
      notice(status, err.status === 403 ? 'this token has no admin role' : `sign-in failed: ${err.message}`);
    }
  };
  return h('main.login', {},
    h('form.card#login', { onsubmit: submit },
      h('h1', {}, 'sessiond console'),
      h('label', { for: 'token' }, 'Admin token'), input,
      h('button#sign-in', { type: 'submit' }, 'Sign in'), status));
}

function nav(active) {
  const link = (hash, text) => h('a' + (active === hash ? '.active' : ''), { href: '#/' + hash }, text);
  return h('header.top', {},
    h('span.brand', {}, 'sessiond console'),
    h('nav', {}, link('sessions', 'Sessions'), link('live', 'Live'), link('replay', 'Replay a file')),
    h('button.link#sign-out', { onclick: () => { auth.token = ''; location.hash = ''; route(); } }, 'Sign out'));
}

function route() {
  cleanup();
  cleanup = () => {};
  if (!auth.token) {
    clear(root, loginPage());
    return;
  }
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [page, arg] = path.split('/');
  const params = new URLSearchParams(search);
  const main = h('main');
  const pages = {
    sessions: () => sessionsPage(main, params),
    session: () => sessionPage(main, arg),
    travel: () => travelPage(main, arg),
    replay: () => replayPage(main),
    live: () => livePage(main),
  };
  const name = pages[page] ? page : 'sessions';
  clear(root, nav(name === 'session' || name === 'travel' ? 'sessions' : name), main);
  document.title = `sessiond console · ${name}`;
  const stop = pages[name]();
  if (typeof stop === 'function') cleanup = stop;
}

window.addEventListener('hashchange', route);
route();
