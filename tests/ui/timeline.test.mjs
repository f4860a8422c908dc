// The audit timeline page (/ui/ on the admin listener) in headless Chromium, driven by
// playwright-core. Run by tests/ui_browser.rs, which starts the proxy, creates the events
// through it and passes everything in the environment:
//
//   ADMIN_URL     http://127.0.0.1:PORT of the admin listener
//   ADMIN_TOKEN   the [admin] token
//   UI_EVENTS     JSON: {"order": [ids oldest first], "<name>": id, ...}, plus "big_id"
//   CHROMIUM      the browser binary (Debian's /usr/bin/chromium)
//   UI_OUTPUT     where a failure screenshot goes (target/ui-test-output)
//   UI_SCREENSHOT when "1", also writes UI_SCREENSHOT_PATH (docs/ui-timeline.png), 1280×800
//   UI_MODE       "open": the proxy has no admin token (a short tour); otherwise the full one
//
// Only Playwright's own waits are used (waitFor, waitForFunction), never fixed sleeps.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const env = process.env;
const ADMIN = env.ADMIN_URL;
const TOKEN = env.ADMIN_TOKEN;
const EV = JSON.parse(env.UI_EVENTS || '{}');
const OUT = env.UI_OUTPUT || 'target/ui-test-output';
const started = Date.now();

// A hard stop well inside the Rust test's own limit, whatever hangs.
const deadline = setTimeout(() => {
  console.error(`FAIL: the browser test did not finish within 45 s (step: ${step})`);
  process.exit(3);
}, 45_000);

let step = 'launch';
let page;
const passed = [];
const admin = new URL(ADMIN);
const offsite = [];

function log(msg) { console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`); }

async function check(name, fn) {
  step = name;
  await fn();
  passed.push(name);
  log(`ok - ${name}`);
}

// Resolves when `fn(arg)` is truthy in the page; fails naming what was awaited.
async function until(what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: 5_000 });
  } catch (e) {
    throw new Error(`timed out waiting for: ${what}\n${e.message.split('\n')[0]}`);
  }
}

const rowIds = () => page.$$eval('#events-body tr[data-id]', (rows) => rows.map((r) => r.dataset.id));
const noHorizontalOverflow = () => page.evaluate(() => ({
  ok: document.documentElement.scrollWidth <= window.innerWidth,
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
}));
async function assertNoOverflow(where) {
  const o = await noHorizontalOverflow();
  assert.ok(o.ok, `${where}: the page scrolls sideways (scrollWidth ${o.scrollWidth} > innerWidth ${o.innerWidth})`);
}
const text = (sel) => page.locator(sel).innerText();

async function apiGet(p) {
  const r = await fetch(new URL(p, ADMIN), { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 200, `GET ${p}`);
  return r.json();
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'b24-ui-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  timeout: 20_000,
  // Playwright adds --headless and --user-data-dir itself. Without the background-networking
  // flags Chromium phones home at start, which this machine's closed network refuses; the
  // resolver rule makes sure no name outside loopback is looked up at all.
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ],
});
let failed = false;
try {
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(5_000);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/401 \(Unauthorized\)/.test(m.text())) consoleErrors.push(m.text()); });
  // Nothing but the admin listener: no CDN, no fonts, nothing external (works offline).
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.host === admin.host) return route.continue();
    offsite.push(u.href);
    return route.abort();
  });
  if (env.UI_MODE === 'open') await withoutToken();
  else await withToken();

  await check('nothing outside the admin listener was requested, and no script error', async () => {
    assert.deepEqual(offsite, []);
    assert.deepEqual(consoleErrors, []);
  });
} catch (e) {
  failed = true;
  console.error(`FAIL at step "${step}": ${e.stack || e}`);
  try {
    fs.mkdirSync(OUT, { recursive: true });
    const file = path.join(OUT, `failure-${step.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
    await page.screenshot({ path: file, fullPage: true });
    console.error(`screenshot of the failure: ${path.resolve(file)}`);
  } catch (shotError) {
    console.error(`(no screenshot: ${shotError.message})`);
  }
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
  clearTimeout(deadline);
}
console.log(`${passed.length} passed, ${failed ? 1 : 0} failed`);
process.exit(failed ? 1 : 0);

