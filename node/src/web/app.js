// Tally's web page: list and create polls, vote, watch results move, see the cluster.
// It uses only the public HTTP API of the node that served it. Every server string goes
// into the page through textContent, never innerHTML.
'use strict';

const STATUS_INTERVAL_MS = 2000;
const BREAKDOWN_REFRESH_MS = 1000;

// What the current view started (streams, timers); stopped when the route changes.
let cleanups = [];

// With --auth jwt: the bearer token of the signed-in user, for this browser tab.
let token = sessionStorage.getItem('tally.token');

// The token's subject, read from its payload (the node verifies the signature).
function tokenSubject() {
  if (!token) return null;
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).sub || null;
  } catch (error) {
    return null;
  }
}

function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem('tally.token', value);
  else sessionStorage.removeItem('tally.token');
  renderAccount();
}

function cleanup() {
  for (const stop of cleanups) stop();
  cleanups = [];
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (key === 'style') node.style.cssText = String(value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  const sent = token;
  if (sent) init.headers.Authorization = `Bearer ${sent}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, 'UNREACHABLE', 'the node did not answer');
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (error) {
    json = null;
  }
  // The node runs with --auth jwt and refused the token this request carried (expired, or
  // revoked by a password change), or there was none: sign in first. A refusal of an older
  // request that went out before a sign-in says nothing about the new token.
  if (response.status === 401 && !path.startsWith('/v1/auth/') && sent === token) {
    setToken(null);
    showSignIn();
  }
  if (!response.ok) {
    const error = (json && json.error) || {};
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || text);
  }
  return json;
}

function showError(container, error) {
  container.replaceChildren(el('p', { class: 'error', role: 'alert' }, error.message || String(error)));
}

// An attribute key as a label: "age_group" → "Age group".
function humanize(key) {
  const words = String(key).replace(/[_-]+/g, ' ').trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// ---- routing -------------------------------------------------------------------------

function renderAccount() {
  const account = document.getElementById('account');
  if (!account) return;
  const subject = tokenSubject();
  account.replaceChildren(...(subject
    ? [el('span', {}, 'signed in as ', el('b', { id: 'signed-in-as' }, subject)), ' ',
      el('button', { type: 'button', class: 'link', onclick: () => { setToken(null); route(); } }, 'sign out')]
    : []));
}

// Sign in or register (built-in accounts), for nodes run with --auth jwt.
function showSignIn() {
  cleanup();
  const view = document.getElementById('view');
  const message = el('div', { id: 'sign-in-message' });
  const username = el('input', { name: 'username', required: true, maxlength: 64, autocomplete: 'username' });
  const password = el('input', { name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'current-password' });
  const form = el('form', { id: 'sign-in-form', class: 'card' },
    el('h2', {}, 'Sign in'),
    el('p', { class: 'muted' }, 'This cluster runs with accounts (--auth jwt).'),
    el('label', {}, 'Username', username),
    el('label', {}, 'Password', password),
    el('button', { type: 'submit', name: 'sign-in' }, 'Sign in'), ' ',
    el('button', { type: 'button', name: 'register', class: 'secondary', onclick: () => submit(true) }, 'Register'),
    message);
  async function submit(register) {
    const credentials = { username: username.value.trim(), password: password.value };
    try {
      if (register) await api('POST', '/v1/users', credentials);
      const reply = await api('POST', '/v1/auth/token', credentials);
      setToken(reply.access_token);
      route();
      refreshCluster();
    } catch (error) {
      showError(message, error);
    }
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(false);
  });
  view.replaceChildren(form);
}

function route() {
  renderAccount();
  cleanup();
  const match = location.hash.match(/^#\/poll\/([A-Za-z0-9_-]{1,64})$/);
  if (match) showPoll(match[1]);
  else showHome();
}

window.addEventListener('hashchange', route);

// ---- home: poll list and the create form ----------------------------------------------

async function showHome() {
  const view = document.getElementById('view');
  const list = el('ul', { id: 'poll-list', class: 'polls' }, el('li', { class: 'muted' }, 'loading…'));
  view.replaceChildren(el('h1', {}, 'Polls'), list, createForm());
  try {
    const page = await api('GET', '/v1/polls?limit=50');
    list.replaceChildren();
    if (page.polls.length === 0) list.append(el('li', { class: 'muted' }, 'No polls yet: create the first one below.'));
    for (const poll of page.polls) {
      const votes = poll.total_votes === undefined ? 'results hidden'
        : `${poll.total_votes} vote${poll.total_votes === 1 ? '' : 's'}`;
      list.append(el('li', { 'data-poll-id': poll.poll_id },
        el('a', { href: `#/poll/${poll.poll_id}` }, poll.title),
        ' ', el('span', { class: `status ${poll.status}` }, poll.status),
        el('div', { class: 'muted poll-meta' }, el('span', { class: 'poll-votes' }, votes),
          ` · created ${formatTime(poll.created_at)}`)));
    }
  } catch (error) {
    showError(list, error);
  }
}

