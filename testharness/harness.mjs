// Shared helpers of the node test suites (browsertest, supabasetest,
// clients/js/test): a throwaway Postgres (through browsertest/testdb, which
// reuses internal/pgcluster), a throwaway redis-server, the real pgrealtime
// binary as a child process (one node, or a cluster of nodes on one Postgres
// and one Redis), HS256 tokens, and waiting with deadlines. Node built-ins
// only. redis-server and pgrealtime processes started here are killed when
// the test process exits (normally, by an exception or by SIGINT, SIGTERM or
// SIGHUP); testdb stops its Postgres when its stdin closes.

import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

export const execFileP = promisify(execFile);
export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// children are the processes to kill when this process exits (Node cannot
// ask the kernel for a parent-death signal, as internal/redistest does).
const children = new Set();
function killOnExit(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
}
// tempDirs are removed then too (those of redis-server).
const tempDirs = new Set();
function killChildren() {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
  for (const d of tempDirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* best effort */ } }
}
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, function onSignal() {
    killChildren();
    // Keep the signal's default (exit) unless someone else handles it
    // (node --test does, and then exits).
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// For Promise.race deadlines: an unref'd timer does not keep node alive.
export const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref());

export function jwtHS256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return unsigned + '.' + createHmac('sha256', secret).update(unsigned).digest('base64url');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

export async function goBuild(out, pkg) {
  await execFileP('go', ['build', '-o', out, pkg], {
    cwd: repo, env: { ...process.env, PATH: '/usr/local/go/bin:' + process.env.PATH }, maxBuffer: 16 << 20,
  });
}

// Starts browsertest/testdb (built to bin) and returns {url, psql(sql), stop()}.
export async function startPostgres(bin) {
  const child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('testdb: no URL within 120 s')), 120_000);
    rl.once('line', (l) => { clearTimeout(timer); resolve(JSON.parse(l)); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error('testdb exited with ' + code)); });
    child.once('error', (err) => { clearTimeout(timer); reject(new Error(`testdb: ${err.message}`)); });
  });
  const exited = new Promise((r) => child.once('exit', r));
  const psqlBin = fs.existsSync(info.psql) ? info.psql : 'psql';
  return {
    ...info,
    async psql(sql) {
      const { stdout } = await execFileP(psqlBin, ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', info.url, '-c', sql]);
      return stdout.trim();
    },
    async stop() { child.stdin.end(); await Promise.race([exited, deadline(60_000)]); },
  };
}

// Server is pgrealtime as a child process, logging to logPath.
export class Server {
  constructor(bin, args, logPath) { Object.assign(this, { bin, args, logPath, child: null }); }

  // start starts the process and waits (up to ms) until baseURL/readyz
  // answers 200.
  async start(baseURL, ms = 60_000) {
    const log = fs.openSync(this.logPath, 'a');
    fs.writeSync(log, `\n=== start ${new Date().toISOString()} ${this.args.join(' ')}\n`);
    this.child = spawn(this.bin, this.args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const child = this.child;
    killOnExit(child);
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    let lastStatus = 'no answer';
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`pgrealtime exited (${child.exitCode ?? child.signalCode}) before it was ready; log:\n${this.tail()}`);
      }
      try {
        const r = await fetch(baseURL + '/readyz', { signal: AbortSignal.timeout(2000) });
        lastStatus = r.status + ' ' + (await r.text());
        if (r.ok) return;
      } catch (e) { lastStatus = e.message; }
      await sleep(100);
    }
    throw new Error(`pgrealtime not ready within ${ms / 1000} s (last /readyz: ${lastStatus}); log:\n${this.tail()}`);
  }

  async stop(signal) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return null;
    this.child.kill(signal);
    const res = await Promise.race([this.exited, deadline(15_000).then(() => null)]);
    if (res === null) { this.child.kill('SIGKILL'); return { code: null, signal: 'SIGKILL (timeout)' }; }
    return res;
  }

  tail(n = 4000) {
    try { const s = fs.readFileSync(this.logPath, 'utf8'); return s.slice(-n); } catch { return ''; }
  }
}

