// Runs a wasm32-wasip1 command module under Node's WASI, i.e. on V8, the wasm engine Envoy
// uses: `node bench/wasi-run.mjs FILE.wasm [ARGS...]`. The host file system is visible at the
// same paths (the benchmarks read the shared data and the policies by absolute path).
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import { argv, env, exit } from 'node:process';

const [file, ...args] = argv.slice(2);
if (!file) {
  console.error('usage: node bench/wasi-run.mjs FILE.wasm [ARGS...]');
  exit(2);
}
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env, preopens: { '/': '/' } });
const module = await WebAssembly.compile(await readFile(file));
// proxy-wasm host functions the module imports (linked in, never called here): stubs.
const imports = wasi.getImportObject();
imports.env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === 'env' && imp.kind === 'function') imports.env[imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
exit(wasi.start(instance) ?? 0);
