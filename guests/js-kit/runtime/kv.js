// A Workers KV namespace over `wasi:keyvalue/store`: the tenant's store.
//
// The host gives each tenant one store (`open("")`), sized by its
// `keyvalue_max_bytes`; a Worker sees it as a KV namespace binding on
// `env`. What Workers KV has and this does not — expiration, metadata,
// cache TTLs — is refused with an error rather than ignored, so a Worker
// never believes a key will expire when it will not.

import { open } from "wasi:keyvalue/store@0.2.0-draft";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class KvNamespace {
  #bucket = null;

  #store() {
    // Opened at the first use, in a request: not at build time.
    this.#bucket ??= call(() => open(""), "open");
    return this.#bucket;
  }

  /** `get(key, "text" | "json" | "arrayBuffer" | { type })`: null when absent. */
  async get(key, options) {
    const type = typeof options === "string" ? options : (options?.type ?? "text");
    const bytes = call(() => this.#store().get(checkKey(key)), "get");
    if (bytes === undefined || bytes === null) return null;
    switch (type) {
      case "text":
        return decoder.decode(bytes);
      case "json":
        return JSON.parse(decoder.decode(bytes));
      case "arrayBuffer":
        return bytes.slice().buffer;
      case "stream":
        return new Response(bytes).body;
      default:
        throw new TypeError(`KV get: unknown type ${JSON.stringify(type)} (text, json, arrayBuffer or stream)`);
    }
  }

  /** `put(key, string | ArrayBuffer | ArrayBufferView | ReadableStream)`. */
  async put(key, value, options) {
    for (const option of ["expiration", "expirationTtl", "metadata"]) {
      if (options?.[option] !== undefined) {
        throw new TypeError(`KV put: ${option} is not supported by this host's store`);
      }
    }
    let bytes;
    if (typeof value === "string") bytes = encoder.encode(value);
    else if (value instanceof ArrayBuffer) bytes = new Uint8Array(value);
    else if (ArrayBuffer.isView(value)) bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    else if (value instanceof ReadableStream) bytes = new Uint8Array(await new Response(value).arrayBuffer());
    else throw new TypeError("KV put: the value must be a string, an ArrayBuffer, a view of one, or a ReadableStream");
    call(() => this.#store().set(checkKey(key), bytes), "put");
  }

  async delete(key) {
    call(() => this.#store().delete(checkKey(key)), "delete");
  }

  /**
   * `list({ prefix, limit, cursor })`: `{ keys: [{ name }], list_complete,
   * cursor }`, in the store's order. The cursor is an offset among the
   * matching keys: the store pages over every key, so the prefix is
   * applied here.
   */
  async list(options = {}) {
    const prefix = options.prefix ?? "";
    const limit = Math.min(Math.max(Math.trunc(Number(options.limit ?? 1000)) || 1000, 1), 1000);
    const offset = options.cursor ? Number(options.cursor) : 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new TypeError(`KV list: ${JSON.stringify(options.cursor)} is not a cursor this namespace gave`);
    }
    const names = [];
    let cursor;
    do {
      const page = call(() => this.#store().listKeys(cursor), "list");
      for (const name of page.keys) {
        if (name.startsWith(prefix)) names.push(name);
      }
      cursor = page.cursor;
    } while (cursor !== undefined && names.length < offset + limit + 1);
    const keys = names.slice(offset, offset + limit).map((name) => ({ name }));
    const complete = cursor === undefined && names.length <= offset + limit;
    return complete ? { keys, list_complete: true } : { keys, list_complete: false, cursor: String(offset + keys.length) };
  }
}

function checkKey(key) {
  if (typeof key !== "string" || key.length === 0) {
    throw new TypeError("KV: a key is a non-empty string");
  }
  return key;
}

/** The store's errors as JavaScript errors that say what was refused. */
function call(operation, name) {
  try {
    return operation();
  } catch (error) {
    const payload = error?.payload;
    const why = payload?.tag === "other" ? payload.val : (payload?.tag ?? String(error));
    throw new Error(`KV ${name}: ${why}`);
  }
}
