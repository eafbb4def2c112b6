// mcp-ts: an MCP server written with the official TypeScript SDK the way
// Workers users write one — an McpServer behind the SDK's web-standard
// Streamable HTTP transport, in a module-form Worker — with the fixture
// tools, resources and prompts the official conformance suite calls, a
// secret from `env`, and console logging in the platform docs' style.
//
// Stateless (no session id): each request gets its own server and
// transport, so it works on a fresh instance per request and on a reused
// one alike. What needs a 2025 session — a tool that asks the client
// (sampling, elicitation) and waits for the answer — answers an error that
// says so.

import { completable } from "@modelcontextprotocol/sdk/server/completable.js";
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { CfWorkerJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/cfworker";
import { SubscribeRequestSchema, UnsubscribeRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

interface Env {
  /** A secret (tenants file `secrets`): `whoami` says whether it is set. */
  API_KEY?: string;
}

const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/** 10 ms of 8 kHz, 8-bit mono silence, as a WAV file. */
function wav(): string {
  const samples = 80;
  const bytes = new Uint8Array(44 + samples);
  const view = new DataView(bytes.buffer);
  const ascii = (at: number, text: string) => [...text].forEach((c, i) => (bytes[at + i] = c.charCodeAt(0)));
  ascii(0, "RIFF");
  view.setUint32(4, 36 + samples, true);
  ascii(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 1, true);
  view.setUint32(24, 8000, true);
  view.setUint32(28, 8000, true);
  view.setUint16(32, 1, true);
  view.setUint16(34, 8, true);
  ascii(36, "data");
  view.setUint32(40, samples, true);
  bytes.fill(128, 44);
  return btoa(String.fromCharCode(...bytes));
}

const WORDS = ["paris", "park", "party", "hello", "help", "world"];
/** Completion for `test_prompt_with_arguments`'s `arg1`. */
const complete = (value: string) => {
  const values = WORDS.filter((word) => word.startsWith(value.toLowerCase()));
  console.debug(`Completing ${JSON.stringify(value)}: ${values.length} values`);
  return values;
};

/**
 * DNS-rebinding protection: a browser tricked into calling this server
 * under an attacker's name sends that name as `Host` (and `Origin`). Only
 * local names are served: `localhost`, `*.localhost`, loopback addresses.
 */
function isLocal(authority: string): boolean {
  const host = (authority.startsWith("[") ? authority.slice(1, authority.indexOf("]")) : authority.replace(/:\d*$/, ""))
    .replace(/\.$/, "")
    .toLowerCase();
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || host.startsWith("127.");
}

function refusedOrigin(request: Request): string | null {
  const host = new URL(request.url).host;
  if (!isLocal(host)) return `Host ${JSON.stringify(host)} is not a local name`;
  const origin = request.headers.get("origin");
  if (origin !== null && !isLocal(origin.replace(/^[a-z]+:\/\//, ""))) return `Origin ${JSON.stringify(origin)} is not a local origin`;
  return null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (value: string) => ({ type: "text" as const, text: value });

function server(env: Env): McpServer {
  const mcp = new McpServer(
    { name: "mcp-ts", version: "1.0.0" },
    {
      capabilities: { logging: {}, completions: {}, resources: { subscribe: true, listChanged: false } },
      jsonSchemaValidator: new CfWorkerJsonSchemaValidator(),
    },
  );
  // Nothing changes here, so a subscription is only acknowledged.
  for (const schema of [SubscribeRequestSchema, UnsubscribeRequestSchema]) {
    mcp.server.setRequestHandler(schema, async (request) => {
      console.info(`[INFO] ${request.method} ${request.params.uri}`);
      return {};
    });
  }

  mcp.registerTool("whoami", { description: "Says which server this is and whether it has its API key" }, async () => {
    console.info("[INFO] whoami called");
    return { content: [text(`mcp-ts, API key ${env.API_KEY ? "set" : "not set"}`)] };
  });
  mcp.registerTool("add", { description: "Adds two numbers", inputSchema: { a: z.number(), b: z.number() } }, async ({ a, b }) => {
    console.log(`add ${a} + ${b}`);
    return { content: [text(String(a + b))] };
  });

  mcp.registerTool("test_simple_text", { description: "Returns simple text content" }, async () => ({
    content: [text("This is a simple text response for testing.")],
  }));
  mcp.registerTool("test_image_content", { description: "Returns a 1x1 PNG image" }, async () => ({
    content: [{ type: "image", data: PNG, mimeType: "image/png" }],
  }));
  mcp.registerTool("test_audio_content", { description: "Returns a short WAV clip" }, async () => ({
    content: [{ type: "audio", data: wav(), mimeType: "audio/wav" }],
  }));
  mcp.registerTool("test_embedded_resource", { description: "Returns an embedded resource" }, async () => ({
    content: [
      { type: "resource", resource: { uri: "test://embedded-resource", mimeType: "text/plain", text: "This is an embedded resource content." } },
    ],
  }));
  mcp.registerTool("test_multiple_content_types", { description: "Returns text, an image and a resource" }, async () => ({
    content: [
      text("Multiple content types test:"),
      { type: "image", data: PNG, mimeType: "image/png" },
      {
        type: "resource",
        resource: { uri: "test://mixed-content-resource", mimeType: "application/json", text: '{"test":"data","value":123}' },
      },
    ],
  }));
  mcp.registerTool("test_tool_with_logging", { description: "Sends log notifications while it runs" }, async (extra) => {
    for (const [i, message] of ["Tool execution started", "Tool processing data", "Tool execution completed"].entries()) {
      if (i > 0) await sleep(50);
      console.info(`[INFO] ${message}`);
      await extra.sendNotification({ method: "notifications/message", params: { level: "info", logger: "mcp-ts", data: message } });
    }
    return { content: [text("Tool with logging executed successfully")] };
  });
  mcp.registerTool("test_tool_with_progress", { description: "Reports progress while it runs" }, async (extra) => {
    const token = extra._meta?.progressToken;
    for (const [i, progress] of [0, 50, 100].entries()) {
      if (i > 0) await sleep(50);
      console.debug(`Progress ${progress}/100`);
      if (token !== undefined) {
        await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress, total: 100 } });
      }
    }
    return { content: [text("Tool with progress executed successfully")] };
  });
  mcp.registerTool("test_error_handling", { description: "Always fails" }, async () => {
    console.error("Tool test_error_handling failed: this tool intentionally returns an error");
    return { isError: true, content: [text("This tool intentionally returns an error for testing")] };
  });
  for (const name of ["test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"]) {
    mcp.registerTool(name, { description: "Needs the client to answer a request of the server's", inputSchema: { prompt: z.string().optional() } }, async () => {
      console.warn(`${name} needs a 2025 session: this stateless server cannot wait for the client's answer`);
      return { isError: true, content: [text("This stateless server cannot wait for the client's answer to a server request (sampling, elicitation).")] };
    });
  }

  mcp.registerResource("Static text", "test://static-text", { description: "A static text resource", mimeType: "text/plain" }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: "text/plain", text: "This is the content of the static text resource." }],
  }));
  mcp.registerResource("Static binary", "test://static-binary", { description: "A 1x1 PNG", mimeType: "image/png" }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: "image/png", blob: PNG }],
  }));
  mcp.registerResource("Watched resource", "test://watched-resource", { description: "A resource clients may subscribe to", mimeType: "text/plain" }, async (uri) => ({
    contents: [{ uri: uri.href, mimeType: "text/plain", text: "Watched resource content." }],
  }));
  mcp.registerResource(
    "Template data",
    new ResourceTemplate("test://template/{id}/data", { list: undefined }),
    { description: "Data for an id", mimeType: "application/json" },
    async (uri, { id }) => ({
      contents: [{ uri: uri.href, mimeType: "application/json", text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) }],
    }),
  );

  mcp.registerPrompt("test_simple_prompt", { description: "A simple prompt without arguments" }, async () => ({
    messages: [{ role: "user", content: text("This is a simple prompt for testing.") }],
  }));
  mcp.registerPrompt(
    "test_prompt_with_arguments",
    { description: "A prompt with two required arguments", argsSchema: { arg1: completable(z.string().describe("First test argument"), complete), arg2: z.string().describe("Second test argument") } },
    async ({ arg1, arg2 }) => ({ messages: [{ role: "user", content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }] }),
  );
  mcp.registerPrompt(
    "test_prompt_with_embedded_resource",
    { description: "A prompt that embeds a resource", argsSchema: { resourceUri: z.string().describe("URI of the resource to embed") } },
    async ({ resourceUri }) => ({
      messages: [
        { role: "user", content: { type: "resource", resource: { uri: resourceUri, mimeType: "text/plain", text: "Embedded resource content for testing." } } },
        { role: "user", content: text("Please process the embedded resource above.") },
      ],
    }),
  );
  mcp.registerPrompt("test_prompt_with_image", { description: "A prompt with an image" }, async () => ({
    messages: [
      { role: "user", content: { type: "image", data: PNG, mimeType: "image/png" } },
      { role: "user", content: text("Please analyze the image above.") },
    ],
  }));
  return mcp;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== "/mcp") {
      return new Response("mcp-ts: the MCP endpoint is /mcp\n", { status: 404 });
    }
    const refused = refusedOrigin(request);
    if (refused) {
      console.warn(`refused: ${refused}`);
      return new Response(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: refused } }), {
        status: 403,
        headers: { "content-type": "application/json" },
      });
    }
    const started = Date.now();
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    await server(env).connect(transport);
    const response = await transport.handleRequest(request);
    console.info(`[INFO] ${request.method} /mcp ${response.status} in ${Date.now() - started}ms`);
    return response;
  },
};
