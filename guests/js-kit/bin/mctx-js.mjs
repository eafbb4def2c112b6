#!/usr/bin/env node
// mctx-js: builds a Worker into a component for mctx-host.

import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseToml } from "smol-toml";
import { BuildError, build } from "../src/build.mjs";

const HELP = `mctx-js build [ENTRY] [options]

Builds a JavaScript or TypeScript Worker — module form
(export default { fetch(request, env, ctx) }) or service-worker form
(addEventListener("fetch", …)) — and its npm dependencies into one
wasi:http component for mctx-host (and plain wasmtime serve).

  ENTRY                 the Worker's main module [default: \`main\` in
                        ./wrangler.toml or ./wrangler.json]
  -o, --out FILE        the component [default: NAME.wasm, NAME from
                        wrangler's \`name\` or the entry's file name]
  --kv BINDING          env.BINDING is a KV namespace over the tenant's
                        key-value store [default: wrangler's kv_namespaces]
  --alias FROM=TO       bundle TO where the code imports FROM (repeatable)
                        [default: wrangler's [alias] table]
  --minify              a smaller bundle (stack frames get harder to read)
  -h, --help            this text

env carries the tenant's env and secrets (tenants file) as strings, and
the KV binding; ctx.waitUntil(promise) work ends before the instance is
released. docs/javascript.md says what of the Workers API is there.`;

async function main(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o" },
      kv: { type: "string", multiple: true },
      alias: { type: "string", multiple: true },
      minify: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, entryArg, ...extra] = positionals;
  if (values.help || command === undefined || command === "help") {
    console.log(HELP);
    return 0;
  }
  if (command !== "build") throw new BuildError(`unknown command ${JSON.stringify(command)}: the command is \`build\` (see --help)`);
  if (extra.length) throw new BuildError(`one entry at a time: ${extra.join(" ")} is extra`);
  const project = await wrangler(process.cwd());
  const entry = entryArg ?? project?.main;
  if (!entry) throw new BuildError("no entry: give the Worker's main module, or run where wrangler.toml names it (`main`)");
  if (!existsSync(entry)) throw new BuildError(`${entry}: no such file`);
  const name = project?.name ?? basename(entry, extname(entry));
  const kv = values.kv ?? (project?.kv_namespaces ?? []).map((namespace) => namespace.binding);
  const alias = { ...(project?.alias ?? {}) };
  for (const pair of values.alias ?? []) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new BuildError(`--alias ${pair}: expected FROM=TO`);
    const to = pair.slice(at + 1);
    alias[pair.slice(0, at)] = to.startsWith(".") ? resolve(to) : to;
  }
  const result = await build({ entry, out: values.out ?? `${name}.wasm`, kv, alias, minify: values.minify });
  console.log(
    `built ${result.out} (${(result.bytes / 1e6).toFixed(1)} MB; bundle ${(result.bundleBytes / 1e3).toFixed(0)} kB) in ${result.seconds.toFixed(1)} s`,
  );
  return 0;
}

/** The project's wrangler.toml or wrangler.json, if there is one. */
async function wrangler(dir) {
  for (const file of ["wrangler.toml", "wrangler.json"]) {
    const path = join(dir, file);
    if (!existsSync(path)) continue;
    const text = await readFile(path, "utf8");
    try {
      const config = file.endsWith(".toml") ? parseToml(text) : JSON.parse(text);
      const local = (target) => (target.startsWith(".") ? resolve(dirname(path), target) : target);
      const alias = Object.fromEntries(Object.entries(config.alias ?? {}).map(([from, to]) => [from, local(to)]));
      return { ...config, alias, main: config.main && join(dirname(path), config.main) };
    } catch (error) {
      throw new BuildError(`${path}: ${error.message}`);
    }
  }
  return null;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`mctx-js: ${error instanceof BuildError || error?.code?.startsWith?.("ERR_PARSE_ARGS") ? error.message : (error?.stack ?? error)}`);
    process.exit(1);
  },
);