function createForm() {
  const message = el('p', { id: 'create-message' });
  const form = el('form', { id: 'create-form', class: 'card' },
    el('h2', {}, 'New poll'),
    el('label', {}, 'Title', el('input', { name: 'title', required: true, maxlength: 200 })),
    el('label', {}, 'Options, one per line', el('textarea', { name: 'options', rows: 4, required: true })),
    el('label', {}, 'Breakdowns (comma separated, e.g. region)', el('input', { name: 'breakdowns', placeholder: 'region' })),
    el('label', {}, 'Ends at (optional)', el('input', { name: 'end_time', type: 'datetime-local' })),
    el('label', { class: 'inline' }, el('input', { name: 'allow_vote_change', type: 'checkbox' }), ' voters may change their vote'),
    el('label', { class: 'inline' }, el('input', { name: 'hide_results', type: 'checkbox' }), ' hide results until the poll closes'),
    el('button', { type: 'submit' }, 'Create poll'),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      title: data.get('title').trim(),
      options: data.get('options').split('\n').map((o) => o.trim()).filter(Boolean),
      settings: {
        allow_vote_change: data.get('allow_vote_change') === 'on',
        show_results_during_voting: data.get('hide_results') !== 'on',
        breakdowns: data.get('breakdowns').split(',').map((b) => b.trim()).filter(Boolean),
      },
    };
    if (data.get('end_time')) body.end_time = new Date(data.get('end_time')).toISOString();
    try {
      const poll = await api('POST', '/v1/polls', body);
      location.hash = `#/poll/${poll.poll_id}`;
    } catch (error) {
      showError(message, error);
    }
  });
  return form;
}

// ---- one poll: vote, live results, turnout by breakdown -------------------------------

async function showPoll(pollId) {
  const view = document.getElementById('view');
  view.replaceChildren(el('p', { class: 'muted' }, 'loading…'));
  let poll;
  try {
    poll = await api('GET', `/v1/polls/${pollId}`);
  } catch (error) {
    showError(view, error);
    return;
  }
  const results = el('div', { id: 'results', class: 'card' }, el('h2', {}, 'Results'),
    el('div', { id: 'bars' }), el('p', { id: 'results-meta', class: 'muted' }));
  const breakdowns = poll.settings.breakdowns || [];
  const turnout = breakdowns.length ? turnoutCard(poll, breakdowns) : null;
  const rate = rateCard();
  // replaceChildren would print a null as the text "null": leave absent parts out.
  view.replaceChildren(...[
    el('p', {}, el('a', { href: '#/' }, '← all polls')),
    el('h1', { id: 'poll-title' }, poll.title),
    el('p', { class: 'muted' }, el('span', { id: 'poll-status', class: `status ${poll.status}` }, poll.status),
      poll.end_time ? ` · ends ${formatTime(poll.end_time)}` : '',
      poll.settings.allow_vote_change ? ' · votes can be changed' : ''),
    poll.description ? el('p', {}, poll.description) : null,
    voteForm(poll),
    results,
    rate.card,
    turnout ? turnout.card : null].filter(Boolean));
  renderBars(poll, null);
  followResults(poll, (body) => {
    renderBars(poll, body);
    rate.add(body.total_votes);
    if (turnout) turnout.refresh();
  });
}

