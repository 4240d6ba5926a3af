// The unmodified @supabase/supabase-js client (Node, with ws) against
// pgrealtime's Supabase Realtime endpoint (/realtime/v1/websocket), the
// real binary and a throwaway Postgres. PROTOCOL.md section 9.
//
// Environment: PGREALTIME_BIN uses that binary instead of building one;
// SUPABASETEST_KEEP=1 keeps the temp dir (logs); SUPABASETEST_DEBUG=1 logs
// the client's frames.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';
import { startPostgres, Server, freePort, goBuild, jwtHS256, waitUntil, sleep } from '../testharness/harness.mjs';

const secret = 'supabasetest-secret-0123456789abcdef';
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
  notes:
    read: "auth.sub == record.owner"
  audit:logins:
    read: "true"
  room1:
    read: "true"
    broadcast: "auth.sub != ''"
default:
  read: "auth.role == 'admin'"
`;

let tmp, pg, server, base;
const clients = [];

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-supabasetest-'));
  const testdb = path.join(tmp, 'testdb');
  const bin = process.env.PGREALTIME_BIN ? path.resolve(process.env.PGREALTIME_BIN) : path.join(tmp, 'pgrealtime');
  await Promise.all([
    goBuild(testdb, './browsertest/testdb'),
    process.env.PGREALTIME_BIN ? Promise.resolve() : goBuild(bin, './cmd/pgrealtime'),
  ]);
  pg = await startPostgres(testdb);
  await pg.psql(`
    CREATE TABLE todos (id bigserial PRIMARY KEY, title text NOT NULL, done bool DEFAULT false,
      user_id text, created_at timestamptz DEFAULT '2026-01-02 03:04:05.678901+00', due date, at timestamp,
      tags text[], scores int4[], meta jsonb, price numeric, ratio float8, data bytea, secret text);
    CREATE TABLE notes (id int PRIMARY KEY, owner text NOT NULL, body text);
    CREATE SCHEMA audit;
    CREATE TABLE audit.logins (id serial PRIMARY KEY, who text);`);
  fs.writeFileSync(path.join(tmp, 'rules.yaml'), rulesYAML);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = new Server(bin, ['serve', '--database-url', pg.url, '--jwt-secret', secret,
    '--config', path.join(tmp, 'rules.yaml'), '--listen', `127.0.0.1:${port}`,
    '--log-format', 'console', '--log-level', 'debug'], path.join(tmp, 'pgrealtime.log'));
  await server.start(base);
});

after(async () => {
  for (const c of clients) { try { await c.removeAllChannels(); c.realtime.disconnect(); } catch { /* closing anyway */ } }
  if (server) await server.stop('SIGKILL');
  if (pg) await pg.stop();
  if (tmp && process.env.SUPABASETEST_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
});

// client makes a supabase-js client for the server, as an app would, with
// the given key (the anon key by default) and serializer.
function client({ key = anonKey, vsn } = {}) {
  const realtime = { transport: ws };
  if (vsn) realtime.vsn = vsn;
  if (process.env.SUPABASETEST_DEBUG === '1') realtime.logger = (kind, msg, data) => console.error(kind, msg, JSON.stringify(data));
  const c = createClient(base, key, { auth: { persistSession: false, autoRefreshToken: false }, realtime });
  clients.push(c);
  return c;
}

// subscribe subscribes ch and resolves when it is SUBSCRIBED (rejects on
// an error, with the server's reason).
function subscribe(ch) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${ch.topic}: not subscribed within 20 s`)), 20_000);
    ch.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') { clearTimeout(timer); resolve(ch); }
      if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') { clearTimeout(timer); reject(err || new Error(status)); }
    });
  });
}

const failWith = (what) => (e) => { throw new Error(`${what}: ${e.message}\n--- pgrealtime log (tail) ---\n${server.tail()}`); };

