// Builds dist/index.js (one minified ESM file, no dependencies) and
// dist/index.d.ts. With --inspector it also writes the copy that the Go
// binary embeds for its inspector page (wsapi/inspector/pgrealtime-client.js);
// test/bundle.test.mjs fails when that copy is not what the source builds to.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const inspectorCopy = path.resolve(root, '../../wsapi/inspector/pgrealtime-client.js');

// bundle returns the minified bundle of src/index.ts (deterministic: the same
// source and esbuild version give the same bytes).
export async function bundle() {
  const r = await build({
    entryPoints: [path.join(root, 'src/index.ts')],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2020',
    platform: 'neutral',
    write: false,
    legalComments: 'none',
    banner: { js: '// @pgrealtime/client (generated from clients/js/src by `npm run build`; do not edit)' },
  });
  return r.outputFiles[0].contents;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const js = await bundle();
  fs.mkdirSync(path.join(root, 'dist'), { recursive: true });
  fs.writeFileSync(path.join(root, 'dist/index.js'), js);
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
  if (process.argv.includes('--inspector')) fs.writeFileSync(inspectorCopy, js);
  console.log(`dist/index.js: ${js.length} bytes`);
}