function voteForm(poll) {
  const message = el('div', { id: 'vote-message' });
  // Signed in, the voter is the token's subject; without accounts, the voter says who.
  const subject = tokenSubject();
  const voter = el('input', { name: 'voter_id', required: !subject, maxlength: 128,
    value: localStorage.getItem('tally.voter') || '' });
  const options = poll.options.map((option) => el('label', { class: 'option' },
    el('input', { type: 'radio', name: 'option_id', value: option.option_id, required: true }), ' ', option.text));
  const attributes = (poll.settings.breakdowns || []).map((name) =>
    el('label', {}, humanize(name), el('input', { name: `attr-${name}`, 'data-attribute': name, maxlength: 64 })));
  const form = el('form', { id: 'vote-form', class: 'card' },
    el('h2', {}, 'Vote'),
    subject ? el('p', {}, 'Voting as ', el('b', {}, subject)) : el('label', {}, 'Voter id', voter),
    el('fieldset', {}, el('legend', {}, 'Your choice'), options),
    attributes,
    el('button', { type: 'submit', disabled: poll.status !== 'active' },
      poll.status === 'active' ? 'Vote' : `Poll ${poll.status}`),
    message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const chosen = form.querySelector('input[name=option_id]:checked');
    if (!chosen) return;
    const body = subject ? { option_id: chosen.value, attributes: {} }
      : { voter_id: voter.value.trim(), option_id: chosen.value, attributes: {} };
    for (const input of form.querySelectorAll('input[data-attribute]')) {
      if (input.value.trim()) body.attributes[input.dataset.attribute] = input.value.trim();
    }
    if (!subject) localStorage.setItem('tally.voter', body.voter_id);
    // One key per click: a network retry of this click cannot count twice.
    const key = `web-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    try {
      const reply = await api('POST', `/v1/polls/${poll.poll_id}/votes`, body, { 'Idempotency-Key': key });
      message.replaceChildren(el('p', { class: 'ok' }, `Vote ${reply.status}.`),
        el('p', { class: 'receipt' }, 'Receipt: ', el('code', {}, `${reply.receipt.vote_id} #${reply.receipt.position} ${reply.receipt.chain_hash}`)));
    } catch (error) {
      showError(message, error);
    }
  });
  return form;
}

function renderBars(poll, body) {
  const bars = document.getElementById('bars');
  const meta = document.getElementById('results-meta');
  if (!bars) return;
  if (!body) {
    bars.replaceChildren(el('p', { class: 'muted' }, 'waiting for the first results…'));
    return;
  }
  bars.replaceChildren(...body.options.map((option) => el('div', { class: 'bar', 'data-option-id': option.option_id },
    el('div', { class: 'bar-label' }, el('span', {}, option.label),
      el('span', { class: 'bar-count' }, `${option.votes} · ${option.percentage}%`)),
    el('div', { class: 'bar-track' }, el('div', { class: 'bar-fill', style: `width: ${option.percentage}%` })))));
  const status = document.getElementById('poll-status');
  if (status && status.textContent !== body.status) {
    status.textContent = body.status;
    status.className = `status ${body.status}`;
  }
  meta.replaceChildren(el('span', { id: 'total-votes' }, `${body.total_votes}`), ' votes · node ', body.served_by,
    ' · applied index ', body.applied_index, ' · as of ', formatTime(body.as_of));
}

// The results stream; EventSource reconnects by itself when a node restarts.
function followResults(poll, onResults) {
  const meta = () => document.getElementById('results-meta');
  // EventSource cannot send headers: the stream takes the token as a query parameter.
  const query = token ? `?access_token=${encodeURIComponent(token)}` : '';
  const source = new EventSource(`/v1/polls/${poll.poll_id}/results/stream${query}`);
  source.addEventListener('results', (event) => {
    try {
      onResults(JSON.parse(event.data));
    } catch (error) {
      // A malformed event is skipped; the next one carries the whole state again.
    }
  });
  source.onerror = async () => {
    if (source.readyState === EventSource.CLOSED) {
      // Closed for good: usually 403 while results are hidden. Say why.
      try {
        await api('GET', `/v1/polls/${poll.poll_id}/results`);
      } catch (error) {
        const bars = document.getElementById('bars');
        if (bars) showError(bars, error);
      }
    } else if (meta()) {
      meta().textContent = 'reconnecting to the results stream…';
    }
  };
  cleanups.push(() => source.close());
}