for (const vsn of ['1.0.0', '2.0.0']) {
  test(`vsn ${vsn}: INSERT, UPDATE, DELETE with event "*" give Supabase's payloads and JS values`, { timeout: 60_000 }, async () => {
    const supabase = client({ vsn });
    const got = [];
    const ch = supabase.channel(`all-${vsn}`)
      .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (p) => got.push(p));
    await subscribe(ch).catch(failWith('subscribe'));
    assert.equal(supabase.realtime.vsn, vsn);
    const id = Number(await pg.psql(`INSERT INTO todos (title, done, user_id, due, at, tags, scores, meta, price, ratio, data, secret)
      VALUES ('first', true, 'ann', '2026-02-03', '2026-02-03 04:05:06.5', '{x,"y z"}', '{1,2}', '{"k":[1,"two"]}', 12.50, 0.25, '\\x01ff', 'hidden')
      RETURNING id`));
    await pg.psql(`UPDATE todos SET title = 'second', done = false WHERE id = ${id}`);
    await pg.psql(`DELETE FROM todos WHERE id = ${id}`);
    await waitUntil('3 changes', () => got.length >= 3).catch(failWith('changes'));
    await sleep(100);
    assert.equal(got.length, 3, 'nothing else');
    const [ins, upd, del] = got;
    for (const p of got) {
      assert.equal(p.schema, 'public');
      assert.equal(p.table, 'todos');
      assert.equal(p.errors, null);
      assert.match(p.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    assert.deepEqual([ins.eventType, upd.eventType, del.eventType], ['INSERT', 'UPDATE', 'DELETE']);
    // The values realtime-js makes of what Supabase (to_jsonb) would send.
    assert.deepEqual(ins.new, {
      id, title: 'first', done: true, user_id: 'ann', created_at: '2026-01-02T03:04:05.678901+00:00',
      due: '2026-02-03', at: '2026-02-03T04:05:06.5', tags: ['x', 'y z'], scores: [1, 2], meta: { k: [1, 'two'] },
      price: 12.5, ratio: 0.25, data: '\\x01ff',
    }, 'secret is omitted (omit_columns)');
    assert.deepEqual(ins.old, {});
    assert.equal(upd.new.title, 'second');
    assert.equal(upd.new.done, false);
    assert.deepEqual(upd.old, { id }, 'old_record: the key (replica identity default)');
    assert.deepEqual(del.new, {});
    assert.deepEqual(del.old, { id });
    await supabase.removeChannel(ch);
  });
}

test('each single event reaches only its binding', { timeout: 60_000 }, async () => {
  const supabase = client();
  const got = { INSERT: [], UPDATE: [], DELETE: [] };
  const channels = [];
  for (const event of Object.keys(got)) {
    channels.push(await subscribe(supabase.channel(`single-${event}`)
      .on('postgres_changes', { event, schema: 'public', table: 'todos' }, (p) => got[event].push(p))).catch(failWith(event)));
  }
  const id = Number(await pg.psql(`INSERT INTO todos (title) VALUES ('single') RETURNING id`));
  await pg.psql(`UPDATE todos SET title = 'single 2' WHERE id = ${id}`);
  await pg.psql(`DELETE FROM todos WHERE id = ${id}`);
  await waitUntil('one of each', () => got.INSERT.length && got.UPDATE.length && got.DELETE.length).catch(failWith('events'));
  await sleep(200);
  for (const [event, list] of Object.entries(got)) {
    assert.equal(list.length, 1, `${event} binding got one change`);
    assert.equal(list[0].eventType, event);
  }
  for (const ch of channels) await supabase.removeChannel(ch);
});

test('two bindings on one channel, one of them on a table in another schema', { timeout: 60_000 }, async () => {
  const supabase = client();
  const todos = [], logins = [], all = [];
  const ch = supabase.channel('two')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => todos.push(p))
    .on('postgres_changes', { event: '*', schema: 'audit', table: 'logins' }, (p) => logins.push(p))
    .on('postgres_changes', { event: 'INSERT', schema: 'audit' }, (p) => all.push(p));
  await subscribe(ch).catch(failWith('subscribe'));
  const bindings = ch.bindings.postgres_changes.map((b) => b.id);
  assert.equal(new Set(bindings).size, 3, 'one id per binding, from the join reply');
  await pg.psql(`INSERT INTO audit.logins (who) VALUES ('ann')`);
  await pg.psql(`INSERT INTO todos (title) VALUES ('two bindings')`);
  await pg.psql(`UPDATE audit.logins SET who = 'bob'`);
  await waitUntil('all changes', () => todos.length >= 1 && logins.length >= 2 && all.length >= 1).catch(failWith('events'));
  await sleep(200);
  assert.equal(todos.length, 1);
  assert.equal(todos[0].new.title, 'two bindings');
  assert.deepEqual(logins.map((p) => [p.schema, p.table, p.eventType, p.new.who]), [['audit', 'logins', 'INSERT', 'ann'], ['audit', 'logins', 'UPDATE', 'bob']]);
  assert.equal(all.length, 1, 'the schema-wide INSERT binding');
  assert.equal(all[0].table, 'logins');
  await supabase.removeChannel(ch);
});

