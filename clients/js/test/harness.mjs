// Test harness: a throwaway Postgres (browsertest/testdb, which reuses
// internal/pgcluster) and the real pgrealtime binary as child processes.
//
// Environment: PGREALTIME_BIN uses that binary instead of building one;
// HARNESS_KEEP=1 keeps the temp dir (server logs).
import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { WebSocket as WS } from 'ws';

const execFileP = promisify(execFile);
export const jsRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repo = path.resolve(jsRoot, '../..');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref());

export function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return unsigned + '.' + createHmac('sha256', secret).update(unsigned).digest('base64url');
}

// token returns an HS256 token for role admin that expires in `seconds`.
export const token = (secret, seconds = 3600, sub = 'jsclient') =>
  jwt(secret, { sub, role: 'admin', exp: Math.floor(Date.now() / 1000) + seconds });

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function goBuild(out, pkg) {
  await execFileP('go', ['build', '-o', out, pkg], {
    cwd: repo, env: { ...process.env, PATH: '/usr/local/go/bin:' + process.env.PATH }, maxBuffer: 16 << 20,
  });
}

// waitFor polls cond (sync or async) until it is truthy or ms pass; the
// error says what was awaited.
export async function waitFor(what, cond, ms = 30_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

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

export class Server {
  constructor(bin, args, logPath, port) {
    Object.assign(this, { bin, args, logPath, port, child: null });
    this.http = `http://127.0.0.1:${port}`;
    this.url = `ws://127.0.0.1:${port}/realtime`;
  }

  async start() {
    const log = fs.openSync(this.logPath, 'a');
    fs.writeSync(log, `\n=== start ${new Date().toISOString()} ${this.args.join(' ')}\n`);
    this.child = spawn(this.bin, this.args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const child = this.child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    let last = 'no answer';
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgrealtime exited before it was ready; log:\n${this.tail()}`);
      try {
        const r = await fetch(this.http + '/readyz', { signal: AbortSignal.timeout(2000) });
        last = r.status + ' ' + (await r.text());
        if (r.ok) return;
      } catch (e) { last = e.message; }
      await sleep(100);
    }
    throw new Error(`pgrealtime not ready within 60 s (last /readyz: ${last}); log:\n${this.tail()}`);
  }

  async stop(signal) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return null;
    this.child.kill(signal);
    const res = await Promise.race([this.exited, deadline(15_000).then(() => null)]);
    if (res === null) { this.child.kill('SIGKILL'); return { code: null, signal: 'SIGKILL (timeout)' }; }
    return res;
  }

  tail(n = 3000) {
    try { return fs.readFileSync(this.logPath, 'utf8').slice(-n); } catch { return ''; }
  }
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