const SVG = 'http://www.w3.org/2000/svg';
// Seconds of turnout the curve shows, and its drawing size.
const RATE_WINDOW_S = 300;
const RATE_WIDTH = 300;
const RATE_HEIGHT = 80;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  node.append(...children);
  return node;
}

// Turnout over time: votes per second from the totals the results stream sends, over the
// last five minutes this page has watched (the stream says totals, not history).
function rateCard() {
  const samples = [];
  const line = svg('polyline', { class: 'rate-line', points: '' });
  const area = svg('polygon', { class: 'rate-area', points: '' });
  const chart = svg('svg', { id: 'rate-chart', viewBox: `0 0 ${RATE_WIDTH} ${RATE_HEIGHT}`,
    preserveAspectRatio: 'none', role: 'img', 'aria-label': 'votes per second over time' }, area, line);
  const now = el('b', { id: 'votes-rate' }, '—');
  const peak = el('span', { id: 'votes-rate-peak' }, '—');
  const card = el('div', { class: 'card', id: 'rate' },
    el('h2', {}, 'Turnout over time'),
    el('p', { class: 'muted' }, 'votes/s now: ', now, ' · peak ', peak, ` · last ${RATE_WINDOW_S / 60} minutes watched`),
    chart);
  let latest = null;
  function sample() {
    if (latest === null) return;
    const at = Date.now() / 1000;
    const last = samples[samples.length - 1];
    const perSecond = last ? Math.max(0, (latest - last.total) / (at - last.at)) : 0;
    samples.push({ at, total: latest, perSecond });
    while (samples.length && samples[0].at < at - RATE_WINDOW_S) samples.shift();
    const rates = samples.slice(1).map((s) => s.perSecond);
    const top = Math.max(1, ...rates);
    const x = (s) => (RATE_WIDTH * (s.at - (at - RATE_WINDOW_S))) / RATE_WINDOW_S;
    const y = (s) => RATE_HEIGHT - (RATE_HEIGHT - 4) * (s.perSecond / top);
    const points = samples.slice(1).map((s) => `${x(s).toFixed(1)},${y(s).toFixed(1)}`);
    line.setAttribute('points', points.join(' '));
    if (points.length) {
      const first = samples[1];
      area.setAttribute('points', `${x(first).toFixed(1)},${RATE_HEIGHT} ${points.join(' ')} ${RATE_WIDTH},${RATE_HEIGHT}`);
    }
    now.textContent = rates.length ? rates[rates.length - 1].toFixed(1) : '—';
    peak.textContent = rates.length ? Math.max(...rates).toFixed(1) : '—';
  }
  // Results events come up to ten times a second, and none while a poll is quiet: the
  // curve takes the latest total once a second, so quiet seconds show as zero.
  function add(total) {
    const first = latest === null;
    latest = total;
    if (first) sample();
  }
  const timer = setInterval(sample, 1000);
  cleanups.push(() => clearInterval(timer));
  return { card, add };
}