// waitUntil polls cond (sync or async) until it is truthy or ms pass; the
// error names what was awaited.
export async function waitUntil(what, cond, ms = 20_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

// Redis
// -----

export const redisServerEnv = 'PGREALTIME_TEST_REDIS_SERVER';

// findRedisServer returns the redis-server to run (as internal/redistest
// does: $PGREALTIME_TEST_REDIS_SERVER, else PATH, else /usr/bin,
// /usr/local/bin, /usr/sbin), or null when there is none. Under CI=true a
// missing redis-server throws instead: there it is a failure, not a skip.
export function findRedisServer() {
  const isFile = (p) => { try { return fs.statSync(p).isFile(); } catch { return false; } };
  const explicit = process.env[redisServerEnv];
  let found = null;
  if (explicit) {
    found = isFile(explicit) ? explicit : null;
  } else {
    const dirs = (process.env.PATH || '').split(path.delimiter).filter(Boolean).concat(['/usr/bin', '/usr/local/bin', '/usr/sbin']);
    found = dirs.map((d) => path.join(d, 'redis-server')).find(isFile) || null;
  }
  if (!found && process.env.CI === 'true') throw new Error(redisMissing(explicit));
  return found;
}

function redisMissing(explicit) {
  return 'redis-server not found' + (explicit ? ` (${redisServerEnv}=${explicit} is not a file)` : '') +
    `: install it with \`apt-get install -y redis-server\` (Debian/Ubuntu), put it on PATH, or set ${redisServerEnv}`;
}

// redisPing resolves when the server at port answers PING with +PONG (a
// server still loading its files answers -LOADING), rejects otherwise.
function redisPing(port, ms) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (err) => { sock.destroy(); if (err) reject(err); else resolve(); };
    sock.setTimeout(ms, () => done(new Error('no answer to PING')));
    sock.once('error', done);
    sock.once('connect', () => sock.write('*1\r\n$4\r\nPING\r\n'));
    sock.on('data', (d) => {
      got += d;
      if (got.includes('\r\n')) done(got === '+PONG\r\n' ? null : new Error(`PING answered ${JSON.stringify(got.trim())}`));
    });
  });
}

// startRedis starts a throwaway redis-server on a free loopback port, without
// persistence (--save '' --appendonly no), its files in its own temp dir, and
// resolves to {port, url, dir, tail(), stop()} once it answers PING. stop()
// ends it and removes its dir; the process is killed anyway when this
// process exits. Throws when there is no redis-server (see
// findRedisServer: a test file should skip first when it returns null).
export async function startRedis({ bin = findRedisServer(), ms = 30_000 } = {}) {
  if (!bin) throw new Error(redisMissing(process.env[redisServerEnv]));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgrealtime-redis-'));
  tempDirs.add(dir);
  const logFile = path.join(dir, 'redis.log');
  const tail = (n = 4000) => { try { return fs.readFileSync(logFile, 'utf8').slice(-n); } catch { return ''; } };
  // A free port can be taken by someone else before redis-server binds it:
  // try a few.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(bin, ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--logfile', logFile,
      '--daemonize', 'no', '--save', '', '--appendonly', 'no'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    killOnExit(child);
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((r) => {
      child.once('exit', (code, signal) => r({ code, signal }));
      child.once('error', (err) => { stderr += err.message; r({ code: null, signal: null }); });
    });
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        if (await Promise.race([exited, deadline(10_000).then(() => null)]) === null) child.kill('SIGKILL');
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
      tempDirs.delete(dir);
    };
    const until = Date.now() + ms;
    let last = 'not started';
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) {
        await exited;
        const out = (tail() + stderr).trim();
        if (attempt < 5 && /in use/i.test(out)) break;
        await stop();
        throw new Error(`redis-server exited at start (${child.exitCode ?? child.signalCode}); log:\n${out}`);
      }
      try {
        await redisPing(port, 500);
        return { port, url: `redis://127.0.0.1:${port}/0`, dir, tail, stop };
      } catch (e) { last = e.message; }
      if (Date.now() > until) {
        await stop();
        throw new Error(`redis-server did not answer PING within ${ms / 1000} s (${last}); log:\n${tail()}${stderr}`);
      }
      await sleep(20);
    }
    fs.writeFileSync(logFile, '');
  }
}

// Cluster
// -------

// startCluster starts n pgrealtime nodes (PROTOCOL section 8) on one
// Postgres and one Redis: `serve --database-url <databaseURL> --redis-url
// <redisURL> --node-id node1…nodeN --slot <slot> --listen 127.0.0.1:<own
// port>`, then args (rules, secrets, logging), each logging to
// <dir>/node<i>.log. It resolves, once /readyz answers 200 on every node
// (within ms), to a list of {id, base, server}; when a node does not get
// ready it stops every node and throws with that node's /readyz answer and
// log.
export async function startCluster({ bin, n = 2, databaseURL, redisURL, slot = 'pgrealtime', args = [], dir, ms = 60_000 }) {
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    const port = await freePort();
    const id = `node${i}`;
    const server = new Server(bin, ['serve', '--database-url', databaseURL, '--redis-url', redisURL, '--node-id', id,
      '--slot', slot, '--listen', `127.0.0.1:${port}`, ...args], path.join(dir, `${id}.log`));
    nodes.push({ id, base: `http://127.0.0.1:${port}`, server });
  }
  const results = await Promise.allSettled(nodes.map((nd) => nd.server.start(nd.base, ms)));
  const failed = results.map((r, i) => [r, nodes[i]]).filter(([r]) => r.status === 'rejected');
  if (failed.length) {
    await stopCluster(nodes, 'SIGKILL');
    throw new Error(failed.map(([r, nd]) => `cluster ${nd.id} (${nd.base}): ${r.reason.message}`).join('\n\n'));
  }
  return nodes;
}

// stopCluster stops every node with signal (all at once).
export async function stopCluster(nodes, signal = 'SIGTERM') {
  await Promise.all(nodes.map((nd) => nd.server.stop(signal)));
}
