// The audit timeline page of b24-audit-proxy (served from /ui/ by the admin listener).
//
// Plain modern JavaScript, no framework and no build step: the file is compiled into the
// binary as is. Everything shown comes from the admin API (/v1/*) with the bearer token the
// user enters once (kept in sessionStorage). Every piece of data reaches the DOM as text
// (textContent / text nodes), never as markup: workplace titles are user-controlled.
//
// Routes live in the URL hash so links, reloads and the back button work:
//   #/                       the timeline (filters as ?solution_id=&caller=&outcome=&since=&until=)
//   #/workplace/ID           one workplace's history of bound smart processes
//   #/event/ID               everything about one event
'use strict';

(() => {
  const TOKEN_KEY = 'b24-audit-proxy.admin-token';
  const PAGE = 50;
  const API = '../v1/'; // relative, so the page also works behind a path-prefixing proxy
  const FILTER_KEYS = ['solution_id', 'caller', 'outcome', 'since', 'until'];

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers: strings always become text nodes --------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = String(v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    append(node, children);
    return node;
  }

  function append(parent, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    append(node, children);
    return node;
  }

  // ---- The token ----------------------------------------------------------------------------

  // sessionStorage can throw (storage disabled); the page then asks again after a reload.
  const token = {
    get() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; } },
    set(t) { try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* kept for this load only */ memo = t; } },
    clear() { memo = ''; try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing kept */ } },
  };
  let memo = '';
  const currentToken = () => token.get() || memo;

  // ---- The API ------------------------------------------------------------------------------

  class Unauthorized extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const headers = { Accept: 'application/json' };
    const t = currentToken();
    if (t) headers.Authorization = 'Bearer ' + t;
    let resp;
    try {
      resp = await fetch(API + path, { headers, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new ApiError(0, 'The admin listener did not answer: ' + e.message);
    }
    if (resp.status === 401) throw new Unauthorized('a valid token is required');
    let body = null;
    try { body = await resp.json(); } catch { body = null; }
    if (!resp.ok) {
      const why = body && (body.error_description || body.error);
      throw new ApiError(resp.status, `${resp.status} ${why || resp.statusText}`);
    }
    return body;
  }

  // An approval is authorised by the approver's own token, typed for this one request: it is
  // sent as a bearer header and kept nowhere (no cookie, no storage).
  async function approveEvent(id, approverToken, reason, force) {
    let resp;
    try {
      resp = await fetch(API + `events/${encodeURIComponent(id)}/approve`, {
        method: 'POST',
        headers: { Accept: 'application/json', 'Content-Type': 'application/json', Authorization: 'Bearer ' + approverToken },
        body: JSON.stringify({ reason, force }),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      return { ok: false, message: 'The admin listener did not answer: ' + e.message };
    }
    let body = null;
    try { body = await resp.json(); } catch { body = null; }
    if (resp.ok && body && typeof body.event_id === 'string') return { ok: true, eventId: body.event_id };
    const why = body && (body.error_description || body.error);
    return { ok: false, message: `${resp.status} ${why || resp.statusText}` };
  }

  // ---- Formatting ---------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, '0');

  function localParts(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return [String(iso || '–'), ''];
    return [
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`,
    ];
  }

  function timeNode(iso, inline) {
    const [day, clock] = localParts(iso);
    const t = el('time', { datetime: iso, title: `UTC ${iso}` });
    if (inline) t.textContent = `${day} ${clock}`;
    else append(t, [day, el('span', { class: 'sub', text: clock })]);
    return t;
  }

  // datetime-local inputs hold local time without a zone; the API wants UTC RFC 3339 in the
  // trail's own format (toISOString gives exactly that: milliseconds and "Z").
  function localInputToIso(v) {
    if (!v) return '';
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }
  function isoToLocalInput(iso) {
    const d = new Date(iso);
    if (!iso || Number.isNaN(d.getTime())) return '';
    return `${localParts(iso)[0]}T${localParts(iso)[1]}`;
  }

  // typeIds the way the proxy normalises them: positive integers, deduplicated, sorted.
  function typeIds(v) {
    if (!Array.isArray(v)) return [];
    const ids = v.map((x) => Math.trunc(Number(x))).filter((x) => Number.isFinite(x) && x > 0);
    return [...new Set(ids)].sort((a, b) => a - b);
  }

  const isState = (s) => s !== null && typeof s === 'object' && !Array.isArray(s);
  const shortMethod = (m) => String(m || '').replace(/^crm\.automatedsolution\./, '');
  const shortHash = (h) => (h ? `${String(h).slice(0, 12)}…` : '–');

  function titleOf(e) {
    if (isState(e.after) && typeof e.after.title === 'string') return e.after.title;
    if (isState(e.before) && typeof e.before.title === 'string') return e.before.title;
    const f = requestedFields(e);
    return typeof f.title === 'string' ? f.title : '';
  }

  function requestedFields(e) {
    const p = e.request && e.request.params;
    return (p && isState(p.fields) && p.fields) || {};
  }

  // What an event changed — or, when it was not applied, what it asked for.
  function changeOf(e) {
    const before = isState(e.before) ? e.before : null;
    const after = isState(e.after) ? e.after : null;
    const applied = after !== null && e.outcome === 'applied';
    const fields = requestedFields(e);
    const target = after !== null && e.outcome !== 'denied' ? after : {
      title: typeof fields.title === 'string' ? fields.title : (before && before.title),
      typeIds: 'typeIds' in fields ? fields.typeIds : (before && before.typeIds),
    };
    const b = typeIds(before && before.typeIds);
    const a = typeIds(target && target.typeIds);
    const titleBefore = before ? before.title : undefined;
    const titleAfter = target ? target.title : undefined;
    return {
      applied,
      proposed: !applied,
      titleBefore,
      titleAfter,
      titleChanged: typeof titleAfter === 'string' && titleAfter !== titleBefore,
      added: a.filter((t) => !b.includes(t)),
      removed: b.filter((t) => !a.includes(t)),
    };
  }

  function chips(ids, cls, label) {
    return el('ul', { class: 'chips', 'aria-label': label },
      ids.map((t) => el('li', { class: `chip ${cls || ''}`.trim(), text: sign(cls) + t })));
  }

  function sign(cls) {
    if (!cls) return '';
    if (cls.startsWith('added')) return '+';
    return cls.startsWith('removed') ? '−' : '';
  }

  function badge(value, label) {
    const v = value === null || value === undefined ? 'pending' : String(value);
    return el('span', { class: `badge ${v.replace(/[^a-z_]/g, '')}`, text: label || v.replace(/_/g, ' ') });
  }

  // A rule name like deny_empty_type_ids may wrap after its underscores, not mid-word.
  function breakable(name) {
    return String(name).split('_').flatMap((part, i) => (i ? ['_', el('wbr'), part] : [part]));
  }

  function callerText(c) {
    if (!isState(c)) return ['–', ''];
    const user = c.user_id ? `user ${c.user_id}` : 'anonymous';
    // A brokered call names its integration (the proxy key) first: that is who it was.
    const who = typeof c.integration === 'string' ? `${c.integration} (${user})` : user;
    const how = [c.auth, c.fingerprint ? `fp ${c.fingerprint}` : ''].filter(Boolean).join(' · ');
    return [who, how];
  }

  function changeNode(e, compact) {
    const ch = changeOf(e);
    const nodes = [];
    const method = shortMethod(e.method);
    if (ch.titleChanged) {
      const hasBefore = typeof ch.titleBefore === 'string';
      const full = `${hasBefore ? `“${ch.titleBefore}” → ` : ''}“${ch.titleAfter}”`;
      // In the table the whole line is clamped (the full text is its tooltip and in the
      // event view), so a 2,000-character title costs three lines, not the layout.
      nodes.push(el('p', { class: `change-line title-change${compact ? ' clamp3' : ''}`, title: compact ? full : null },
        el('span', { class: 'method', text: method }),
        ch.proposed ? 'asked to retitle ' : 'title ',
        hasBefore ? [el('span', { class: 'old', text: `“${ch.titleBefore}”` }), el('span', { class: 'arrow', 'aria-label': 'to', text: '→' })] : null,
        el('span', { class: 'new', text: `“${ch.titleAfter}”` })));
    }
    if (ch.added.length || ch.removed.length) {
      const verb = ch.proposed ? 'asked to ' : '';
      const extra = ch.proposed ? ' proposed' : '';
      const label = ch.proposed ? 'to be ' : '';
      if (ch.added.length) {
        nodes.push(el('div', { class: 'change-line' },
          ch.titleChanged ? null : el('span', { class: 'method', text: method }),
          `${verb}bind`, chips(ch.added, `added${extra}`, `smart processes ${label}bound`)));
      }
      if (ch.removed.length) {
        nodes.push(el('div', { class: 'change-line' },
          ch.titleChanged || ch.added.length ? null : el('span', { class: 'method', text: method }),
          `${verb}unbind`, chips(ch.removed, `removed${extra}`, `smart processes ${label}unbound`)));
      }
    }
    if (!nodes.length) {
      const what = method === 'delete' ? 'delete the workplace' : 'no change to title or smart processes';
      nodes.push(el('p', { class: 'change-line' }, el('span', { class: 'method', text: method }), el('span', { class: 'muted', text: what })));
    }
    return nodes;
  }

  // ---- Views --------------------------------------------------------------------------------

  const VIEWS = ['login-view', 'timeline-view', 'workplace-view', 'event-view'];

  function showView(id, title) {
    for (const v of VIEWS) $(v).hidden = v !== id;
    document.title = `${title} · b24-audit-proxy`;
  }

  function showError(msg) {
    const box = $('error');
    box.textContent = msg;
    box.hidden = false;
  }
  function clearError() { $('error').hidden = true; $('error').textContent = ''; }

  // Nothing read with a token stays on screen once the token is gone or refused.
  function clearData() {
    $('events-body').replaceChildren();
    $('timeline-summary').textContent = '';
    $('load-more').hidden = true;
    $('workplace-chart').replaceChildren();
    $('workplace-steps').replaceChildren();
    $('workplace-current').replaceChildren();
    $('event-body').replaceChildren();
    $('chain-banner').hidden = true;
    chainLoaded = false;
  }

  function showLogin() {
    const refused = Boolean(currentToken());
    token.clear();
    clearData();
    $('forget-token').hidden = true;
    showView('login-view', 'Token required');
    $('login-error').textContent = refused ? 'That token was not accepted. Try again.' : '';
    $('token-input').value = '';
    $('token-input').focus();
  }

  // ---- Chain banner -------------------------------------------------------------------------

  let chainLoaded = false;

  async function refreshChain(verify) {
    const head = await api('chain/head');
    $('chain-banner').hidden = false;
    $('chain-entries').textContent = String(head.entries);
    $('chain-head').textContent = head.hash || '–';
    $('chain-head').title = head.seq ? `entry ${head.seq}` : '';
    if (!verify) return;
    const verdict = $('chain-verdict');
    verdict.textContent = 'verifying…';
    const v = await api('chain/verify');
    const banner = $('chain-banner');
    banner.classList.toggle('ok', Boolean(v.ok));
    banner.classList.toggle('bad', !v.ok);
    verdict.className = v.ok ? 'verdict-ok' : 'verdict-bad';
    verdict.textContent = v.ok
      ? `verifies: ${v.entries} entries${v.pruned_through ? `, entries up to ${v.pruned_through} pruned` : ''}`
      : `FAILED: ${v.error}`;
    $('chain-checked').textContent = localParts(new Date().toISOString()).join(' ');
    chainLoaded = true;
  }

  // ---- Timeline -----------------------------------------------------------------------------

  let nextCursor = null;
  let listQuery = null;

  function fillFilters(params) {
    $('f-workplace').value = params.get('solution_id') || '';
    $('f-caller').value = params.get('caller') || '';
    $('f-outcome').value = params.get('outcome') || '';
    $('f-since').value = isoToLocalInput(params.get('since'));
    $('f-until').value = isoToLocalInput(params.get('until'));
  }

  function filtersFromForm() {
    const q = new URLSearchParams();
    const put = (k, v) => { if (v) q.set(k, v); };
    put('solution_id', $('f-workplace').value.trim());
    put('caller', $('f-caller').value.trim());
    put('outcome', $('f-outcome').value);
    put('since', localInputToIso($('f-since').value));
    put('until', localInputToIso($('f-until').value));
    return q;
  }

  function eventRow(e) {
    const [who, how] = callerText(e.caller);
    const title = titleOf(e);
    const wp = e.solution_id === null || e.solution_id === undefined ? null : String(e.solution_id);
    const tr = el('tr', { tabindex: '0', 'data-id': e.id, 'data-outcome': e.outcome || 'pending', 'data-workplace': wp || '' },
      el('td', {}, timeNode(e.time)),
      el('td', {}, el('span', { text: who, title: isState(e.caller) && typeof e.caller.integration === 'string' ? 'integration (proxy key) and portal user' : null }),
        el('span', { class: 'sub', text: [isState(e.caller) ? e.caller.auth : '', typeof e.client_addr === 'string' ? e.client_addr : ''].filter(Boolean).join(' · ') }),
        isState(e.caller) && e.caller.fingerprint ? el('span', { class: 'sub mono fp', title: 'credential fingerprint', text: e.caller.fingerprint }) : null),
      el('td', {},
        wp ? el('a', { href: `#/workplace/${encodeURIComponent(wp)}`, text: `#${wp}`, title: `History of workplace ${wp}` }) : el('span', { class: 'muted', text: 'new workplace' }),
        title ? el('span', { class: 'sub clamp', title, text: title }) : null),
      el('td', {}, changeNode(e, true)),
      el('td', {}, badge(e.decision), e.rule ? el('span', { class: 'sub' }, breakable(e.rule)) : null),
      el('td', {}, badge(e.outcome, e.outcome ? null : 'in flight'),
        e.portal_status || e.portal_error ? el('span', { class: 'sub', text: [e.portal_status, e.portal_error].filter(Boolean).join(' ') }) : null));
    return tr;
  }

  function rowsOf() { return [...$('events-body').querySelectorAll('tr[data-id]')]; }

  async function showTimeline(params, gen) {
    fillFilters(params);
    const q = new URLSearchParams();
    for (const k of FILTER_KEYS) if (params.get(k)) q.set(k, params.get(k));
    q.set('order', 'desc');
    q.set('limit', String(PAGE));
    const data = await api(`events?${q}`);
    if (gen !== generation) return;
    listQuery = q;
    nextCursor = data.next_cursor;
    const body = $('events-body');
    body.replaceChildren(...data.events.map(eventRow));
    if (!data.events.length) {
      body.append(el('tr', { class: 'empty' }, el('td', { colspan: '6', text: 'No audited changes match these filters.' })));
    }
    $('load-more').hidden = nextCursor === null || nextCursor === undefined;
    const filtered = FILTER_KEYS.some((k) => params.get(k));
    $('timeline-summary').textContent = `${data.events.length}${nextCursor ? '+' : ''} event${data.events.length === 1 ? '' : 's'}${filtered ? ' matching the filters' : ''}`;
    showView('timeline-view', 'Audit timeline');
  }

  async function loadMore() {
    if (nextCursor === null || !listQuery) return;
    const q = new URLSearchParams(listQuery);
    q.set('cursor', String(nextCursor));
    const gen = generation;
    try {
      const data = await api(`events?${q}`);
      if (gen !== generation) return;
      $('events-body').append(...data.events.map(eventRow));
      nextCursor = data.next_cursor;
      $('load-more').hidden = nextCursor === null || nextCursor === undefined;
      $('timeline-summary').textContent = `${rowsOf().length}${nextCursor ? '+' : ''} events`;
    } catch (e) { failed(e, gen); }
  }

  // ---- Workplace ----------------------------------------------------------------------------

  async function allEventsOf(id, gen) {
    const events = [];
    let cursor = null;
    // Oldest first, whole pages; bounded so a huge trail cannot hang the tab.
    for (let page = 0; page < 20; page += 1) {
      const q = new URLSearchParams({ solution_id: id, limit: '1000' });
      if (cursor !== null) q.set('cursor', String(cursor));
      const data = await api(`events?${q}`);
      if (gen !== generation) return null;
      events.push(...data.events);
      if (data.next_cursor === null || data.next_cursor === undefined) return { events, complete: true };
      cursor = data.next_cursor;
    }
    return { events, complete: false };
  }

  // The bound smart processes after each event: the after-state when the portal answered,
  // otherwise unchanged from before.
  function stepsOf(events) {
    const steps = [];
    let prev = null;
    for (const e of events) {
      const after = isState(e.after) && e.outcome !== 'denied' ? e.after : null;
      const before = isState(e.before) ? e.before : null;
      const source = after || before;
      const ids = source ? typeIds(source.typeIds) : (prev ? prev.ids : []);
      // What this event itself did: its own before-state, not the previous step (the two
      // differ when something changed the workplace outside the proxy).
      const base = before ? typeIds(before.typeIds) : (prev ? prev.ids : []);
      const title = source && typeof source.title === 'string' ? source.title : (prev ? prev.title : '');
      const step = {
        event: e,
        ids,
        title,
        renamedFrom: before && typeof before.title === 'string' && before.title !== title ? before.title : null,
        added: ids.filter((t) => !base.includes(t)),
        removed: base.filter((t) => !ids.includes(t)),
        deleted: e.method === 'crm.automatedsolution.delete' && e.outcome === 'applied',
      };
      if (step.deleted) step.ids = [];
      steps.push(step);
      prev = step;
    }
    return steps;
  }

  function chart(steps) {
    const box = $('workplace-chart');
    const width = Math.max(320, box.clientWidth || 800);
    const height = 140;
    const left = 36, right = 12, top = 12, bottom = 22;
    const max = Math.max(1, ...steps.map((s) => s.ids.length));
    const x = (i) => left + (steps.length === 1 ? (width - left - right) / 2 : (i * (width - left - right)) / (steps.length - 1));
    const y = (n) => top + (height - top - bottom) * (1 - n / max);
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Number of bound smart processes over ${steps.length} events, from ${steps[0].ids.length} to ${steps[steps.length - 1].ids.length}` });
    root.append(svg('line', { class: 'grid', x1: left, x2: width - right, y1: y(0), y2: y(0) }));
    root.append(svg('line', { class: 'grid', x1: left, x2: width - right, y1: y(max), y2: y(max) }));
    root.append(svg('text', { x: 4, y: y(0) + 4, text: '0' }));
    root.append(svg('text', { x: 4, y: y(max) + 4, text: String(max) }));
    let d = '';
    steps.forEach((s, i) => {
      d += i === 0 ? `M ${x(0)} ${y(s.ids.length)}` : ` H ${x(i)} V ${y(s.ids.length)}`;
    });
    root.append(svg('path', { class: 'line', d }));
    steps.forEach((s, i) => {
      // Dots link to their events for the mouse; keyboard users have the list below.
      const a = svg('a', { href: `#/event/${encodeURIComponent(s.event.id)}`, tabindex: '-1' },
        svg('circle', { class: `dot ${s.event.outcome === 'applied' ? '' : 'denied'}`, cx: x(i), cy: y(s.ids.length), r: 5 },
          svg('title', { text: `${localParts(s.event.time).join(' ')}: ${s.ids.length} bound (${s.event.outcome || 'in flight'})` })));
      root.append(a);
    });
    const [first, last] = axisLabels(steps);
    root.append(svg('text', { x: left, y: height - 6, text: first }));
    root.append(svg('text', { x: width - right, y: height - 6, 'text-anchor': 'end', text: last }));
    box.replaceChildren(root);
  }

  // Axis labels: dates, or times when every step is on one day.
  function axisLabels(steps) {
    const a = localParts(steps[0].event.time);
    const b = localParts(steps[steps.length - 1].event.time);
    return a[0] === b[0] ? [`${a[0]} ${a[1]}`, b[1]] : [a[0], b[0]];
  }

  async function showWorkplace(id, gen) {
    const got = await allEventsOf(id, gen);
    if (!got || gen !== generation) return;
    showView('workplace-view', `Workplace ${id}`);
    $('workplace-title').textContent = `Workplace #${id}`;
    const { events, complete } = got;
    const current = $('workplace-current');
    const list = $('workplace-steps');
    if (!events.length) {
      current.textContent = 'No audited changes to this workplace.';
      $('workplace-chart').replaceChildren();
      list.replaceChildren();
      return;
    }
    const steps = stepsOf(events);
    const now = steps[steps.length - 1];
    current.replaceChildren(
      el('strong', { text: now.title || '(untitled)' }), ' — ',
      `${now.ids.length} smart process${now.ids.length === 1 ? '' : 'es'} bound after the latest recorded change`,
      complete ? '' : ' (only the first 20 000 events are shown)',
      now.ids.length ? chips(now.ids, '', 'bound smart processes now') : null);
    chart(steps);
    list.replaceChildren(...steps.map((s, i) => [s, i + 1]).reverse().map(([s, n]) => {
      const [who] = callerText(s.event.caller);
      return el('li', { 'data-id': s.event.id, value: String(n) },
        el('div', { class: 'step-head' },
          el('a', { href: `#/event/${encodeURIComponent(s.event.id)}` }, timeNode(s.event.time, true)),
          el('span', { class: 'count', text: s.deleted ? 'workplace deleted' : `${s.ids.length} bound` }),
          badge(s.event.outcome, s.event.outcome ? null : 'in flight'),
          el('span', { class: 'muted', text: `${shortMethod(s.event.method)} by ${who}` })),
        s.title ? el('div', { class: 'clamp', title: s.title, text: s.title }) : null,
        s.renamedFrom !== null ? el('div', { class: 'muted clamp', title: s.renamedFrom, text: `renamed from “${s.renamedFrom}”` }) : null,
        s.added.length ? el('div', { class: 'change-line' }, 'bound ', chips(s.added, 'added', 'smart processes bound')) : null,
        s.removed.length ? el('div', { class: 'change-line' }, 'unbound ', chips(s.removed, 'removed', 'smart processes unbound')) : null,
        !s.added.length && !s.removed.length ? el('div', { class: 'muted', text: 'bindings unchanged' }) : null,
        // A refused or failed call changed nothing, but what it asked for is part of the story.
        s.event.outcome !== 'applied' && s.event.outcome ? el('div', { class: 'muted asked' }, changeNode(s.event, true)) : null,
        s.ids.length ? el('details', {}, el('summary', { text: `all ${s.ids.length} bound after this event` }), chips(s.ids, '', 'bound after this event')) : null);
    }));
  }

  // ---- Event --------------------------------------------------------------------------------

  function kv(pairs) {
    return el('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
  }

  function stateCard(title, s) {
    if (!isState(s)) return el('div', { class: 'card' }, el('h3', { text: title }), el('p', { class: 'muted', text: 'not recorded (no portal answer for this event)' }));
    const ids = typeIds(s.typeIds);
    return el('div', { class: 'card', 'data-state': title.toLowerCase() },
      el('h3', { text: title }),
      kv([
        ['id', String(s.id ?? '–')],
        ['title', el('span', { class: 'state-title', text: s.title ?? '–' })],
        ['smart processes', [`${ids.length} bound`, ids.length ? chips(ids, '', `${title}: bound smart processes`) : null]],
      ]));
  }

  // Indented JSON, with arrays of numbers (typeIds) kept on one line.
  function pretty(v) {
    const textOf = JSON.stringify(v === undefined ? null : v, null, 2)
      .replace(/\[\s*(-?\d+(?:\.\d+)?(?:,\s*-?\d+(?:\.\d+)?)*)\s*\]/g, (_, nums) => `[${nums.split(/,\s*/).join(', ')}]`);
    return el('pre', { text: textOf });
  }

  function block(title, ...children) {
    return el('section', { class: 'block' }, el('h3', { text: title }), children);
  }

  async function showEvent(id, gen) {
    const d = await api(`events/${encodeURIComponent(id)}`);
    if (gen !== generation) return;
    const e = d.event;
    // Whether the chain verifies, including this event's last entry (`--head` = its hash).
    const v = await api(`chain/verify?head=${encodeURIComponent(e.hash)}`);
    if (gen !== generation) return;
    const [who, how] = callerText(e.caller);
    const revertible = e.outcome && e.outcome !== 'denied' && e.outcome !== 'failed';
    const copy = el('button', { type: 'button', class: 'secondary', text: 'Copy' });
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(d.revert_command); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy'; }
    });
    const wp = e.solution_id === null || e.solution_id === undefined ? null : String(e.solution_id);
    const body = el('div', {},
      el('div', { id: 'event-verify', class: `banner ${v.ok ? 'ok' : 'bad'}`, role: 'status' },
        el('span', { class: v.ok ? 'verdict-ok' : 'verdict-bad', text: v.ok ? 'Chain verifies' : 'Chain does NOT verify' }),
        el('span', { text: v.ok
          ? ` — every entry from the start${v.pruned_through ? ` (after the retention checkpoint at ${v.pruned_through})` : ''} through entry ${v.head_seq} recomputes, and this event's last entry is in it.`
          : ` — ${v.error}` })),
      el('div', { class: 'grid2' },
        el('div', { class: 'card' }, el('h3', { text: 'Summary' }), kv([
          ['when', timeNode(e.time, true)],
          ['method', e.method],
          ['workplace', wp ? el('a', { href: `#/workplace/${encodeURIComponent(wp)}`, text: `#${wp} (history)` }) : '–'],
          ['caller', [who, how ? el('span', { class: 'sub', text: how }) : null]],
          ['client address', typeof e.client_addr === 'string' ? e.client_addr : '–'],
          ['decision', [badge(e.decision), e.rule ? ` ${e.rule}` : '']],
          ['outcome', badge(e.outcome, e.outcome ? null : 'in flight')],
          e.reverts ? ['reverts', el('a', { href: `#/event/${encodeURIComponent(e.reverts)}`, text: e.reverts })] : null,
        ])),
        el('div', { class: 'card' }, el('h3', { text: 'Portal answer' }), kv([
          ['HTTP status', e.portal_status === null || e.portal_status === undefined ? '–' : String(e.portal_status)],
          ['error code', e.portal_error ? String(e.portal_error) : 'none'],
          ['batch', isState(e.batch) ? `id ${e.batch.id ?? '–'}, key ${e.batch.key ?? '–'}` : 'single call (not a batch)'],
          ['hash', el('code', { class: 'hash', id: 'event-hash', text: e.hash })],
        ]))),
      block('Change', changeNode(e, false),
        d.diff && (d.diff.type_ids_added.length || d.diff.type_ids_removed.length)
          ? el('p', { class: 'muted', text: `Between the recorded before- and after-states: ${[
            d.diff.type_ids_added.length ? `${d.diff.type_ids_added.length} smart process(es) bound` : '',
            d.diff.type_ids_removed.length ? `${d.diff.type_ids_removed.length} unbound` : '',
          ].filter(Boolean).join(', ')}.` })
          : null),
      el('div', { class: 'grid2 block' }, stateCard('Before', e.before), stateCard('After', e.after)),
      block('Request',
        kv([['HTTP method', e.request && e.request.http_method ? String(e.request.http_method) : '–'], ['encoding', e.request && e.request.encoding ? String(e.request.encoding) : '–']]),
        el('details', { open: true }, el('summary', { text: 'parameters as evaluated (credentials removed)' }), pretty(e.request && e.request.params))),
      approvalBlock(e, d.approved_by),
      block('Revert',
        el('div', { class: 'command' }, el('code', { id: 'revert-command', text: d.revert_command }), copy),
        el('p', { class: 'muted', text: revertible
          ? 'Prints the call restoring the before-state; add --apply to send it through the audited path. Refused if the workplace changed since, unless --force.'
          : 'This event changed nothing (or has no outcome yet): revert will refuse it.' })),
      block('Chain entries',
        el('table', { class: 'entries' },
          el('colgroup', {}, el('col', { class: 'c-seq' }), el('col', { class: 'c-kind' }), el('col', { class: 'c-time' }), el('col')),
          el('thead', {}, el('tr', {}, ['seq', 'kind', 'time', 'hashes and payload'].map((h) => el('th', { scope: 'col', text: h })))),
          el('tbody', {}, d.entries.map((en) => el('tr', {},
            el('td', { text: String(en.seq) }),
            el('td', { text: en.kind }),
            el('td', {}, timeNode(en.time, true)),
            el('td', {},
              el('div', {}, 'hash ', el('code', { class: 'hash', text: en.hash })),
              el('div', { class: 'muted' }, 'prev ', el('code', { class: 'hash', text: en.prev_hash })),
              el('details', {}, el('summary', { text: 'payload' }), pretty(en.payload)))))))));
    $('event-body').replaceChildren(body);
    $('event-title').textContent = `Event ${e.id}`;
    $('event-back').setAttribute('href', backHash());
    showView('event-view', `Event ${e.id}`);
    $('event-title').focus();
  }

  // A change refused by a policy rule (not an unreadable call, not a key's own scope) that no
  // approval carried out yet: the approver may approve it here.
  function approvable(e, approvedBy) {
    return e.outcome === 'denied' && e.decision === 'deny' && typeof e.rule === 'string'
      && e.rule !== 'uninterpretable_request' && e.rule !== 'key_scope' && !isState(approvedBy);
  }

  function approvalBlock(e, approvedBy) {
    if (isState(e.approval)) {
      const a = e.approval;
      return block('Approval', el('p', { id: 'approval-of' }, 'Carries out the approval of ',
        el('a', { href: `#/event/${encodeURIComponent(String(a.approves))}`, text: String(a.approves) }),
        ` by ${String(a.approver)}${a.forced ? ' (forced: the workplace had changed)' : ''}: `,
        el('q', { text: String(a.reason) })));
    }
    if (isState(approvedBy)) {
      return block('Approval', el('p', { id: 'approved-by' }, `Approved by ${String(approvedBy.approver)}: `,
        el('q', { text: String(approvedBy.reason) }), ' — carried out as event ',
        el('a', { href: `#/event/${encodeURIComponent(String(approvedBy.event_id))}`, text: String(approvedBy.event_id) }),
        approvedBy.outcome ? ` (${String(approvedBy.outcome)})` : ''));
    }
    if (!approvable(e, approvedBy)) return null;
    const tokenInput = el('input', { id: 'approve-token', type: 'password', autocomplete: 'off', required: true });
    const reasonInput = el('input', { id: 'approve-reason', type: 'text', maxlength: '500', required: true });
    const forceInput = el('input', { id: 'approve-force', type: 'checkbox' });
    const result = el('p', { id: 'approve-result', role: 'status' });
    const form = el('form', { id: 'approve-form', class: 'approve' },
      el('label', { for: 'approve-token', text: 'Approver token' }), tokenInput,
      el('label', { for: 'approve-reason', text: 'Reason' }), reasonInput,
      el('label', {}, forceInput, ' carry it out even if the workplace changed since'),
      el('button', { type: 'submit', text: 'Approve' }),
      result);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = tokenInput.value.trim();
      tokenInput.value = '';
      const r = await approveEvent(e.id, t, reasonInput.value.trim(), forceInput.checked);
      result.className = r.ok ? 'ok' : 'bad';
      result.replaceChildren(r.ok
        ? el('span', {}, 'Approved: carried out as event ', el('a', { id: 'approved-event', href: `#/event/${encodeURIComponent(r.eventId)}`, text: r.eventId }))
        : el('span', { text: `Not approved: ${r.message}` }));
    });
    return block('Approval',
      el('p', { class: 'muted', text: `Refused by rule ${e.rule}. An approver may have the proxy carry the change out, as the original caller, through the audited path.` }),
      form);
  }

  // ---- Routing ------------------------------------------------------------------------------

  function parseRoute() {
    const h = location.hash || '#/';
    if (!h.startsWith('#/')) return { name: 'timeline', params: new URLSearchParams() };
    const [path, qs] = h.slice(1).split('?', 2);
    let parts;
    try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch { parts = []; }
    if (parts[0] === 'event' && parts[1]) return { name: 'event', id: parts[1] };
    if (parts[0] === 'workplace' && /^\d+$/.test(parts[1] || '')) return { name: 'workplace', id: parts[1] };
    return { name: 'timeline', params: new URLSearchParams(qs || '') };
  }

  let generation = 0;
  let listHash = '#/'; // the list the event view returns to
  let cameFromList = false; // the event view was reached from a list in this tab's history
  let routeName = null;
  let lastEvent = null; // focused again when going back to its list

  const backHash = () => listHash;

  function failed(e, gen) {
    if (gen !== generation) return;
    if (e instanceof Unauthorized) { showLogin(); return; }
    showError(e.message || String(e));
  }

  async function render() {
    const gen = ++generation;
    clearError();
    const route = parseRoute();
    routeName = route.name;
    try {
      if (route.name === 'event') {
        lastEvent = route.id;
        await showEvent(route.id, gen);
      } else {
        if (route.name === 'workplace') await showWorkplace(route.id, gen);
        else await showTimeline(route.params, gen);
        if (gen !== generation) return;
        listHash = location.hash || '#/';
        if (lastEvent) {
          const row = document.querySelector(`[data-id="${CSS.escape(lastEvent)}"]`);
          const target = row && (row.matches('tr') ? row : row.querySelector('a'));
          if (target) target.focus();
          lastEvent = null;
        }
      }
      if (gen !== generation) return;
      $('forget-token').hidden = !currentToken();
      await refreshChain(!chainLoaded);
    } catch (e) {
      failed(e, gen);
    }
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function openEvent(id) {
    go(`#/event/${encodeURIComponent(id)}`);
  }

  function closeEvent() {
    // Back through history when the event was opened from a list, so the back button and
    // Escape agree; a directly opened event goes to the timeline.
    if (cameFromList) { cameFromList = false; history.back(); } else go(listHash);
  }

  // ---- Wiring -------------------------------------------------------------------------------

  window.addEventListener('hashchange', () => {
    const next = parseRoute().name;
    if (next !== 'event') cameFromList = false;
    else if (routeName !== 'event') cameFromList = routeName !== null && routeName !== 'login';
    render();
  });

  $('events-body').addEventListener('click', (ev) => {
    if (ev.target.closest('a, button, summary')) return;
    const row = ev.target.closest('tr[data-id]');
    if (row) openEvent(row.dataset.id);
  });

  $('events-body').addEventListener('keydown', (ev) => {
    const row = ev.target.closest('tr[data-id]');
    if (!row || ev.target !== row) return;
    const rows = rowsOf();
    const i = rows.indexOf(row);
    const focus = (j) => { if (rows[j]) { ev.preventDefault(); rows[j].focus(); } };
    switch (ev.key) {
      case 'Enter': case ' ': ev.preventDefault(); openEvent(row.dataset.id); break;
      case 'ArrowDown': focus(i + 1); break;
      case 'ArrowUp': focus(i - 1); break;
      case 'Home': focus(0); break;
      case 'End': focus(rows.length - 1); break;
      default: break;
    }
  });

  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape' || $('event-view').hidden) return;
    ev.preventDefault();
    closeEvent();
  });

  $('event-back').addEventListener('click', (ev) => { ev.preventDefault(); closeEvent(); });

  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = filtersFromForm().toString();
    go(q ? `#/?${q}` : '#/');
  });
  $('f-reset').addEventListener('click', () => { $('filters').reset(); go('#/'); });
  $('load-more').addEventListener('click', loadMore);

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token-input').value.trim();
    if (!t) return;
    token.set(t);
    memo = t;
    $('token-input').value = '';
    $('login-error').textContent = '';
    render();
  });

  $('forget-token').addEventListener('click', () => {
    token.clear();
    clearData();
    render();
  });

  $('chain-verify').addEventListener('click', async () => {
    const gen = generation;
    try { await refreshChain(true); } catch (e) { failed(e, gen); }
  });

  render();
})();
