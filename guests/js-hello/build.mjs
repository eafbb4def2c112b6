// Builds js-hello.wasm: `node build.mjs [out.wasm]` (default:
// ../../target/js/js-hello.wasm). Needs `npm ci` here first.
//
// componentize-js 0.23's StarlingMonkey exports wasi:http 0.2.10, so the world
// is `wasi:http/proxy@0.2.10`, made from the WASI 0.2.12 WIT in ../../wit/deps
// with the versions rewritten (what StarlingMonkey uses is the same across 0.2.x).
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "../../target/js/js-hello.wasm");
const WASI = ["cli", "clocks", "filesystem", "http", "io", "random", "sockets"];

const wit = await mkdtemp(join(tmpdir(), "js-hello-wit-"));
try {
  await mkdir(join(wit, "deps"));
  for (const file of await readdir(join(here, "../../wit/deps"))) {
    if (!WASI.includes(file.replace(/\.wit$/, ""))) continue;
    const text = await readFile(join(here, "../../wit/deps", file), "utf8");
    // Package versions and `@since` gates past 0.2.10 become 0.2.10.
    await writeFile(join(wit, "deps", file), text.replace(/0\.2\.1[1-9]\b/g, "0.2.10"));
  }
  await writeFile(join(wit, "world.wit"), "package mctx:js-hello;\n\nworld hello {\n  include wasi:http/proxy@0.2.10;\n}\n");

  const parts = ["exceptions.js", "console-levels.js", "app.js"];
  const source = (await Promise.all(parts.map((part) => readFile(join(here, part), "utf8")))).join("\n");
  const started = Date.now();
  const { component } = await componentize(source, { witPath: wit, worldName: "hello" });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  console.log(`built ${out} (${(component.length / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await rm(wit, { recursive: true, force: true });
}
