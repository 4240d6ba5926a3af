// The unmodified @supabase/supabase-js in headless Chromium (the machine's
// /usr/bin/chromium, driven by playwright-core; no browser download)
// against pgrealtime's /realtime/v1/websocket: supabase-js is bundled for
// the page with esbuild and served from a local HTTP server on another
// origin (allowed with --allowed-origins), as an app would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { startPostgres, Server, freePort, goBuild, jwtHS256 } from '../testharness/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

const page = (bundle) => `<!doctype html><meta charset="utf-8"><title>supabase-js on pgrealtime</title>
<script>${bundle}</script>
<script>
  window.changes = [];
  window.start = async (url, key, vsn) => {
    if (window.client) { await window.client.removeAllChannels(); window.client.realtime.disconnect(); }
    window.changes = [];
    return window.subscribe(url, key, vsn);
  };
  window.subscribe = (url, key, vsn) => new Promise((resolve, reject) => {
    const client = window.client = supabase.createClient(url, key, { auth: { persistSession: false }, realtime: { vsn } });
    client.channel('browser')
      .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (p) => window.changes.push(p))
      .subscribe((status, err) => {
        if (status === 'SUBSCRIBED') resolve(status);
        if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(new Error(status + ': ' + (err && err.message)));
      });
  });
</script>`;

test('supabase-js in Chromium receives postgres_changes from pgrealtime', { timeout: 240_000 }, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install -y chromium`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-supabase-chromium-'));
  const cleanups = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) { try { await f(); } catch (e) { console.error('cleanup:', e.message); } }
    if (process.env.SUPABASETEST_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
  });

  const testdb = path.join(tmp, 'testdb');
  const bin = process.env.PGREALTIME_BIN ? path.resolve(process.env.PGREALTIME_BIN) : path.join(tmp, 'pgrealtime');
  const [bundled] = await Promise.all([
    build({ stdin: { contents: "export { createClient } from '@supabase/supabase-js';", resolveDir: here },
      bundle: true, format: 'iife', globalName: 'supabase', platform: 'browser', write: false, logLevel: 'silent' }),
    goBuild(testdb, './browsertest/testdb'),
    process.env.PGREALTIME_BIN ? Promise.resolve() : goBuild(bin, './cmd/pgrealtime'),
  ]);
  const html = page(bundled.outputFiles[0].text.replaceAll('</script', '<\\/script'));

  const pg = await startPostgres(testdb);
  cleanups.push(() => pg.stop());
  await pg.psql(`CREATE TABLE todos (id bigserial PRIMARY KEY, title text NOT NULL, done bool DEFAULT false, created_at timestamptz DEFAULT now())`);
  fs.writeFileSync(path.join(tmp, 'rules.yaml'), 'collections:\n  todos:\n    read: "true"\n');

  // The app's page, on its own origin.
  const site = http.createServer((req, res) => { res.setHeader('Content-Type', 'text/html'); res.end(html); });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => site.close(r)));
  const siteURL = `http://127.0.0.1:${site.address().port}`;

  const secret = 'supabase-chromium-secret-0123456789';
  const anonKey = jwtHS256(secret, { role: 'anon', exp: Math.floor(Date.now() / 1000) + 3600 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = new Server(bin, ['serve', '--database-url', pg.url, '--jwt-secret', secret,
    '--config', path.join(tmp, 'rules.yaml'), '--allowed-origins', siteURL,
    '--listen', `127.0.0.1:${port}`, '--log-format', 'console', '--log-level', 'debug'], path.join(tmp, 'pgrealtime.log'));
  cleanups.push(() => server.stop('SIGKILL'));
  await server.start(base);

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  cleanups.push(() => browser.close());
  const tab = await browser.newPage();
  const pageErrors = [];
  tab.on('pageerror', (e) => pageErrors.push(e.message));
  await tab.goto(siteURL);
  for (const vsn of ['1.0.0', '2.0.0']) {
    await tab.evaluate(([u, k, v]) => window.start(u, k, v), [base, anonKey, vsn]).catch((e) => {
      throw new Error(`${vsn}: ${e.message}\n${server.tail()}`);
    });
    const id = Number(await pg.psql(`INSERT INTO todos (title) VALUES ('from chromium ${vsn}') RETURNING id`));
    await pg.psql(`UPDATE todos SET done = true WHERE id = ${id}`);
    await tab.waitForFunction(() => window.changes.length >= 2, null, { timeout: 20_000 });
    const changes = await tab.evaluate(() => window.changes);
    assert.deepEqual(changes.map((c) => c.eventType), ['INSERT', 'UPDATE'], vsn);
    assert.equal(changes[0].new.id, id, 'int8 is a number');
    assert.equal(changes[0].new.title, `from chromium ${vsn}`);
    assert.equal(changes[1].new.done, true);
    assert.match(changes[0].new.created_at, /\+00:00$/);
  }
  assert.deepEqual(pageErrors, []);
});