test('select sends only the selected columns and the key', { timeout: 60_000 }, async () => {
  const supabase = client();
  const got = [], full = [];
  const ch = supabase.channel('select')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos', select: ['title'] }, (p) => got.push(p))
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => full.push(p));
  await subscribe(ch).catch(failWith('subscribe with select'));
  const id = Number(await pg.psql(`INSERT INTO todos (title, user_id) VALUES ('selected', 'ann') RETURNING id`));
  await waitUntil('both', () => got.length >= 1 && full.length >= 1).catch(failWith('events'));
  assert.deepEqual(got[0].new, { id, title: 'selected' });
  assert.equal(full[0].new.user_id, 'ann', 'the other binding still gets every column');
  await supabase.removeChannel(ch);
});

test('a filter delivers only matching rows', { timeout: 60_000 }, async () => {
  // Needs column filters in the broker (PROTOCOL section 2).
  const supabase = client();
  const ann = [], all = [], paid = [];
  const ch = supabase.channel('filtered')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'todos', filter: 'user_id=eq.ann' }, (p) => ann.push(p))
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => all.push(p))
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos', filter: 'price=gt.100' }, (p) => paid.push(p));
  await subscribe(ch).catch(failWith('subscribe with a filter'));
  assert.deepEqual(ch.bindings.postgres_changes.map((b) => b.filter.filter), ['user_id=eq.ann', undefined, 'price=gt.100']);
  const ids = (await pg.psql(`INSERT INTO todos (title, user_id, price) VALUES ('for bob', 'bob', 500), ('for ann', 'ann', 5), ('for nobody', NULL, NULL) RETURNING id`)).split('\n').map(Number);
  await pg.psql(`UPDATE todos SET title = 'for ann, edited' WHERE id = ${ids[1]}`);
  await pg.psql(`UPDATE todos SET title = 'for bob, edited' WHERE id = ${ids[0]}`);
  await waitUntil('the filtered changes', () => ann.length >= 2 && all.length >= 3 && paid.length >= 1).catch(failWith('events'));
  await sleep(300);
  assert.deepEqual(ann.map((p) => [p.eventType, p.new.title]), [['INSERT', 'for ann'], ['UPDATE', 'for ann, edited']]);
  assert.deepEqual(all.map((p) => p.new.title), ['for bob', 'for ann', 'for nobody'], 'the binding without a filter gets every insert');
  assert.deepEqual(paid.map((p) => p.new.title), ['for bob'], 'a number compares as a number');
  await supabase.removeChannel(ch);
});

