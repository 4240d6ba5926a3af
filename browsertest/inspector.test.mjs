// Browser test of the inspector page against the real pgrealtime binary and
// a throwaway Postgres, in headless Chromium (the machine's /usr/bin/chromium;
// no browser is ever downloaded). The page connects through the official
// JavaScript client (clients/js), so this is also the client's browser test.
//
//   open the inspector, paste an admin token, connect, subscribe to posts.*
//   INSERT with psql → the row appears in the events table
//   stop pgrealtime (SIGTERM, then later SIGKILL), INSERT while it is down,
//   start it again on the same database → the page reconnects, resumes with
//   `since` and shows exactly the rows written meanwhile, no duplicates.
//
// Environment: PGREALTIME_BIN uses that binary instead of building one;
// CHROMIUM overrides /usr/bin/chromium; BROWSERTEST_KEEP=1 keeps the temp dir;
// BROWSERTEST_DEBUG=1 prints the page's WebSocket frames; UPDATE_SCREENSHOTS=1
// writes docs/inspector.png and docs/inspector-gap.png.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startPostgres, Server, freePort, goBuild, jwtHS256, sleep } from '../testharness/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
// Screenshots go to browsertest/out/ (ignored by git); with
// UPDATE_SCREENSHOTS=1 they replace the ones under docs/.
const shotDir = process.env.UPDATE_SCREENSHOTS === '1' ? path.join(repo, 'docs') : path.join(here, 'out');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

