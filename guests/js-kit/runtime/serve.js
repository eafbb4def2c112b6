// The Worker adapter: a `wasi:http/incoming-handler` made from a Worker.
//
// A Worker is `export default { fetch(request, env, ctx) }` (module form)
// or `addEventListener("fetch", (event) => event.respondWith(…))` (service-
// worker form). StarlingMonkey has a fetch-event path of its own, but an
// instance that took it answers one request only (a second `handle` fails
// with "respondWith can't be called twice"), so a host could never reuse
// it. This adapter implements `handle` itself instead: it turns the
// `incoming-request` into a web `Request`, calls the Worker, and writes its
// `Response` to the `response-outparam` — any number of times per instance,
// so module-level state lives as long as the instance, as in an isolate.

import "./console.js";
import { getEnvironment } from "wasi:cli/environment@0.2.10";
import { Fields, IncomingBody, OutgoingBody, OutgoingResponse, ResponseOutparam } from "wasi:http/types@0.2.10";
import { reportException } from "./exception.js";

const encoder = new TextEncoder();

// The service-worker form registers its handler while the module loads;
// the listener is kept here instead of in StarlingMonkey's event target.
let fetchListener = null;
const addEventListener = globalThis.addEventListener;
globalThis.addEventListener = function (type, listener, ...rest) {
  if (type === "fetch") {
    fetchListener = listener;
    return;
  }
  return addEventListener?.call(this, type, listener, ...rest);
};

/**
 * The `incomingHandler` export for `worker` (the entry module's namespace);
 * `bindings` are added to `env` (the KV namespaces).
 */
export function serve(worker, bindings = {}) {
  const handler = worker.default;
  const fetch =
    typeof handler?.fetch === "function"
      ? (request, env, ctx) => handler.fetch(request, env, ctx)
      : typeof handler === "function"
        ? handler
        : null;
  // serve() runs when the bundle loads, after the Worker's module (at build
  // time, under Wizer): a Worker with no handler fails its build here.
  const respond = fetch ?? (fetchListener && fetchEvent(fetchListener));
  if (!respond) {
    throw new TypeError(
      "this Worker has no fetch handler: export default { fetch(request, env, ctx) { … } } or addEventListener(\"fetch\", (event) => event.respondWith(…))",
    );
  }
  // The environment is read when the first request comes: the module's top
  // level runs at build time (under Wizer), where it is the build's.
  let env = null;
  const environment = () => (env ??= Object.freeze({ ...Object.fromEntries(getEnvironment()), ...bindings }));
  return {
    async handle(incoming, responseOut) {
      const pending = [];
      const ctx = {
        waitUntil(promise) {
          pending.push(Promise.resolve(promise));
        },
        passThroughOnException() {},
      };
      let written = false;
      try {
        const request = await readRequest(incoming);
        const response = await respond(request, environment(), ctx);
        if (!(response instanceof Response)) {
          throw new TypeError(`the fetch handler returned ${typeof response}, not a Response`);
        }
        written = true;
        await writeResponse(response, responseOut);
      } catch (error) {
        reportException(error);
        if (!written) {
          await writeResponse(new Response("Worker threw exception", { status: 500 }), responseOut);
        }
      }
      // Work handed to ctx.waitUntil ends before the instance is released,
      // including work that work hands on.
      while (pending.length > 0) {
        for (const result of await Promise.allSettled(pending.splice(0))) {
          if (result.status === "rejected") {
            const reason = result.reason;
            console.error(`ctx.waitUntil: ${reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason)}`);
          }
        }
      }
    },
  };
}

/** The service-worker form, called as the module form is. */
function fetchEvent(listener) {
  return (request, _env, ctx) =>
    new Promise((resolve, reject) => {
      let answered = false;
      const event = {
        type: "fetch",
        request,
        respondWith(response) {
          if (answered) throw new Error("respondWith was already called for this event");
          answered = true;
          Promise.resolve(response).then(resolve, reject);
        },
        waitUntil: (promise) => ctx.waitUntil(promise),
        passThroughOnException() {},
      };
      try {
        listener.call(globalThis, event);
      } catch (error) {
        if (!answered) {
          reject(error);
          return;
        }
        // Answered already: the response stands, the error is reported.
        reportException(error);
      }
      if (!answered) reject(new Error("the fetch listener did not call event.respondWith"));
    });
}

