// Type check of the public API: test/types/usage.ts against dist/index.d.ts
// (with @ts-expect-error lines for what must not compile).
import { test } from 'node:test';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { jsRoot } from './harness.mjs';

test('tsc --noEmit on a usage file', () => {
  execFileSync(process.execPath, [path.join(jsRoot, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', path.join(jsRoot, 'test/types/tsconfig.json')], { stdio: 'inherit' });
});
