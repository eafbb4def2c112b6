// The same Worker under Node, for comparison (docs/javascript.md): bundles
// src/index.ts for Node with the kit's esbuild and serves its fetch handler
// on http://127.0.0.1:PORT/mcp (PORT: the first argument, default 8788).
// Node 22: `tests/mcp/node_modules/.bin/node guests/mcp-ts/node.mjs`.

import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";

const here = dirname(fileURLToPath(import.meta.url));
const esbuild = createRequire(join(here, "../js-kit/package.json"))("esbuild");
const port = Number(process.argv[2] ?? 8788);

const { outputFiles } = await esbuild.build({
  entryPoints: [join(here, "src/index.ts")],
  bundle: true,
  write: false,
  format: "esm",
  platform: "node",
});
const file = join(await mkdtemp(join(tmpdir(), "mcp-ts-node-")), "worker.mjs");
await writeFile(file, outputFiles[0].text);
const worker = (await import(pathToFileURL(file))).default;
const env = { API_KEY: process.env.API_KEY };

createServer(async (incoming, outgoing) => {
  const chunks = [];
  for await (const chunk of incoming) chunks.push(chunk);
  const body = incoming.method === "GET" || incoming.method === "HEAD" ? undefined : Buffer.concat(chunks);
  const headers = new Headers();
  for (const [name, value] of Object.entries(incoming.headers)) {
    for (const one of [value].flat()) headers.append(name, one);
  }
  const request = new Request(`http://${incoming.headers.host}${incoming.url}`, { method: incoming.method, headers, body });
  const response = await worker.fetch(request, env, { waitUntil() {}, passThroughOnException() {} });
  outgoing.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) for await (const chunk of response.body) outgoing.write(chunk);
  outgoing.end();
}).listen(port, "127.0.0.1", () => console.log(`mcp-ts under Node at http://127.0.0.1:${port}/mcp`));