/** A web `Request` for an `incoming-request`; its body read whole. */
async function readRequest(incoming) {
  const method = methodName(incoming.method());
  const scheme = incoming.scheme();
  const protocol = scheme?.tag === "HTTPS" ? "https" : "http";
  const url = `${protocol}://${hostOf(incoming.authority())}${pathOf(incoming.pathWithQuery())}`;
  const headers = new Headers();
  const fields = incoming.headers();
  for (const [name, value] of fields.entries()) {
    headers.append(name, latin1(value));
  }
  fields[Symbol.dispose]?.();
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    body = readBody(incoming);
  }
  return new Request(url, { method, headers, body });
}

/** The whole request body: the host bounds its size. */
function readBody(incoming) {
  const body = incoming.consume();
  const stream = body.stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (error) {
      if (error?.payload?.tag === "closed") break;
      throw new Error(`reading the request body: ${error?.payload?.tag ?? error}`);
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  stream[Symbol.dispose]();
  IncomingBody.finish(body);
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

/**
 * The request's host as the URL's: a `Host` that is not a bare authority
 * (one with `/`, `?`, `#`, `@` or `\\` in it would move the path the Worker
 * sees) is replaced by `localhost`.
 */
function hostOf(authority) {
  if (!authority || /[\/?#@\\\s]/.test(authority)) return "localhost";
  try {
    return new URL(`http://${authority}/`).host;
  } catch {
    return "localhost";
  }
}

/** The path and query, always from `/`. */
function pathOf(pathWithQuery) {
  return pathWithQuery?.startsWith("/") ? pathWithQuery : `/${pathWithQuery ?? ""}`;
}

/** Header bytes as a ByteString: one character per byte, as browsers do. */
function latin1(bytes) {
  let text = "";
  for (let at = 0; at < bytes.length; at += 4096) {
    text += String.fromCharCode(...bytes.subarray(at, at + 4096));
  }
  return text;
}

/** A ByteString back to its bytes. */
function bytesOf(text) {
  const bytes = new Uint8Array(text.length);
  for (let at = 0; at < text.length; at++) bytes[at] = text.charCodeAt(at) & 0xff;
  return bytes;
}

function methodName(method) {
  return method.tag === "other" ? method.val : method.tag.toUpperCase();
}

/**
 * Sends the response head, then streams its body: a body the Worker is
 * still producing reaches the client as it comes. A client that goes away
 * (or a HEAD request, whose body the host never sends) ends the writing
 * quietly: that is the host's to report, not an exception of the Worker's.
 */
async function writeResponse(response, responseOut) {
  const fields = new Fields();
  for (const [name, value] of response.headers) {
    try {
      fields.append(name, bytesOf(value));
    } catch {
      // A header the host forbids (connection, transfer-encoding…): it
      // manages those itself.
    }
  }
  const outgoing = new OutgoingResponse(fields);
  outgoing.setStatusCode(response.status);
  const body = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: outgoing });
  const stream = body.write();
  let complete = false;
  try {
    if (response.body) {
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const bytes = typeof value === "string" ? encoder.encode(value) : value;
        // blocking-write-and-flush takes at most 4096 bytes a call.
        for (let at = 0; at < bytes.length; at += 4096) {
          try {
            stream.blockingWriteAndFlush(bytes.subarray(at, at + 4096));
          } catch (error) {
            if (error?.payload === undefined) throw error;
            // The stream is closed: the client went away.
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    }
    complete = true;
  } finally {
    stream[Symbol.dispose]();
    // A body dropped unfinished tells the host the response broke off.
    if (!complete) body[Symbol.dispose]();
  }
  OutgoingBody.finish(body, undefined);
}