test('inspector shows live rows and resumes after pgrealtime restarts', { timeout: 420_000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install -y chromium`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-browsertest-'));
  const cleanups = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) {
      const t0 = Date.now();
      try { await f(); } catch (e) { console.error('cleanup:', e.message); }
      if (Date.now() - t0 > 5000) console.error(`cleanup step took ${Date.now() - t0} ms: ${f}`);
    }
    if (process.env.BROWSERTEST_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
  });

  // Binaries: pgrealtime (given or built) and the throwaway-Postgres helper.
  const testdbBin = path.join(tmp, 'testdb');
  let bin = process.env.PGREALTIME_BIN ? path.resolve(process.env.PGREALTIME_BIN) : path.join(tmp, 'pgrealtime');
  await Promise.all([
    goBuild(testdbBin, './browsertest/testdb'),
    process.env.PGREALTIME_BIN ? Promise.resolve() : goBuild(bin, './cmd/pgrealtime'),
  ]);

  const pg = await startPostgres(testdbBin);
  cleanups.push(() => pg.stop());
  const psql = (sql) => pg.psql(sql);
  await psql(`CREATE TABLE posts (id bigserial PRIMARY KEY, title text NOT NULL, body text)`);

  const secret = randomBytes(24).toString('hex');
  const token = jwtHS256(secret, { sub: 'browsertest', role: 'admin', exp: Math.floor(Date.now() / 1000) + 3600 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = new Server(bin, ['serve', '--database-url', pg.url, '--jwt-secret', secret,
    '--listen', `127.0.0.1:${port}`, '--log-format', 'console', '--log-level', 'debug'], path.join(tmp, 'pgrealtime.log'));
  cleanups.push(() => server.stop('SIGKILL'));
  await server.start(base);

  // Browser with a fresh profile.
  const profile = path.join(tmp, 'chromium-profile');
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1440, height: 860 },
  });
  cleanups.push(() => ctx.close());
  const page = ctx.pages()[0] || await ctx.newPage();
  const pageErrors = [];
  // Failed WebSocket/fetch attempts while the server is down are expected
  // console noise; anything else logged as an error is a bug in the page.
  ctx.on('page', (p) => watchErrors(p));
  const watchErrors = (p) => {
    p.on('pageerror', (e) => pageErrors.push(e.message));
    p.on('console', (m) => {
      if (m.type() === 'error' && !/WebSocket connection to|Failed to load resource|ERR_CONNECTION_REFUSED/.test(m.text())) {
        pageErrors.push('console: ' + m.text());
      }
    });
  };
  watchErrors(page);

  // The page's WebSocket traffic, for failure messages (last 40 frames).
  const frames = [];
  page.on('websocket', (ws) => {
    const log = (dir) => (f) => { frames.push(dir + ' ' + String(f.payload).slice(0, 300)); if (frames.length > 40) frames.shift(); };
    ws.on('framesent', log('>'));
    ws.on('framereceived', log('<'));
    ws.on('close', () => frames.push('x closed'));
  });
  if (process.env.BROWSERTEST_DEBUG === '1') page.on('websocket', (ws) => ws.on('framereceived', (f) => console.error('<', f.payload)) && ws.on('framesent', (f) => console.error('>', f.payload)));
  const diag = async () => {
    let notices = '';
    try { notices = await page.locator('#notices').innerText({ timeout: 2000 }); } catch { /* page gone */ }
    try { await page.screenshot({ path: path.join(tmp, 'failure.png') }); } catch { /* ignore */ }
    return `\n--- page messages ---\n${notices}\n--- WebSocket frames ---\n${frames.join('\n')}\n--- pgrealtime log (tail) ---\n${server.tail()}`;
  };
  // waitFor wraps a wait so that a timeout says what the page and server were doing.
  const waitFor = async (what, fn) => {
    try { return await fn(); } catch (e) { throw new Error(`waiting for ${what}: ${e.message.split('\n')[0]}${await diag()}`); }
  };
  const rowsFor = (id) => page.locator(`#event-rows tr[data-record-id="${id}"]`);
  const insert = async (title) => Number(await psql(`INSERT INTO posts (title) VALUES ('${title}') RETURNING id`));
  const expectRow = async (id, title) => {
    await waitFor(`row ${id} (${title})`, () => rowsFor(id).first().waitFor({ timeout: 30_000 }));
    const text = await rowsFor(id).first().innerText();
    assert.match(text, new RegExp(title), `row ${id} shows its title`);
    assert.equal(await rowsFor(id).first().getAttribute('data-action'), 'create');
    assert.equal(await rowsFor(id).first().getAttribute('data-collection'), 'posts');
  };
  const status = () => page.locator('#status').getAttribute('data-state');

  // 1. Open, paste the token, connect, subscribe. The page connects through
  //    the official client (clients/js), served next to it.
  const clientLoads = [];
  page.on('response', (r) => { if (new URL(r.url()).pathname === '/pgrealtime-client.js') clientLoads.push(r.status()); });
  const resp = await page.goto(base + '/');
  assert.equal(resp.status(), 200);
  assert.equal(await page.title(), 'pgrealtime inspector');
  await page.fill('#token', token);
  assert.match(await page.locator('#token-info').innerText(), /browsertest.*admin/s);
  await page.click('#connect');
  await waitFor('connected', () => page.waitForSelector('#status[data-state="connected"]', { timeout: 20_000 }));
  assert.deepEqual(clientLoads, [200], 'the page loaded /pgrealtime-client.js');
  await page.fill('#pattern', 'posts.*');
  await page.click('#subscribe');
  await waitFor('posts.* active', () => page.waitForSelector('#patterns li[data-pattern="posts.*"][data-state="active"]', { timeout: 20_000 }));

  // 2. A live row.
  const first = await insert('hello from psql');
  await expectRow(first, 'hello from psql');
  const written = [first];

  // 3. Restart pgrealtime, gracefully then not, writing while it is down.
  for (const [round, signal] of [[1, 'SIGTERM'], [2, 'SIGKILL']]) {
    const positionBefore = await page.locator('#last-position').innerText();
    const res = await server.stop(signal);
    if (signal === 'SIGTERM') assert.equal(res && res.code, 0, `clean exit on SIGTERM (got ${JSON.stringify(res)})`);
    await waitFor(`the page noticing the server is gone (round ${round})`,
      () => page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 20_000 }));
    if (signal === 'SIGTERM') {
      // The close reason is shown: 1001 server shutting down.
      await waitFor('close code 1001 in the page', () => page.waitForSelector('#notices li[data-code="closed 1001"]', { timeout: 5_000 }));
    }
    const downTitles = [1, 2, 3].map((i) => `written while down r${round}-${i}`);
    for (const title of downTitles) written.push(await insert(title));
    await sleep(500);
    await server.start(base);
    await waitFor(`reconnected (round ${round})`, () => page.waitForSelector('#status[data-state="connected"]', { timeout: 30_000 }));
    await waitFor(`resume notice since ${positionBefore}`,
      () => page.waitForSelector(`#notices li[data-code="resume"]:has-text("since ${positionBefore}")`, { timeout: 5_000 }));
    for (let i = 0; i < downTitles.length; i++) await expectRow(written[written.length - 3 + i], downTitles[i]);
    // And live again after the resume.
    const live = await insert(`live after restart ${round}`);
    written.push(live);
    await expectRow(live, `live after restart ${round}`);
  }

  // 4. Every row exactly once, newest on top, nothing else.
  const ids = await page.$$eval('#event-rows tr', (trs) => trs.map((tr) => Number(tr.dataset.recordId)));
  assert.deepEqual(ids, [...written].reverse(), 'one row per insert, newest first, no duplicates, no gaps');
  assert.equal(await page.locator('#count-duplicates').innerText(), '0');
  assert.equal(await page.locator('#count-create').innerText(), String(written.length));
  assert.equal(await page.locator('#notices li[data-code="history_unavailable"]').count(), 0, 'no history_unavailable');
  assert.ok(await page.locator('#banner').isHidden(), 'no gap banner');

  // 5. The detail pane shows the message's JSON.
  await rowsFor(written[written.length - 2]).click();
  const detail = JSON.parse(await page.locator('#detail-json').innerText());
  assert.equal(detail.type, 'record_event');
  assert.equal(detail.action, 'create');
  assert.equal(detail.collection, 'posts');
  assert.equal(detail.record.title, 'written while down r2-3');
  assert.equal(await page.locator('#detail-json .j-num').first().innerText(), String(written[written.length - 2]), 'numbers highlighted as numbers');
  assert.equal(await page.locator('#detail-json .j-key').first().innerText(), '"type":');

  // 6. The other actions, each with its own badge: update, delete, custom
  //    (NOTIFY), truncate.
  const newest = async () => page.locator('#event-rows tr').first();
  const expectNewest = async (what, action, id) => {
    await waitFor(what, () => page.waitForFunction(([a, n]) => {
      const tr = document.querySelector('#event-rows tr');
      return tr && tr.dataset.action === a && Number(document.getElementById('count-received').textContent) === n;
    }, [action, countBefore + (++extra)], { timeout: 20_000 }));
    if (id !== undefined) assert.equal(await (await newest()).getAttribute('data-record-id'), String(id));
  };
  const countBefore = written.length;
  let extra = 0;
  await psql(`UPDATE posts SET title = 'edited title' WHERE id = ${first}`);
  await expectNewest('the update row', 'update', first);
  assert.match(await (await newest()).innerText(), /edited title/);
  await psql(`DELETE FROM posts WHERE id = ${written[1]}`);
  await expectNewest('the delete row', 'delete', written[1]);
  await psql(`SELECT pg_notify('pgrealtime', '{"collection":"posts","event":"featured","record_id":"${first}","data":{"by":"editor"}}')`);
  await expectNewest('the custom event row', 'custom', first);
  assert.match(await (await newest()).innerText(), /featured[\s\S]*editor/);
  await psql(`TRUNCATE posts`);
  await expectNewest('the truncate row', 'truncate');
  for (const a of ['update', 'delete', 'custom', 'truncate']) assert.equal(await page.locator('#count-' + a).innerText(), '1', a + ' counter');

  // 7. A server error is shown with its code and topic.
  await page.fill('#pattern', 'posts.');
  await page.click('#subscribe');
  await waitFor('invalid_topic error', () => page.waitForSelector('#notices li[data-code="invalid_topic"]', { timeout: 10_000 }));
  assert.match(await page.locator('#notices li[data-code="invalid_topic"]').first().innerText(), /posts\./);
  assert.equal(await page.locator('#patterns li[data-pattern="posts."]').getAttribute('data-state'), 'error');
  await page.click('#patterns li[data-pattern="posts."] button.remove');
  await page.waitForSelector('#patterns li[data-pattern="posts."]', { state: 'detached', timeout: 5_000 });
  await sleep(500); // time for a stray reply to arrive
  assert.equal(await page.locator('#notices li[data-code="invalid_topic"]').count(), 1, 'one error, shown once');

  assert.deepEqual(pageErrors, [], 'no script errors in the page');
  await page.locator('#event-rows tr[data-action="update"]').click();
  await sleep(1800); // let the new-row highlight fade
  fs.mkdirSync(shotDir, { recursive: true });
  await page.screenshot({ path: path.join(shotDir, 'inspector.png') });
  assert.equal(await status(), 'connected');

  // 8. A gap the server cannot fill. The page disconnects; pgrealtime
  //    restarts with a history of 2 events; a second tab (token and patterns
  //    come from localStorage) watches 8 rows go by, so they have certainly
  //    left the history; then the first tab connects again with since. It
  //    must say so (history_unavailable, banner, gap row) and go on live.
  await page.click('#disconnect');
  await waitFor('closed after disconnect', () => page.waitForSelector('#status[data-state="closed"]', { timeout: 10_000 }));
  await server.stop('SIGTERM');
  server.args = [...server.args, '--history-size', '2'];
  await server.start(base);
  const watcher = await ctx.newPage();
  await watcher.goto(base + '/');
  assert.equal(await watcher.inputValue('#token'), token, 'token kept in localStorage');
  await watcher.click('#connect');
  await waitFor('second tab subscribed from its saved patterns',
    () => watcher.waitForSelector('#patterns li[data-pattern="posts.*"][data-state="active"]', { timeout: 20_000 }));
  let lastGap;
  for (let i = 1; i <= 8; i++) lastGap = await insert(`gap row ${i}`);
  await waitFor('second tab seeing the gap rows', () => watcher.waitForSelector(`#event-rows tr[data-record-id="${lastGap}"]`, { timeout: 20_000 }));
  await watcher.close();
  await page.click('#connect');
  await waitFor('history_unavailable shown', () => page.waitForSelector('#notices li[data-code="history_unavailable"]', { timeout: 30_000 }));
  await waitFor('gap banner', () => page.waitForSelector('#banner:not([hidden])', { timeout: 5_000 }));
  await waitFor('gap marker row', () => page.waitForSelector('#event-rows tr.gap-row', { timeout: 5_000 }));
  await waitFor('live again after the gap', () => page.waitForSelector('#patterns li[data-pattern="posts.*"][data-state="active"]', { timeout: 20_000 }));
  assert.equal(await page.locator('#event-rows tr[data-record-id]').filter({ hasText: 'gap row' }).count(), 0, 'no gap row was delivered');
  const afterGap = await insert('live after the gap');
  await expectRow(afterGap, 'live after the gap');
  assert.equal(await page.locator('#count-duplicates').innerText(), '0');
  assert.deepEqual(pageErrors, [], 'no script errors in the page');
  await sleep(1800);
  await page.screenshot({ path: path.join(shotDir, 'inspector-gap.png') });

  // 9. Pause holds rows back (still counted), resume shows them; clear empties.
  const received = async () => Number(await page.locator('#count-received').innerText());
  const before = await received();
  await page.click('#pause');
  const paused = await insert('written while paused');
  await waitFor('the paused row counted', () => page.waitForFunction((n) => Number(document.getElementById('count-received').textContent) === n, before + 1, { timeout: 20_000 }));
  assert.equal(await rowsFor(paused).count(), 0, 'no new row while paused');
  assert.match(await page.locator('#pause').innerText(), /Resume \(1 new\)/);
  await page.click('#pause');
  await expectRow(paused, 'written while paused');
  await page.click('#clear');
  assert.equal(await page.locator('#event-rows tr').count(), 0);
  assert.equal(await received(), 0);

  // 10. A token that expires while connected: the server closes with 4001,
  //     the page says so and does not reconnect with the dead token.
  const shortToken = jwtHS256(secret, { sub: 'shortlived', role: 'admin', exp: Math.floor(Date.now() / 1000) + 8 }); // room for a slow connect
  const expiring = await ctx.newPage();
  await expiring.goto(base + '/');
  await expiring.fill('#token', shortToken);
  await expiring.click('#connect');
  await waitFor('short-lived token connected', () => expiring.waitForSelector('#status[data-state="connected"]', { timeout: 20_000 }));
  await waitFor('closed with 4001', () => expiring.waitForSelector('#status[data-state="closed"]', { timeout: 60_000 }));
  assert.match(await expiring.locator('#status').innerText(), /4001/);
  assert.equal(await expiring.locator('#notices li[data-code="closed 4001"]').count(), 1);
  await sleep(1500);
  assert.equal(await expiring.locator('#status').getAttribute('data-state'), 'closed', 'no reconnect with an expired token');
  await expiring.close();

  // 11. Re-authenticating as a plain user (no rules file: only admins may
  //     read) revokes posts.*, and the page shows it.
  const userToken = jwtHS256(secret, { sub: 'ann', role: 'user', exp: Math.floor(Date.now() / 1000) + 3600 });
  await page.fill('#token', userToken);
  await page.click('#reauth');
  await waitFor('authenticated notice', () => page.waitForSelector('#notices li:has-text("authenticated as ann")', { timeout: 10_000 }));
  await waitFor('posts.* revoked', () => page.waitForSelector('#patterns li[data-pattern="posts.*"][data-state="error"]', { timeout: 10_000 }));
  assert.equal(await page.locator('#notices li[data-code="revoked"]').count(), 1);
  assert.deepEqual(pageErrors, [], 'no script errors in the page');
});
