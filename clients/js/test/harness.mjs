// Test harness: a throwaway Postgres (browsertest/testdb, which reuses
// internal/pgcluster) and the real pgrealtime binary as child processes.
//
// Environment: PGREALTIME_BIN uses that binary instead of building one;
// HARNESS_KEEP=1 keeps the temp dir (server logs).
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { WebSocket as WS } from 'ws';
import { deadline, jwtHS256, freePort, goBuild, waitUntil, Server as ProcessServer } from '../../../testharness/harness.mjs';

const execFileP = promisify(execFile);
export const jsRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repo = path.resolve(jsRoot, '../..');

export { jwtHS256 as jwt };

// token returns an HS256 token for role admin that expires in `seconds`.
export const token = (secret, seconds = 3600, sub = 'jsclient') =>
  jwtHS256(secret, { sub, role: 'admin', exp: Math.floor(Date.now() / 1000) + seconds });

// waitFor polls cond (sync or async) until it is truthy or ms pass; the
// error says what was awaited.
export const waitFor = (what, cond, ms = 30_000) => waitUntil(what, cond, ms);

// Env is one Postgres plus the binaries; servers() starts pgrealtime on it.
export async function setup(t) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-jsclient-'));
  const cleanups = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) { try { await f(); } catch (e) { console.error('cleanup:', e.message); } }
    if (process.env.HARNESS_KEEP !== '1') fs.rmSync(tmp, { recursive: true, force: true });
    else console.error('kept', tmp);
  });
  const testdbBin = path.join(tmp, 'testdb');
  const bin = process.env.PGREALTIME_BIN ? path.resolve(process.env.PGREALTIME_BIN) : path.join(tmp, 'pgrealtime');
  await Promise.all([
    goBuild(testdbBin, './browsertest/testdb'),
    process.env.PGREALTIME_BIN ? null : goBuild(bin, './cmd/pgrealtime'),
  ]);

  const child = spawn(testdbBin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  cleanups.push(async () => { child.stdin.end(); await Promise.race([exited, deadline(60_000)]); });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('testdb: no URL within 120 s')), 120_000);
    readline.createInterface({ input: child.stdout }).once('line', (l) => { clearTimeout(timer); resolve(JSON.parse(l)); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error('testdb exited with ' + code)); });
  });
  const psqlBin = fs.existsSync(info.psql) ? info.psql : 'psql';
  const psql = async (sql) => {
    const { stdout } = await execFileP(psqlBin, ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', info.url, '-c', sql]);
    return stdout.trim();
  };
  // psqlScript runs many statements in one session (each its own transaction).
  const psqlScript = (sql) => new Promise((resolve, reject) => {
    const p = spawn(psqlBin, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', info.url], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error('psql: ' + err))));
    p.stdin.end(sql);
  });

  let n = 0;
  // server starts pgrealtime with its own slot; extra flags in args.
  const server = async (args = []) => {
    const port = await freePort();
    const s = new Server(bin, ['serve', '--database-url', info.url, '--slot', `jsclient_${process.pid}_${++n}`,
      '--listen', `127.0.0.1:${port}`, '--log-format', 'console', '--log-level', 'debug', ...args],
    path.join(tmp, `pgrealtime-${n}.log`), port);
    cleanups.push(() => s.stop('SIGKILL'));
    await s.start();
    return s;
  };
  return { psql, psqlScript, server, tmp, cleanups };
}

// Server is the shared one, addressed by its port.
export class Server extends ProcessServer {
  constructor(bin, args, logPath, port) {
    super(bin, args, logPath);
    Object.assign(this, { port, http: `http://127.0.0.1:${port}`, url: `ws://127.0.0.1:${port}/realtime` });
  }

  start() { return super.start(this.http); }
}

// collector records what a subscription delivers: ids (record_id as
// numbers), positions, gaps and errors.
export function collector() {
  const c = { ids: [], positions: [], events: [], gaps: [], errors: [], lives: 0 };
  c.opts = {
    onEvent: (e) => { c.events.push(e); c.ids.push(Number(e.record_id)); c.positions.push(e.position); },
    onGap: (g) => c.gaps.push(g),
    onError: (e) => c.errors.push(e),
    onLive: () => { c.lives++; },
  };
  return c;
}

// inOrderOnce asserts ids are exactly 1..n (each once, ascending).
export function expectSequence(assert, ids, n, what) {
  const dups = ids.filter((x, i) => ids.indexOf(x) !== i);
  assert.deepEqual(dups, [], `${what}: no duplicates`);
  const missing = [];
  for (let i = 1; i <= n; i++) if (!ids.includes(i)) missing.push(i);
  assert.deepEqual(missing, [], `${what}: nothing missing`);
  assert.deepEqual(ids, Array.from({ length: n }, (_, i) => i + 1), `${what}: in order`);
}

// WebSocket is ws's, logging every frame to stderr when JSCLIENT_DEBUG=1.
export const WebSocket = process.env.JSCLIENT_DEBUG !== '1' ? WS : class extends WS {
  constructor(u) {
    super(u);
    const id = Math.random().toString(36).slice(2, 6);
    this.on('message', (d) => console.error(id, '<', String(d).slice(0, 200)));
    this.on('close', (c) => console.error(id, 'closed', c));
  }
  send(x) { console.error(this.url?.slice(-4), '>', String(x).slice(0, 200)); super.send(x); }
};

// step runs a subtest; JSCLIENT_ONLY=<part of its name> skips the others.
export const step = (t, name, fn) => {
  const only = process.env.JSCLIENT_ONLY;
  return t.test(name, { skip: only && !name.includes(only) ? 'JSCLIENT_ONLY' : false }, fn);
};
