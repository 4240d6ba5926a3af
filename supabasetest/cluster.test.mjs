// The unmodified @supabase/supabase-js client (Node, with ws) against a
// cluster of two pgrealtime nodes (PROTOCOL sections 8 and 9) on one
// throwaway Postgres and one throwaway Redis: client A on node 1 and client
// B on node 2 get every change, client broadcast and custom event once, with
// the payloads a single node gives (a third, single-node pgrealtime on its
// own slot is the reference).
//
// "Once" is proven with a sentinel instead of a sleep: after the events
// under test, one more event of the same source that is delivered after
// them (events are delivered in order on every node); once it has arrived,
// the list must hold each event under test once and nothing else.
//
// Skipped when redis-server is missing (a failure under CI=true).
// Environment as supabase.test.mjs: PGREALTIME_BIN, SUPABASETEST_KEEP=1,
// SUPABASETEST_DEBUG=1.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startPostgres, startRedis, startCluster, stopCluster, findRedisServer, Server, freePort, goBuild, jwtHS256, waitUntil } from '../testharness/harness.mjs';

const secret = 'supabasetest-cluster-secret-0123456789';
const hour = () => Math.floor(Date.now() / 1000) + 3600;
const token = (claims) => jwtHS256(secret, { exp: hour(), ...claims });
const anonKey = token({ role: 'anon' });
const annToken = token({ role: 'authenticated', sub: 'ann' });
const bobToken = token({ role: 'authenticated', sub: 'bob' });

const rulesYAML = `
collections:
  todos:
    read: "true"
    omit_columns: [secret]
  room1:
    read: "true"
    broadcast: "auth.sub != ''"
default:
  read: "auth.role == 'admin'"
`;

// Why the whole file is skipped, if it is (under CI=true findRedisServer
// throws instead).
const skip = findRedisServer() ? false : 'redis-server not found: install redis-server (under CI=true this is a failure)';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-supabasecluster-'));
const bin = process.env.PGREALTIME_BIN ? path.resolve(process.env.PGREALTIME_BIN) : path.join(tmp, 'pgrealtime');
const testdb = path.join(tmp, 'testdb');
await Promise.all([
  goBuild(testdb, './browsertest/testdb'),
  process.env.PGREALTIME_BIN ? Promise.resolve() : goBuild(bin, './cmd/pgrealtime'),
]).catch((e) => { fs.rmSync(tmp, { recursive: true, force: true }); throw e; });

let pg, redis, nodes = [], single;
const clients = [], sockets = [];
const tail = () => [...nodes.map((n) => `--- ${n.id} log (tail) ---\n${n.server.tail(2500)}`),
  single ? `--- single node log (tail) ---\n${single.server.tail(1500)}` : '', redis ? `--- redis log ---\n${redis.tail(1000)}` : ''].join('\n');
const failWith = (what) => (e) => { throw new Error(`${what}: ${e.message}\n${tail()}`); };

// Setup and cleanup run as hooks: nothing is registered with node:test
// before the top-level awaits are done (the root test would run, and its
// after hook with it, meanwhile).
after(async () => {
  for (const c of clients) { try { await c.removeAllChannels(); c.realtime.disconnect(); } catch { /* closing anyway */ } }
  for (const s of sockets) s.terminate();
  await Promise.all([stopCluster(nodes, 'SIGKILL'), single && single.server.stop('SIGKILL')]);
  if (redis) await redis.stop();
  if (pg) await pg.stop();
  if (process.env.SUPABASETEST_KEEP === '1') console.error('kept', tmp);
  else fs.rmSync(tmp, { recursive: true, force: true });
});

before(async () => {
  if (skip) return;
  pg = await startPostgres(testdb);
  await pg.psql(`
    CREATE TABLE todos (id bigserial PRIMARY KEY, title text NOT NULL, done bool DEFAULT false,
      user_id text, created_at timestamptz DEFAULT '2026-01-02 03:04:05.678901+00', due date, at timestamp,
      tags text[], scores int4[], meta jsonb, price numeric, ratio float8, data bytea, secret text);`);
  fs.writeFileSync(path.join(tmp, 'rules.yaml'), rulesYAML);
  const common = ['--jwt-secret', secret, '--config', path.join(tmp, 'rules.yaml'), '--log-format', 'console', '--log-level', 'debug'];
  redis = await startRedis();
  nodes = await startCluster({ bin, n: 2, databaseURL: pg.url, redisURL: redis.url, slot: 'supacluster', args: common, dir: tmp });
  // The reference: one node without Redis, on its own slot.
  const port = await freePort();
  single = { base: `http://127.0.0.1:${port}` };
  single.server = new Server(bin, ['serve', '--database-url', pg.url, '--slot', 'supacluster_single',
    '--listen', `127.0.0.1:${port}`, ...common], path.join(tmp, 'single.log'));
  await single.server.start(single.base);
});

