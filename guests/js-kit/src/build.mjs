// Building a Worker into a component: bundle (esbuild), a world (WIT), and
// componentize (componentize-js, StarlingMonkey).
//
// The bundle's entry is made here: it loads the adapter (runtime/serve.js)
// before the Worker, so console levels and the service-worker shim are in
// place when the Worker's module runs, and exports `incomingHandler` — the
// `wasi:http/incoming-handler` the component serves. A KV binding adds
// runtime/kv.js and, to the world, `wasi:keyvalue/store`; without one the
// component imports nothing `wasmtime serve` does not link by default.

import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const runtime = join(here, "../runtime");
/** The repository's WASI WIT (0.2.12), the one mctx-host links. */
const witDeps = join(here, "../../../wit/deps");
const WASI = ["cli", "clocks", "filesystem", "http", "io", "random", "sockets"];

/** A build problem the user can act on: printed without a stack. */
export class BuildError extends Error {}

/**
 * Builds `entry` into a component at `out`.
 *
 * - `kv`: names of KV namespace bindings on `env` (at most one: the host
 *   gives a tenant one store);
 * - `alias`: module specifiers to replace while bundling (esbuild's alias);
 * - `minify`: smaller bundle, harder stacks.
 *
 * Returns `{ out, bytes, bundleBytes, seconds }`.
 */
export async function build({ entry, out, kv = [], alias = {}, minify = false }) {
  const started = Date.now();
  if (kv.length > 1) {
    throw new BuildError(
      `KV bindings ${kv.join(", ")}: mctx-host gives a tenant one key-value store, so declare one binding`,
    );
  }
  const source = resolve(entry);
  const bundle = await bundleWorker(source, kv, alias, minify);
  const work = await mkdtemp(join(tmpdir(), "mctx-js-"));
  try {
    const wit = join(work, "wit");
    await writeWorld(wit, kv.length > 0);
    // The file's name is what stack frames show.
    const sourcePath = join(work, `${basename(source, extname(source))}.js`);
    await writeFile(sourcePath, bundle);
    let component;
    try {
      ({ component } = await componentize({
        sourcePath,
        witPath: wit,
        worldName: "worker",
        // Libraries read `location` while loading (at build time).
        runtimeArgs: "--init-location http://localhost/",
      }));
    } catch (error) {
      throw new BuildError(`componentize-js could not build ${entry}: ${error?.message ?? error}`);
    }
    await mkdir(dirname(resolve(out)), { recursive: true });
    await writeFile(out, component);
    return { out, bytes: component.length, bundleBytes: bundle.length, seconds: (Date.now() - started) / 1000 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** One ES module: the adapter, then the Worker and its npm dependencies. */
async function bundleWorker(source, kv, alias, minify) {
  const bindings = kv.map((name) => `${JSON.stringify(name)}: new KvNamespace()`).join(", ");
  const contents = [
    `import { serve } from ${JSON.stringify(join(runtime, "serve.js"))};`,
    kv.length ? `import { KvNamespace } from ${JSON.stringify(join(runtime, "kv.js"))};` : "",
    `import * as worker from ${JSON.stringify(source)};`,
    `export const incomingHandler = serve(worker, { ${bindings} });`,
  ].join("\n");
  let result;
  try {
    result = await esbuild.build({
      stdin: { contents, resolveDir: dirname(source), sourcefile: "mctx-js-entry.js", loader: "js" },
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      // What Workers libraries publish for: workerd's condition first.
      conditions: ["workerd", "worker", "browser"],
      target: "es2022",
      external: ["wasi:*"],
      alias,
      minify,
      keepNames: true,
      legalComments: "none",
      logLevel: "silent",
    });
  } catch (error) {
    const messages = await esbuild.formatMessages(error.errors ?? [], { kind: "error" });
    const node = (error.errors ?? []).some((e) => /node:|Node\.js/.test(e.text));
    throw new BuildError(
      `bundling ${source} failed:\n${messages.join("")}` +
        (node ? "\nNode.js built-in modules are not available to a Worker here (see docs/javascript.md)." : ""),
    );
  }
  return result.outputFiles[0].text;
}

/** The world: `wasi:http/proxy` (0.2.10, what StarlingMonkey exports), with `wasi:keyvalue/store` for a KV binding. */
async function writeWorld(wit, keyvalue) {
  await mkdir(join(wit, "deps"), { recursive: true });
  for (const file of await readdir(witDeps)) {
    const name = file.replace(/\.wit$/, "");
    if (!WASI.includes(name) && !(keyvalue && name === "keyvalue")) continue;
    const text = await readFile(join(witDeps, file), "utf8");
    // componentize-js 0.23's StarlingMonkey speaks wasi 0.2.10; what it uses
    // is the same across 0.2.x, so later versions and `@since` gates are
    // written as 0.2.10.
    await writeFile(join(wit, "deps", file), text.replace(/0\.2\.1[1-9]\b/g, "0.2.10"));
  }
  const imports = keyvalue ? "  import wasi:keyvalue/store@0.2.0-draft;\n" : "";
  await writeFile(join(wit, "world.wit"), `package mctx:worker;\n\nworld worker {\n  include wasi:http/proxy@0.2.10;\n  import wasi:cli/environment@0.2.10;\n${imports}}\n`);
}
