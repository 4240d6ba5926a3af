// Servers before contract v1.1 left `position` out of `subscribed` until
// they had published an event. No such server binary exists to run, so a
// scripted WebSocket server (ws) plays one: the client must then take
// positions from events, resume from them, and report a gap when it never
// saw one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer, WebSocket } from 'ws';
import { createClient } from '../dist/index.js';
import { waitFor, collector } from './harness.mjs';

const ev = (id, position) => JSON.stringify({ type: 'record_event', collection: 'posts', action: 'create', record_id: String(id), record: { id }, timestamp: '2026-01-01T00:00:00Z', position });

// oldServer answers every subscribe without a position and then runs
// script[n](socket, request) for the n-th subscribe it receives.
async function oldServer(t, script) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  t.after(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r); }));
  const requests = [];
  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ type: 'connected', connection_id: 'old', server_time: new Date().toISOString(), limits: { max_subscriptions: 100, subscribe_rate: 10, max_message_bytes: 65536 } }));
    ws.on('message', (d) => {
      const m = JSON.parse(d);
      if (m.type !== 'subscribe') return;
      requests.push(m);
      ws.send(JSON.stringify({ type: 'subscribed', id: m.id, topics: m.topics }));
      script[requests.length - 1]?.(ws, m);
    });
  });
  return { url: `ws://127.0.0.1:${wss.address().port}/realtime`, requests };
}

test('positions from events when subscribed has none; resume from them without duplicates', async (t) => {
  const srv = await oldServer(t, [
    (ws) => { ws.send(ev(1, '0/10:1')); ws.send(ev(2, '0/20:1')); setTimeout(() => ws.terminate(), 50); },
    // The replay after since 0/20:1 repeats 0/20:1 (an old server's off-by-one): dropped.
    (ws) => { ws.send(ev(2, '0/20:1')); ws.send(ev(3, '0/30:1')); },
  ]);
  const c = collector();
  const rt = createClient(srv.url, { WebSocket, minDelay: 10 });
  t.after(() => rt.close());
  const sub = rt.subscribe('posts.*', c.opts);
  await waitFor('row 3', () => c.ids.includes(3));
  assert.deepEqual(c.ids, [1, 2, 3]);
  assert.equal(sub.position, '0/30:1');
  assert.deepEqual(srv.requests.map((m) => m.since), [undefined, '0/20:1']);
  assert.deepEqual(c.gaps, []);
});

test('live without ever learning a position: onGap after the reconnect', async (t) => {
  const srv = await oldServer(t, [(ws) => setTimeout(() => ws.terminate(), 50), () => {}]);
  const c = collector();
  const rt = createClient(srv.url, { WebSocket, minDelay: 10 });
  t.after(() => rt.close());
  rt.subscribe('posts.*', c.opts);
  await waitFor('subscribed again', () => srv.requests.length === 2 && c.lives === 2);
  assert.deepEqual(c.gaps, [{}], 'events published while disconnected may be missing: said once');
  assert.deepEqual(srv.requests.map((m) => m.since), [undefined, undefined]);
});