// client makes a supabase-js client for the node at base, as an app would.
function client(base, { key = anonKey, accessToken } = {}) {
  const realtime = { transport: ws };
  if (process.env.SUPABASETEST_DEBUG === '1') realtime.logger = (kind, msg, data) => console.error(base, kind, msg, JSON.stringify(data));
  const c = createClient(base, key, { auth: { persistSession: false, autoRefreshToken: false }, realtime });
  if (accessToken) c.realtime.setAuth(accessToken);
  clients.push(c);
  return c;
}

// subscribe subscribes ch and resolves when it is SUBSCRIBED.
function subscribe(ch) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${ch.topic}: not subscribed within 20 s`)), 20_000);
    ch.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') { clearTimeout(timer); resolve(ch); }
      if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') { clearTimeout(timer); reject(err || new Error(status)); }
    });
  }).catch(failWith(`subscribe ${ch.topic}`));
}

// changes subscribes a channel of supabase on postgres_changes of todos
// (with binding) and returns [channel, list of payloads].
async function changes(supabase, name, binding) {
  const got = [];
  const ch = await subscribe(supabase.channel(name).on('postgres_changes', { schema: 'public', table: 'todos', ...binding }, (p) => got.push(p)));
  return [ch, got];
}

// rawSubscriber is a plain WebSocket client of /realtime at base,
// subscribed to topics; resolves to the list of its messages.
async function rawSubscriber(base, topics, accessToken) {
  const raw = new ws(base.replace('http', 'ws') + '/realtime?access_token=' + accessToken);
  sockets.push(raw);
  const got = [];
  raw.on('message', (d) => got.push(JSON.parse(String(d))));
  await waitUntil(`${base}/realtime connected`, () => got.some((m) => m.type === 'connected')).catch(failWith('raw connect'));
  raw.send(JSON.stringify({ type: 'subscribe', id: '1', topics }));
  await waitUntil(`${base}/realtime subscribed`, () => got.some((m) => m.type === 'subscribed' || m.type === 'error')).catch(failWith('raw subscribe'));
  assert.ok(got.some((m) => m.type === 'subscribed'), `raw subscribe: ${JSON.stringify(got)}`);
  return got;
}

const opts = (timeout) => ({ timeout, skip });

test('cluster: /readyz names each node and its role, one leader', opts(20_000), async () => {
  const ready = await Promise.all(nodes.map(async (n) => (await fetch(n.base + '/readyz')).json()));
  assert.deepEqual(ready.map((r) => [r.ready, r.node]), [[true, 'node1'], [true, 'node2']]);
  // Roles settle after the election; exactly one leader once they have.
  await waitUntil('one leader', async () => {
    const roles = await Promise.all(nodes.map(async (n) => (await (await fetch(n.base + '/readyz')).json()).role));
    return roles.filter((r) => r === 'leader').length === 1 && roles.filter((r) => r === 'follower').length === 1;
  }, 15_000).catch(failWith('roles'));
});

test('cluster: INSERT, UPDATE, DELETE reach a client on each node once, with the single-node payloads', opts(60_000), async () => {
  const a = client(nodes[0].base), b = client(nodes[1].base), ref = client(single.base);
  const subs = await Promise.all([a, b, ref].map((c, i) => changes(c, `all-${i}`, { event: '*' })));
  const id = Number(await pg.psql(`INSERT INTO todos (title, done, user_id, due, at, tags, scores, meta, price, ratio, data, secret)
    VALUES ('first', true, 'ann', '2026-02-03', '2026-02-03 04:05:06.5', '{x,"y z"}', '{1,2}', '{"k":[1,"two"]}', 12.50, 0.25, '\\x01ff', 'hidden')
    RETURNING id`));
  await pg.psql(`UPDATE todos SET title = 'second', done = false WHERE id = ${id}`);
  await pg.psql(`DELETE FROM todos WHERE id = ${id}`);
  const sentinel = Number(await pg.psql(`INSERT INTO todos (title) VALUES ('sentinel') RETURNING id`));
  const [[, gotA], [, gotB], [, gotRef]] = subs;
  await waitUntil('the sentinel on both nodes and the single node', () => [gotA, gotB, gotRef].every((l) => l.some((p) => p.new.id === sentinel)))
    .catch(failWith('changes'));
  const summary = (l) => l.map((p) => [p.eventType, p.new.id ?? p.old.id]);
  const want = [['INSERT', id], ['UPDATE', id], ['DELETE', id], ['INSERT', sentinel]];
  assert.deepEqual(summary(gotA), want, 'node 1: each change once, in order');
  assert.deepEqual(summary(gotB), want, 'node 2: each change once, in order');
  assert.deepEqual(gotA, gotRef, 'node 1 gives the payloads of a single node');
  assert.deepEqual(gotB, gotRef, 'node 2 gives the payloads of a single node');
  // And those are Supabase's (as supabase.test.mjs checks on one node).
  assert.deepEqual(gotA[0].new, {
    id, title: 'first', done: true, user_id: 'ann', created_at: '2026-01-02T03:04:05.678901+00:00',
    due: '2026-02-03', at: '2026-02-03T04:05:06.5', tags: ['x', 'y z'], scores: [1, 2], meta: { k: [1, 'two'] },
    price: 12.5, ratio: 0.25, data: '\\x01ff',
  }, 'secret is omitted (omit_columns)');
  assert.deepEqual(gotA[1].old, { id });
  assert.deepEqual(gotA[2].old, { id });
  for (const p of gotA) assert.equal(p.errors, null);
  for (const [ch] of subs) await ch.unsubscribe();
});

test('cluster: a filter holds on both nodes', opts(60_000), async () => {
  const a = client(nodes[0].base), b = client(nodes[1].base);
  const subs = await Promise.all([a, b].map((c, i) => changes(c, `filtered-${i}`, { event: '*', filter: 'user_id=eq.ann' })));
  const ids = (await pg.psql(`INSERT INTO todos (title, user_id) VALUES ('for bob', 'bob'), ('for ann', 'ann'), ('for nobody', NULL) RETURNING id`)).split('\n').map(Number);
  await pg.psql(`UPDATE todos SET title = 'for ann, edited' WHERE id = ${ids[1]}`);
  await pg.psql(`UPDATE todos SET title = 'for bob, edited' WHERE id = ${ids[0]}`);
  await pg.psql(`INSERT INTO todos (title, user_id) VALUES ('ann sentinel', 'ann')`);
  await waitUntil('the sentinel on both nodes', () => subs.every(([, l]) => l.some((p) => p.new.title === 'ann sentinel'))).catch(failWith('filtered changes'));
  for (const [i, [, got]] of subs.entries()) {
    assert.deepEqual(got.map((p) => [p.eventType, p.new.title]), [['INSERT', 'for ann'], ['UPDATE', 'for ann, edited'], ['INSERT', 'ann sentinel']], `node ${i + 1}`);
  }
  for (const [ch] of subs) await ch.unsubscribe();
});

test('cluster: a client broadcast reaches the other node\'s members and /realtime subscribers once, and never its sender', opts(60_000), async () => {
  const raw = await rawSubscriber(nodes[1].base, ['room1'], annToken);
  const got = { a: [], b: [], anon: [] };
  const a = client(nodes[0].base, { accessToken: annToken });
  const b = client(nodes[1].base, { accessToken: bobToken });
  const anon = client(nodes[0].base);
  const ach = await subscribe(a.channel('room1', { config: { broadcast: { ack: true } } }).on('broadcast', { event: '*' }, (p) => got.a.push(p)));
  const bch = await subscribe(b.channel('room1', { config: { broadcast: { ack: true } } }).on('broadcast', { event: '*' }, (p) => got.b.push(p)));
  const nch = await subscribe(anon.channel('room1', { config: { broadcast: { ack: true } } }).on('broadcast', { event: '*' }, (p) => got.anon.push(p)));

  assert.equal(await ach.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } }), 'ok');
  // Refused by the broadcast rule (no sub): an error, and it reaches nobody.
  assert.equal(await nch.send({ type: 'broadcast', event: 'cursor', payload: { x: 'refused' } }), 'error');
  assert.equal(await ach.send({ type: 'broadcast', event: 'done', payload: { from: 'a' } }), 'ok');
  const customs = () => raw.filter((m) => m.type === 'custom_event');
  await waitUntil('A\'s sentinel at B (node 2) and at /realtime on node 2', () =>
    got.b.some((p) => p.event === 'done') && customs().some((m) => m.event === 'done')).catch(failWith('broadcast from node 1'));
  assert.deepEqual(got.b, [{ type: 'broadcast', event: 'cursor', payload: { x: 1 } }, { type: 'broadcast', event: 'done', payload: { from: 'a' } }],
    'B got A\'s broadcast once, and not the refused one');
  assert.deepEqual(customs().map((m) => [m.collection, m.event, m.data]), [['room1', 'cursor', { x: 1 }], ['room1', 'done', { from: 'a' }]],
    '/realtime on node 2 got it once, as a custom event');

  // The other way: B's sentinel reaches A, after which A must have
  // nothing of its own (self: false) and the anonymous member on node 1
  // everything once.
  assert.equal(await bch.send({ type: 'broadcast', event: 'done', payload: { from: 'b' } }), 'ok');
  await waitUntil('B\'s broadcast at A and the anonymous member (node 1)', () =>
    [got.a, got.anon].every((l) => l.some((p) => p.payload.from === 'b'))).catch(failWith('broadcast from node 2'));
  assert.deepEqual(got.a, [{ type: 'broadcast', event: 'done', payload: { from: 'b' } }], 'A: only B\'s broadcast, none of its own');
  assert.deepEqual(got.anon.map((p) => p.payload), [{ x: 1 }, { from: 'a' }, { from: 'b' }], 'the anonymous member on node 1: each broadcast once');
  await waitUntil('B\'s broadcast at /realtime on node 2', () => customs().some((m) => m.data.from === 'b')).catch(failWith('raw'));
  assert.equal(customs().length, 3);
  assert.ok(!got.b.some((p) => p.payload.from === 'b'), 'B did not get its own (self: false)');
  for (const ch of [ach, bch, nch]) await ch.unsubscribe();
});

test('cluster: custom events (NOTIFY and pgrealtime.broadcast) reach members on both nodes once', opts(60_000), async () => {
  const got = [[], []];
  const chans = await Promise.all(nodes.map((n, i) => subscribe(client(n.base).channel('room1').on('broadcast', { event: '*' }, (p) => got[i].push(p)))));
  const raw = await rawSubscriber(nodes[0].base, ['room1'], annToken);

  // Live only: NOTIFY on the notify channel (README "Custom events").
  await pg.psql(`SELECT pg_notify('pgrealtime', '{"collection":"room1","event":"cursor","data":{"x":"notified"}}')`);
  await pg.psql(`SELECT pg_notify('pgrealtime', '{"collection":"room1","event":"done","data":{"x":"notify sentinel"}}')`);
  await waitUntil('the NOTIFY sentinel on both nodes', () => got.every((l) => l.some((p) => p.payload.x === 'notify sentinel'))).catch(failWith('NOTIFY'));
  for (const [i, l] of got.entries()) {
    assert.deepEqual(l, [{ type: 'broadcast', event: 'cursor', payload: { x: 'notified' } }, { type: 'broadcast', event: 'done', payload: { x: 'notify sentinel' } }], `node ${i + 1}`);
  }

  // Through the WAL: pgrealtime.broadcast (sql/setup.sql).
  for (const l of got) l.length = 0;
  await pg.psql(`SELECT pgrealtime.broadcast('room1', 'cursor', '{"x":"from sql"}'::jsonb)`);
  await pg.psql(`SELECT pgrealtime.broadcast('room1', 'done', '{"x":"sql sentinel"}'::jsonb)`);
  await waitUntil('the SQL sentinel on both nodes', () => got.every((l) => l.some((p) => p.payload.x === 'sql sentinel'))).catch(failWith('pgrealtime.broadcast'));
  for (const [i, l] of got.entries()) {
    assert.deepEqual(l, [{ type: 'broadcast', event: 'cursor', payload: { x: 'from sql' } }, { type: 'broadcast', event: 'done', payload: { x: 'sql sentinel' } }], `node ${i + 1}`);
  }
  // /realtime on node 1 saw all four, once, the WAL ones with a position.
  await waitUntil('the SQL sentinel at /realtime', () => raw.some((m) => m.type === 'custom_event' && m.data.x === 'sql sentinel')).catch(failWith('raw'));
  const customs = raw.filter((m) => m.type === 'custom_event');
  assert.deepEqual(customs.map((m) => [m.data.x, Boolean(m.position)]),
    [['notified', false], ['notify sentinel', false], ['from sql', true], ['sql sentinel', true]]);
  for (const ch of chans) await ch.unsubscribe();
});
