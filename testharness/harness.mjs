// Shared helpers of the node test suites (browsertest, supabasetest,
// clients/js/test): a throwaway Postgres (through browsertest/testdb, which
// reuses internal/pgcluster), the real pgrealtime binary as a child process,
// HS256 tokens, and waiting with deadlines. Node built-ins only.

import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

export const execFileP = promisify(execFile);
export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

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

  async start(baseURL) {
    const log = fs.openSync(this.logPath, 'a');
    fs.writeSync(log, `\n=== start ${new Date().toISOString()} ${this.args.join(' ')}\n`);
    this.child = spawn(this.bin, this.args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const child = this.child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    let lastStatus = 'no answer';
    const until = Date.now() + 60_000;
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
    throw new Error(`pgrealtime not ready within 60 s (last /readyz: ${lastStatus}); log:\n${this.tail()}`);
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