test('rules: each user sees only their own rows', { timeout: 60_000 }, async () => {
  const ann = client(), bob = client();
  ann.realtime.setAuth(annToken);
  bob.realtime.setAuth(bobToken);
  const seen = { ann: [], bob: [] };
  await subscribe(ann.channel('notes-ann').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => seen.ann.push(p.new.body))).catch(failWith('ann'));
  await subscribe(bob.channel('notes-bob').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => seen.bob.push(p.new.body))).catch(failWith('bob'));
  await pg.psql(`INSERT INTO notes VALUES (1, 'ann', 'a1'), (2, 'bob', 'b1'), (3, 'ann', 'a2'), (4, 'carol', 'c1')`);
  await waitUntil('both', () => seen.ann.length >= 2 && seen.bob.length >= 1).catch(failWith('events'));
  await sleep(300);
  assert.deepEqual(seen, { ann: ['a1', 'a2'], bob: ['b1'] });

  // Without a token the notes rule cannot hold: the join says so.
  const anon = client();
  await assert.rejects(subscribe(anon.channel('notes-anon').on('postgres_changes', { event: '*', schema: 'public', table: 'notes' }, () => {})));
  // An unverifiable token is a join error, never a silent anonymous.
  const forged = client({ key: jwtHS256('not-the-secret', { role: 'anon', exp: hour() }) });
  await assert.rejects(subscribe(forged.channel('forged').on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, () => {})), /invalid token/);
});

test('a token refresh with supabase.realtime.setAuth changes what the channel sees', { timeout: 60_000 }, async () => {
  const supabase = client();
  supabase.realtime.setAuth(annToken);
  const seen = [];
  await subscribe(supabase.channel('refresh').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => seen.push(p.new.body))).catch(failWith('subscribe'));
  await pg.psql(`INSERT INTO notes VALUES (10, 'ann', 'ann before'), (11, 'bob', 'bob before')`);
  await waitUntil('ann before', () => seen.length >= 1).catch(failWith('before'));
  await supabase.realtime.setAuth(bobToken);
  // The access_token message is on its way; a note only bob may read
  // tells when it has taken effect.
  let n = 20;
  await waitUntil('bob identity in effect', async () => {
    await pg.psql(`INSERT INTO notes VALUES (${n}, 'bob', 'probe ${n}')`);
    n++;
    await sleep(100);
    return seen.some((b) => b.startsWith('probe'));
  }).catch(failWith('refresh'));
  await pg.psql(`INSERT INTO notes VALUES (100, 'ann', 'ann after'), (101, 'bob', 'bob after')`);
  await waitUntil('bob after', () => seen.includes('bob after')).catch(failWith('after'));
  await sleep(300);
  assert.ok(!seen.includes('bob before'), 'before the refresh, bob\'s rows were not delivered');
  assert.ok(!seen.includes('ann after'), 'after the refresh, ann\'s rows are not delivered');
});

