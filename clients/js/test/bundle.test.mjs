// The bundle: its size, and the copy the Go binary embeds for the inspector.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { gzipSync } from 'node:zlib';
import { bundle, inspectorCopy } from '../scripts/build.mjs';

const js = await bundle();

test('min+gzip size is at most 4 KB', () => {
  const gz = gzipSync(js, { level: 9 }).length;
  console.log(`# bundle: ${js.length} bytes minified, ${gz} bytes min+gzip`);
  assert.ok(gz <= 4096, `bundle is ${gz} bytes min+gzip, more than 4096`);
});

test('the inspector embeds what the source builds to', () => {
  const committed = fs.readFileSync(inspectorCopy);
  assert.ok(Buffer.compare(committed, Buffer.from(js)) === 0,
    `${inspectorCopy} is not what clients/js/src builds to: run \`npm run build:inspector\` in clients/js and commit the file`);
});

test('the bundle has no imports (no runtime dependencies)', () => {
  const text = Buffer.from(js).toString();
  assert.doesNotMatch(text, /\bimport\s*[\w{*"']|require\(/);
  assert.match(text, /export\s*\{[^}]*createClient/);
});