// A proxy without [admin] token_file: the page shows the trail straight away.
async function withoutToken() {
  await check('without a configured token the page needs none', async () => {
    await page.goto(`${ADMIN}/ui/`);
    await until('the events listed', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
    assert.deepEqual(await rowIds(), [...EV.order].reverse());
    assert.equal(await page.locator('#login-view').isVisible(), false);
    assert.equal(await page.locator('#forget-token').isVisible(), false, 'no token to forget');
    await until('a verification verdict', () => /verifies/.test(document.getElementById('chain-verdict').textContent));
  });
}

// The full tour, behind the admin token.
async function withToken() {
  const api401 = [];
  page.on('response', (r) => { if (r.url().includes('/v1/') && r.status() === 401) api401.push(r.url()); });

  await check('the page loads and asks for the token before showing any data', async () => {
    const resp = await page.goto(`${ADMIN}/ui`);
    assert.equal(resp.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/ui/', '/ui is sent to /ui/');
    const csp = resp.headers()['content-security-policy'] || '';
    assert.match(csp, /default-src 'self'/);
    await page.locator('#login-view').waitFor({ state: 'visible' });
    assert.ok(api401.length >= 1, 'the page asked the API and was refused');
    assert.equal(await page.locator('#timeline-view').isVisible(), false);
    assert.equal((await rowIds()).length, 0, 'no event is in the page');
    assert.equal(await page.locator('#chain-banner').isVisible(), false, 'no chain data either');
    assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.id), 'token-input', 'the token field has focus');
  });

  await check('a wrong token shows the prompt again', async () => {
    await page.getByLabel('Admin token', { exact: true }).fill('not-the-token');
    await page.getByRole('button', { name: 'Open the timeline' }).click();
    await until('the refusal message', () => /not accepted/.test(document.getElementById('login-error').textContent));
    assert.ok(await page.locator('#login-view').isVisible());
    assert.equal((await rowIds()).length, 0);
  });

  await check('with the token, the events created through the proxy are listed newest first', async () => {
    await page.getByLabel('Admin token', { exact: true }).fill(TOKEN);
    await page.keyboard.press('Enter');
    await until('all events listed', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
    assert.deepEqual(await rowIds(), [...EV.order].reverse());
    assert.equal(await page.evaluate(() => sessionStorage.getItem('b24-audit-proxy.admin-token')), TOKEN, 'kept for the tab');
    assert.ok(await page.locator('#forget-token').isVisible());
    // A row says when, who, which workplace, decision and outcome, and what changed.
    const denied = page.locator(`tr[data-id="${EV.denied}"]`);
    const cells = await denied.locator('td').allInnerTexts();
    assert.match(cells[1], /user 1/);
    assert.match(cells[1], /oauth/);
    assert.match(cells[2], /#267/);
    assert.match(cells[2], /Sales/);
    assert.match(cells[3], /unbind/);
    assert.match(cells[3], /31/);
    assert.match(cells[4], /deny/);
    assert.match(cells[4], /deny_empty_type_ids/);
    assert.match(cells[5], /denied/);
    const renamed = await page.locator(`tr[data-id="${EV.renamed}"] td`).nth(3).innerText();
    assert.match(renamed, /HR & Customer Success/);
    assert.match(renamed, /→/);
    assert.match(renamed, /\(EMEA\)/);
    assert.equal(await page.locator(`tr[data-id="${EV.bound}"] .chip.added`).allInnerTexts().then((t) => t.join(',')), '+190');
  });

  await check('the chain banner shows head, entries and the verification', async () => {
    const head = await apiGet('/v1/chain/head');
    await until('a verification verdict', () => /verifies/.test(document.getElementById('chain-verdict').textContent));
    assert.equal(await text('#chain-head'), head.hash);
    assert.equal(await text('#chain-entries'), String(head.entries));
    assert.match(await text('#chain-verdict'), new RegExp(`verifies: ${head.entries} entries`));
  });

  await check('titles are text, never markup', async () => {
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.equal(await page.locator('#events-body img').count(), 0);
    assert.match(await page.locator(`tr[data-id="${EV.long_title}"]`).innerText(), /<img src=x/);
  });

  await check('a long title and a 50-type workplace do not break the layout', async () => {
    await assertNoOverflow('timeline at 1280 px');
    const removed = await page.locator(`tr[data-id="${EV.big_cut}"] .chip.removed`).count();
    assert.equal(removed, 25);
    // Every row stays inside the table, which stays inside the window.
    const widest = await page.$$eval('#events-body tr', (rows) => Math.max(...rows.map((r) => r.getBoundingClientRect().right)));
    assert.ok(widest <= 1280, `a row ends at ${widest}px`);
    await page.setViewportSize({ width: 900, height: 800 });
    await assertNoOverflow('timeline at 900 px');
    await page.setViewportSize({ width: 600, height: 800 });
    await assertNoOverflow('timeline at 600 px (cards)');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await check('filter: outcome = denied', async () => {
    await page.getByLabel('Outcome').selectOption('denied');
    await page.getByRole('button', { name: 'Apply' }).click();
    await until('only the denial', (id) => {
      const rows = [...document.querySelectorAll('#events-body tr[data-id]')];
      return rows.length === 1 && rows[0].dataset.id === id;
    }, EV.denied);
    assert.match(page.url(), /#\/\?outcome=denied/, 'the filter is in the URL');
  });

  await check('filter: workplace, and the back button restores the previous filter', async () => {
    await page.getByRole('button', { name: 'Reset' }).click();
    await until('all events again', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
    await page.getByLabel('Workplace id').fill('238');
    await page.getByLabel('Workplace id').press('Enter');
    await until('workplace 238 only', () => {
      const rows = [...document.querySelectorAll('#events-body tr[data-id]')];
      return rows.length === 3 && rows.every((r) => r.dataset.workplace === '238');
    });
    assert.deepEqual(await rowIds(), [EV.unbound, EV.bound, EV.renamed]);
    await page.goBack();
    await until('all events after going back', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
    await page.goForward();
    await until('workplace 238 again', () => document.querySelectorAll('#events-body tr[data-id]').length === 3);
    assert.equal(await page.getByLabel('Workplace id').inputValue(), '238');
  });

  await check('filter: caller and time range', async () => {
    await page.getByRole('button', { name: 'Reset' }).click();
    await page.getByLabel(/Caller/).fill('999');
    await page.getByRole('button', { name: 'Apply' }).click();
    await until('the empty-state row', () => /No audited changes/.test(document.getElementById('events-body').textContent));
    await page.getByLabel(/Caller/).fill('1');
    await page.getByLabel(/^From/).fill('2000-01-01T00:00:00');
    await page.getByRole('button', { name: 'Apply' }).click();
    await until('every event since 2000', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
    assert.match(page.url(), /since=2000-01-0/);
    await page.getByLabel(/^Until/).fill('2000-01-02T00:00:00');
    await page.getByRole('button', { name: 'Apply' }).click();
    await until('nothing before 2000-01-02', () => /No audited changes/.test(document.getElementById('events-body').textContent));
    await page.getByRole('button', { name: 'Reset' }).click();
    await until('all events again', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
  });

  const event = (await apiGet(`/v1/events/${EV.unbound}`));
  await check('keyboard: a focused row opens with Enter and shows the whole event', async () => {
    // Tab from the last filter control reaches the first row: rows are in the tab order.
    await page.locator('#f-reset').focus();
    await page.keyboard.press('Tab');
    await until('the first row focused by Tab', (id) => document.activeElement && document.activeElement.dataset.id === id, EV.unbound);
    await page.keyboard.press('ArrowDown');
    await until('the second row focused', (id) => document.activeElement && document.activeElement.dataset.id === id, [...EV.order].reverse()[1]);
    await page.keyboard.press('ArrowUp');
    await until('the first row focused', (id) => document.activeElement && document.activeElement.dataset.id === id, EV.unbound);
    await page.keyboard.press('Enter');
    await page.locator('#event-view').waitFor({ state: 'visible' });
    assert.match(page.url(), new RegExp(`#/event/${EV.unbound}$`));
    assert.equal(await page.evaluate(() => document.activeElement.id), 'event-title', 'focus moves to the event');
    const before = await text('#event-body [data-state="before"]');
    const after = await text('#event-body [data-state="after"]');
    assert.match(before, /14\s+158\s+190/);
    assert.match(after, /2 bound/);
    assert.match(after, /14\s+190/);
    assert.equal(await text('#event-hash'), event.event.hash);
    assert.equal(await text('#revert-command'), event.revert_command);
    assert.match(await text('#revert-command'), new RegExp(`b24-audit-proxy revert ${EV.unbound}`));
    await until('the chain check of this event', () => /Chain verifies/.test(document.getElementById('event-verify').textContent));
    const body = await text('#event-body');
    assert.match(body, /HTTP status\s+200/);
    assert.match(body, /single call/);
    assert.match(body, /received/);
    assert.match(body, /completed/);
    for (const entry of event.entries) assert.ok(body.includes(entry.hash), `entry ${entry.seq}'s hash is shown`);
  });

  await check('Escape closes the event and focus returns to its row', async () => {
    await page.keyboard.press('Escape');
    await page.locator('#timeline-view').waitFor({ state: 'visible' });
    await until('the row focused again', (id) => document.activeElement && document.activeElement.dataset.id === id, EV.unbound);
  });

  await check('workplace view: the step history of bound smart processes, linked to events', async () => {
    await page.locator(`tr[data-id="${EV.renamed}"] a[href="#/workplace/238"]`).click();
    await page.locator('#workplace-view').waitFor({ state: 'visible' });
    await until('three steps', () => document.querySelectorAll('#workplace-steps > li').length === 3);
    const steps = await page.$$eval('#workplace-steps > li', (lis) => lis.map((li) => ({ id: li.dataset.id, text: li.innerText })));
    assert.deepEqual(steps.map((s) => s.id), [EV.unbound, EV.bound, EV.renamed], 'newest first');
    assert.match(steps[0].text, /2 bound/);
    assert.match(steps[1].text, /3 bound/);
    assert.match(steps[2].text, /2 bound/);
    assert.match(steps[2].text, /bindings unchanged/);
    assert.equal(await page.locator('#workplace-chart svg circle').count(), 3);
    assert.match(await text('#workplace-current'), /HR & Customer Success \(EMEA\)/);
    await page.locator(`#workplace-steps li[data-id="${EV.bound}"] a`).click();
    await page.locator('#event-view').waitFor({ state: 'visible' });
    assert.match(page.url(), new RegExp(`#/event/${EV.bound}$`));
    await page.keyboard.press('Escape');
    await page.locator('#workplace-view').waitFor({ state: 'visible' });
  });

  await check('the 50-type workplace and the long title fit, in every view', async () => {
    await page.goto(`${ADMIN}/ui/#/workplace/${EV.big_id}`);
    await until('two steps', () => document.querySelectorAll('#workplace-steps > li').length === 2);
    assert.match(await text('#workplace-current'), /50 smart processes/);
    await assertNoOverflow('workplace with 50 smart processes');
    await page.goto(`${ADMIN}/ui/#/event/${EV.big_cut}`);
    await page.locator('#event-view').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#event-body [data-state="before"] .chip').count(), 50);
    await assertNoOverflow('event unbinding 25 of 50');
    await page.goto(`${ADMIN}/ui/#/event/${EV.long_title}`);
    await page.locator('#event-view').waitFor({ state: 'visible' });
    await assertNoOverflow('event with a long title');
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

  if (env.UI_SCREENSHOT === '1') {
    await check('screenshot of the timeline for the README', async () => {
      // A fresh load: no row focused, scrolled to the top.
      await page.goto(`${ADMIN}/ui/#/`);
      await page.reload();
      await until('all events listed', (n) => document.querySelectorAll('#events-body tr[data-id]').length === n, EV.order.length);
      await until('a verification verdict', () => /verifies/.test(document.getElementById('chain-verdict').textContent));
      const file = env.UI_SCREENSHOT_PATH || 'docs/ui-timeline.png';
      fs.mkdirSync(path.dirname(file), { recursive: true });
      await page.screenshot({ path: file });
      log(`screenshot saved: ${file}`);
      // The other views too, for a look (not committed: target/ is ignored).
      fs.mkdirSync(OUT, { recursive: true });
      for (const [name, hash, ready] of [
        ['workplace', '#/workplace/238', '#workplace-steps > li'],
        ['event', `#/event/${EV.unbound}`, '#event-verify'],
        ['event-50', `#/event/${EV.big_cut}`, '#event-verify'],
      ]) {
        await page.goto(`${ADMIN}/ui/${hash}`);
        await page.locator(ready).first().waitFor();
        await page.screenshot({ path: path.join(OUT, `view-${name}.png`), fullPage: true });
      }
    });
  }

  await check('a refused change is approved on its page; the approver token is kept nowhere', async () => {
    await page.goto(`${ADMIN}/ui/#/event/${EV.denied}`);
    await page.locator('#approve-form').waitFor();
    await page.fill('#approve-token', 'not-an-approver-token-at-all');
    await page.fill('#approve-reason', 'CHG-9: Sales is retired');
    await page.click('#approve-form button[type="submit"]');
    await until('the wrong token refused', () => /Not approved: 401/.test(document.getElementById('approve-result').textContent));
    await page.fill('#approve-token', env.APPROVER_TOKEN);
    await page.click('#approve-form button[type="submit"]');
    await until('the change carried out', () => !!document.getElementById('approved-event'));
    const newId = await text('#approved-event');
    assert.notEqual(newId, EV.denied);
    assert.equal(await page.inputValue('#approve-token'), '', 'the token field is emptied');
    assert.equal(await page.evaluate(() => document.cookie), '');
    const stored = await page.evaluate(() => JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)]));
    assert.ok(!stored.includes(env.APPROVER_TOKEN), 'the approver token is not stored');
    // The refused event now shows its approval, and the new event where it came from.
    await page.reload();
    await page.locator('#approved-by').waitFor();
    assert.match(await text('#approved-by'), /Approved by alice: .*CHG-9: Sales is retired.*carried out as event/);
    await page.click('#approved-by a');
    await page.locator('#approval-of').waitFor();
    assert.match(await text('#approval-of'), new RegExp(`Carries out the approval of ${EV.denied} by alice`));
    const d = await apiGet(`/v1/events/${newId}`);
    assert.equal(d.event.decision, 'approved');
    assert.equal(d.event.outcome, 'applied');
  });

  await check('forget token: the data goes and the prompt comes back', async () => {
    await page.goto(`${ADMIN}/ui/#/`);
    await until('events listed', () => document.querySelectorAll('#events-body tr[data-id]').length > 0);
    await page.getByRole('button', { name: 'Forget token' }).click();
    await page.locator('#login-view').waitFor({ state: 'visible' });
    assert.equal((await rowIds()).length, 0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('b24-audit-proxy.admin-token')), null);
    await page.reload();
    await page.locator('#login-view').waitFor({ state: 'visible' });
  });
}