test('broadcast both ways, with self and ack, and the broadcast rule', { timeout: 60_000 }, async () => {
  // A /realtime subscriber of collection room1, to see client broadcasts
  // arrive there as custom events.
  const raw = new ws(base.replace('http', 'ws') + '/realtime?access_token=' + annToken);
  const rawGot = [];
  raw.on('message', (d) => rawGot.push(JSON.parse(String(d))));
  await waitUntil('raw connected', () => rawGot.some((m) => m.type === 'connected'));
  raw.send(JSON.stringify({ type: 'subscribe', id: '1', topics: ['room1'] }));
  await waitUntil('raw subscribed', () => rawGot.some((m) => m.type === 'subscribed'));

  const sender = client(), member = client(), selfish = client();
  sender.realtime.setAuth(annToken);
  selfish.realtime.setAuth(bobToken);
  const got = { sender: [], member: [], selfish: [] };
  const sch = await subscribe(sender.channel('room1', { config: { broadcast: { ack: true } } })
    .on('broadcast', { event: 'cursor' }, (p) => got.sender.push(p)));
  await subscribe(member.channel('room1').on('broadcast', { event: '*' }, (p) => got.member.push(p)));
  const fch = await subscribe(selfish.channel('room1', { config: { broadcast: { self: true } } })
    .on('broadcast', { event: 'cursor' }, (p) => got.selfish.push(p)));

  // Client → everyone: acked, not echoed to the sender (self: false).
  assert.equal(await sch.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } }), 'ok');
  await waitUntil('member and /realtime got it', () => got.member.length >= 1 && rawGot.some((m) => m.type === 'custom_event'));
  assert.deepEqual(got.member[0], { type: 'broadcast', event: 'cursor', payload: { x: 1 } });
  const ce = rawGot.find((m) => m.type === 'custom_event');
  assert.equal(ce.collection, 'room1');
  assert.equal(ce.event, 'cursor');
  assert.deepEqual(ce.data, { x: 1 });
  // self: true echoes to the sender.
  await fch.send({ type: 'broadcast', event: 'cursor', payload: { x: 2 } });
  await waitUntil('selfish sees its own', () => got.selfish.some((p) => p.payload.x === 2));

  // Server → clients: a custom event of collection room1 (NOTIFY).
  await pg.psql(`SELECT pg_notify('pgrealtime', '{"collection":"room1","event":"cursor","data":{"x":3}}')`);
  await waitUntil('server event at every member', () => [got.sender, got.member, got.selfish].every((l) => l.some((p) => p.payload.x === 3)));
  await sleep(200);
  assert.ok(!got.sender.some((p) => p.payload.x === 1), 'the sender did not get its own broadcast (self: false)');

  // The broadcast rule: anonymous (no sub) may not send; with ack the
  // send says error.
  const anon = client();
  const ach = await subscribe(anon.channel('room1', { config: { broadcast: { ack: true } } }));
  assert.equal(await ach.send({ type: 'broadcast', event: 'cursor', payload: { x: 4 } }), 'error');
  await sleep(300);
  assert.ok(!got.member.some((p) => p.payload.x === 4), 'a refused broadcast reaches nobody');
  raw.close();
});

test('presence: a join with presence succeeds with an empty state', { timeout: 30_000 }, async () => {
  const supabase = client();
  let synced = false;
  const ch = supabase.channel('lobby', { config: { presence: { key: 'ann' } } })
    .on('presence', { event: 'sync' }, () => { synced = true; });
  await subscribe(ch).catch(failWith('presence join'));
  assert.equal(await ch.track({ online: true }), 'ok');
  await waitUntil('presence sync', () => synced);
  assert.deepEqual(ch.presenceState(), {});
});

test('after pgrealtime restarts the client rejoins and receives new changes', { timeout: 120_000 }, async () => {
  const supabase = client();
  const got = [];
  const statuses = [];
  supabase.channel('restart')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (p) => got.push(p.new.title))
    .subscribe((s) => statuses.push(s));
  await waitUntil('subscribed', () => statuses.includes('SUBSCRIBED'));
  await pg.psql(`INSERT INTO todos (title) VALUES ('before restart')`);
  await waitUntil('before restart', () => got.includes('before restart')).catch(failWith('before'));
  const res = await server.stop('SIGTERM');
  assert.equal(res && res.code, 0, 'clean exit');
  // Written while pgrealtime is down: supabase-js does not resume, so a
  // rejoin does not replay it (see README).
  await pg.psql(`INSERT INTO todos (title) VALUES ('while down')`);
  const subscribedBefore = statuses.filter((s) => s === 'SUBSCRIBED').length;
  await server.start(base);
  await waitUntil('rejoined', () => statuses.filter((s) => s === 'SUBSCRIBED').length > subscribedBefore, 60_000).catch(failWith('rejoin'));
  await pg.psql(`INSERT INTO todos (title) VALUES ('after restart')`);
  await waitUntil('after restart', () => got.includes('after restart')).catch(failWith('after'));
  assert.equal(got.filter((t) => t === 'before restart').length, 1, 'no duplicate');
});
