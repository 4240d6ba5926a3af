// Session behaviour against the real server: token refresh before expiry,
// 4001 -> getToken -> resume, unsubscribe, 1000 subscriptions on one
// connection, and refusals that must not be retried in a loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import { createClient } from '../dist/index.js';
import { setup, token, jwt, waitFor, collector, jsRoot, step } from './harness.mjs';

const execFileP = promisify(execFile);

const secret = randomBytes(24).toString('hex');
const admin = token(secret);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Tapped counts the sockets a client opens and the frames it sends.
function tapped() {
  const t = { sockets: [], sent: [] };
  t.WebSocket = class extends WebSocket {
    constructor(u) { super(u); t.sockets.push(this); }
    send(x) { t.sent.push(JSON.parse(x)); super.send(x); }
  };
  return t;
}

test('session', { timeout: 600_000 }, async (t) => {
  const env = await setup(t);
  // Tables first: the server adds a table created later to its publication
  // only after a moment.
  for (const table of ['tk', 'us', 'ms']) await env.psql(`CREATE TABLE ${table} (id bigint PRIMARY KEY, body text)`);
  await env.psql('CREATE TABLE fl (id bigint PRIMARY KEY, owner text, n int)');
  const s = await env.server(['--jwt-secret', secret, '--max-subscriptions', '1000', '--subscribe-rate', '100']);
  let nextId = 1;
  const insert = (table = 'tk') => env.psql(`INSERT INTO ${table} VALUES (${nextId++}, 'x')`).then(() => nextId - 1);

  await step(t, 'a token refreshed before it expires keeps the connection', async () => {
    let calls = 0;
    const getToken = async () => { calls++; return token(secret, 5); };
    const tap = tapped();
    const rt = createClient(s.url, { getToken, WebSocket: tap.WebSocket });
    t.after(() => rt.close());
    const states = [];
    rt.onState((x) => states.push(x));
    const c = collector();
    rt.subscribe('tk.*', c.opts);
    await waitFor('live', () => c.lives === 1);
    const first = nextId;
    // Three refreshes: longer than the first token lived, and the second.
    await waitFor('three refreshes', async () => { await insert(); return calls >= 4; }, 60_000);
    const last = await insert();
    await waitFor('the last row', () => c.ids.includes(last));
    assert.deepEqual(states.map((x) => x.state), ['connected'], 'never reconnected: ' + JSON.stringify(states));
    assert.equal(tap.sockets.length, 1, 'one connection');
    assert.ok(tap.sent.filter((m) => m.type === 'auth').length >= 3, 'refreshed with auth messages');
    assert.deepEqual(c.ids, Array.from({ length: last - first + 1 }, (_, i) => first + i));
  });

  await step(t, 'expiry without refresh: 4001, getToken, resumed with nothing lost', async () => {
    // The token service hands out the same short token until the server
    // has closed the connection for its expiry.
    let current = token(secret, 4);
    const rt = createClient(s.url, { getToken: () => current, WebSocket });
    t.after(() => rt.close());
    const states = [];
    rt.onState((x) => {
      states.push(x);
      if (x.code === 4001) current = token(secret, 3600);
    });
    const c = collector();
    rt.subscribe('tk.*', c.opts);
    await waitFor('live', () => c.lives === 1);
    const first = nextId;
    await waitFor('closed with 4001 and connected again', async () => {
      await insert();
      return states.some((x) => x.code === 4001) && states.at(-1).state === 'connected';
    }, 60_000);
    const last = await insert();
    await waitFor('the last row', () => c.ids.includes(last));
    assert.deepEqual(states.map((x) => x.state), ['connected', 'reconnecting', 'connected'], JSON.stringify(states));
    assert.deepEqual(c.ids, Array.from({ length: last - first + 1 }, (_, i) => first + i), 'every row once, in order');
    assert.deepEqual(c.gaps, []);
  });

  await step(t, 'unsubscribe stops delivery at once', async () => {
    const tap = tapped();
    const rt = createClient(s.url, { token: admin, WebSocket: tap.WebSocket });
    t.after(() => rt.close());
    const a = collector(), b = collector(), fence = collector();
    const subA = rt.subscribe('us.*', a.opts);
    b.subscription = rt.subscribe('us.*', b.opts); // a second subscription to the same topic
    rt.subscribe('tk.*', fence.opts);
    await waitFor('live', () => a.lives + b.lives + fence.lives === 3);
    const r1 = await insert('us');
    await waitFor('row in both', () => a.ids.includes(r1) && b.ids.includes(r1));
    subA.unsubscribe();
    assert.equal(tap.sent.filter((m) => m.type === 'unsubscribe').length, 0, 'the topic is still needed by b');
    const r2 = await insert('us');
    const f1 = await insert('tk');
    await waitFor('fence row', () => fence.ids.includes(f1));
    assert.deepEqual(a.ids, [r1], 'nothing after unsubscribe');
    assert.deepEqual(b.ids, [r1, r2], 'the other subscription goes on');
    // Unsubscribing the last one tells the server, and nothing more comes.
    b.subscription.unsubscribe();
    assert.deepEqual(tap.sent.filter((m) => m.type === 'unsubscribe').map((m) => m.topics), [['us.*']]);
    const r3 = await insert('us');
    const f2 = await insert('tk');
    await waitFor('fence row', () => fence.ids.includes(f2));
    assert.deepEqual(b.ids, [r1, r2]);
    assert.ok(r3 > r2);
  });

  await step(t, 'filtered subscriptions on one connection each get their own rows', async () => {
    const rt = createClient(s.url, { token: admin, WebSocket });
    t.after(() => rt.close());
    const ann = collector(), bob = collector(), big = collector(), all = collector();
    rt.subscribe('fl.*?owner=eq.ann', ann.opts);
    rt.subscribe('fl?owner=eq.bob', bob.opts);
    rt.subscribe('fl?n=gt.10&owner=in.(ann,bob)', big.opts);
    rt.subscribe('fl.*', all.opts);
    await waitFor('live', () => ann.lives + bob.lives + big.lives + all.lives === 4);
    await env.psqlScript(`INSERT INTO fl VALUES (1, 'ann', 5); INSERT INTO fl VALUES (2, 'bob', 50);
      INSERT INTO fl VALUES (3, 'cat', 99); INSERT INTO fl VALUES (4, 'ann', 11); UPDATE fl SET owner = 'bob' WHERE id = 1;`);
    await waitFor('every row', () => all.events.length === 5);
    assert.deepEqual(ann.ids, [1, 4]);
    assert.deepEqual(bob.ids, [2, 1], 'the update of row 1 to bob');
    assert.deepEqual(big.ids, [2, 4]);
    assert.deepEqual(all.ids, [1, 2, 3, 4, 1]);
  });

  await step(t, '1000 subscriptions on one connection', async () => {
    const tap = tapped();
    const rt = createClient(s.url, { token: admin, WebSocket: tap.WebSocket });
    t.after(() => rt.close());
    await waitFor('connected', () => rt.state === 'connected');
    const cs = [];
    const t0 = Date.now();
    for (let i = 1; i <= 1000; i++) {
      const c = collector();
      rt.subscribe('ms.' + i, c.opts);
      cs.push(c);
    }
    await waitFor('all live', () => cs.every((c) => c.lives === 1));
    const subscribeMs = Date.now() - t0;
    assert.equal(tap.sent.filter((m) => m.type === 'subscribe').length, 1, 'one subscribe request for all of them');
    await env.psql(`INSERT INTO ms SELECT g, 'x' FROM generate_series(1, 1000) g`);
    const t1 = Date.now();
    await waitFor('every subscription its row', () => cs.every((c) => c.ids.length === 1));
    console.log(`# 1000 subscriptions: subscribed in ${subscribeMs} ms, 1000 rows routed in ${Date.now() - t1} ms`);
    cs.forEach((c, i) => assert.deepEqual(c.ids, [i + 1]));
  });

  await step(t, 'refusals are reported and not retried', async (t2) => {
    await t2.test('HTTP 401 at upgrade (bad token)', async () => {
      const tap = tapped();
      const errors = [];
      const rt = createClient(s.url, { token: jwt('wrong secret', { sub: 'x' }), WebSocket: tap.WebSocket, onError: (e) => errors.push(e) });
      await waitFor('closed', () => rt.state === 'closed');
      assert.equal(errors[0].code, 'unauthorized');
      await sleep(1500);
      assert.equal(tap.sockets.length, 1, 'one attempt only');
    });
    await t2.test('invalid_topic and forbidden', async () => {
      const tap = tapped();
      const user = jwt(secret, { sub: 'ann', role: 'user', exp: Math.floor(Date.now() / 1000) + 3600 });
      const rt = createClient(s.url, { token: user, WebSocket: tap.WebSocket });
      t.after(() => rt.close());
      const bad = collector(), forbidden = collector();
      rt.subscribe('tk.', bad.opts);
      rt.subscribe('tk.*', forbidden.opts); // no rules file: only admins read
      await waitFor('both refused', () => bad.errors.length + forbidden.errors.length === 2);
      assert.equal(bad.errors[0].code, 'invalid_topic');
      assert.equal(bad.errors[0].topic, 'tk.');
      assert.equal(forbidden.errors[0].code, 'forbidden');
      await sleep(1500);
      assert.equal(tap.sent.filter((m) => m.type === 'subscribe').length, 2, 'one request, one retry without the invalid topic, then nothing');
      assert.equal(rt.state, 'connected');
    });
    await t2.test('1008 closes for good', async () => {
      const tap = tapped();
      const errors = [];
      const rt = createClient(s.url, { token: admin, WebSocket: tap.WebSocket, onError: (e) => errors.push(e) });
      await waitFor('connected', () => rt.state === 'connected');
      WebSocket.prototype.send.call(tap.sockets[0], Buffer.from([1, 2, 3])); // a binary frame: protocol abuse
      await waitFor('closed', () => rt.state === 'closed');
      assert.equal(errors[0].closeCode, 1008);
      await sleep(1500);
      assert.equal(tap.sockets.length, 1, 'not retried');
    });
  });

  await step(t, 'npm pack: a fresh project installs the package by path and connects', async () => {
    const dir = fs.mkdtempSync(path.join(env.tmp, 'pack-'));
    const { stdout } = await execFileP('npm', ['pack', '--json', '--pack-destination', dir], { cwd: jsRoot, maxBuffer: 16 << 20 });
    const [info] = JSON.parse(stdout.slice(stdout.indexOf('[')));
    const files = info.files.map((f) => f.path).sort();
    assert.deepEqual(files.filter((f) => !f.startsWith('dist/')), ['README.md', 'package.json']);
    assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), files.join(' '));

    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    await execFileP('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, info.filename)], { cwd: app });
    assert.deepEqual(fs.readdirSync(path.join(app, 'node_modules')).filter((d) => !d.startsWith('.')), ['@pgrealtime'], 'no dependencies installed');
    // Node's own WebSocket (flagged in Node 20, global from 22): no ws needed.
    fs.writeFileSync(path.join(app, 'main.js'), `
      import { createClient } from '@pgrealtime/client';
      const rt = createClient(process.argv[2], { token: process.argv[3] });
      rt.subscribe('tk.*', {
        onLive: () => console.log('live'),
        onEvent: (e) => { console.log('event ' + e.record_id); rt.close(); },
        onError: (e) => { console.log('error ' + e.code); process.exit(1); },
      });
    `);
    const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', 'main.js', s.url, admin], { cwd: app, stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = [];
    readline.createInterface({ input: child.stdout }).on('line', (l) => lines.push(l));
    const exited = new Promise((r) => child.once('exit', r));
    t.after(() => child.kill());
    await waitFor('the app subscribed', () => lines.includes('live'));
    const id = await insert();
    assert.equal(await exited, 0);
    assert.deepEqual(lines, ['live', 'event ' + id]);
  });
});