function turnoutCard(poll, breakdowns) {
  const select = el('select', { id: 'breakdown', class: 'compact' },
    breakdowns.map((b) => el('option', { value: b }, humanize(b))));
  const table = el('table', { id: 'turnout' });
  const card = el('div', { class: 'card' }, el('h2', {}, 'Turnout by ', select), table);
  let pending = null;
  let last = 0;
  async function load() {
    pending = null;
    last = Date.now();
    const name = select.value;
    try {
      const body = await api('GET', `/v1/polls/${poll.poll_id}/results?breakdown=${encodeURIComponent(name)}`);
      const values = Object.entries((body.breakdown && body.breakdown[name]) || {})
        .map(([value, byOption]) => [value, Object.values(byOption).reduce((a, b) => a + b, 0), byOption])
        .sort((a, b) => b[1] - a[1]);
      const most = values.length ? values[0][1] : 1;
      const labels = Object.fromEntries(poll.options.map((o) => [o.option_id, o.text]));
      table.replaceChildren(el('thead', {}, el('tr', {}, el('th', {}, humanize(name)), el('th', {}, 'votes'), el('th', {}, 'leading'))),
        el('tbody', {}, values.length === 0 ? el('tr', {}, el('td', { colspan: 3, class: 'muted' }, 'no votes with this attribute yet')) : null,
          values.map(([value, total, byOption]) => {
            const leading = Object.entries(byOption).sort((a, b) => b[1] - a[1])[0];
            return el('tr', { 'data-value': value },
              el('td', {}, value),
              el('td', {}, el('div', { class: 'mini-track' }, el('div', { class: 'mini-fill', style: `width: ${(100 * total) / most}%` })), ` ${total}`),
              el('td', {}, leading ? labels[leading[0]] || leading[0] : '—'));
          })));
    } catch (error) {
      showError(table, error);
    }
  }
  // Coalesced: at most one read per BREAKDOWN_REFRESH_MS, however fast results arrive.
  function refresh() {
    if (pending) return;
    const wait = Math.max(0, last + BREAKDOWN_REFRESH_MS - Date.now());
    pending = setTimeout(load, wait);
  }
  select.addEventListener('change', load);
  cleanups.push(() => pending && clearTimeout(pending));
  return { card, refresh };
}

// ---- the cluster panel ----------------------------------------------------------------

// `reachable` is known on the leader for every member, on a follower for itself and the
// leader; elsewhere the node cannot tell.
function reachability(member) {
  if (member.reachable === true) return 'up';
  if (member.reachable === false) return 'down';
  return 'unknown';
}

function reachabilityText(member) {
  return { up: 'reachable', down: 'unreachable', unknown: 'not known from this node' }[reachability(member)];
}

function heardText(member) {
  const ms = member.last_heard_ms;
  // A follower hears from the leader only: another follower's silence says nothing.
  if (member.reachable === null || member.reachable === undefined) return '—';
  if (ms === null || ms === undefined) return 'never';
  if (ms === 0) return 'self';
  // Short, so that the panel's table fits its column; the red dot and colour say "down".
  return ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60000)} min`;
}

let previousStatus = null;

async function refreshCluster() {
  const summary = document.getElementById('cluster-summary');
  const body = document.querySelector('#members tbody');
  try {
    const status = await api('GET', '/v1/cluster/status');
    const now = Date.now();
    let rate = '—';
    if (previousStatus && previousStatus.node_id === status.node_id) {
      const seconds = (now - previousStatus.at) / 1000;
      rate = Math.max(0, (status.votes_recorded - previousStatus.votes) / seconds).toFixed(1);
    }
    previousStatus = { at: now, votes: status.votes_recorded, node_id: status.node_id };
    summary.replaceChildren(...[
      el('div', {}, 'this node: ', el('b', { id: 'this-node' }, status.node_id), ` (${status.role})`),
      el('div', {}, 'leader: ', el('b', { id: 'leader' }, status.leader_id ?? 'none'), ` · term ${status.term}`),
      el('div', {}, `applied ${status.applied_index} / committed ${status.commit_index ?? '—'}`),
      status.role === 'leader' ? null
        : el('div', { class: 'muted' }, `followers' lag is known to the leader (node ${status.leader_id ?? '?'}); open its page to see it`),
      el('div', {}, 'votes/s: ', el('b', { id: 'votes-per-second' }, rate), ` · ${status.votes_recorded} recorded`),
    ].filter(Boolean));
    body.replaceChildren(...status.members.map((m) => el('tr', { 'data-node-id': m.node_id },
      el('td', {}, el('span', { class: `dot ${reachability(m)}`, title: reachabilityText(m) }), ` ${m.node_id}`,
        el('div', { class: 'addr muted' }, m.addr)),
      el('td', {}, m.role),
      el('td', {}, m.matched_index ?? '—'),
      el('td', {}, m.lag ?? '—'),
      el('td', { class: `heard ${reachability(m)}` }, heardText(m)))));
  } catch (error) {
    const text = error.status === 401 ? 'Sign in to see the cluster.' : error.message;
    summary.replaceChildren(el('span', { class: error.status === 401 ? 'muted' : 'error' }, text));
    body.replaceChildren();
  }
}

refreshCluster();
setInterval(refreshCluster, STATUS_INTERVAL_MS);
route();
