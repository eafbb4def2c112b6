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
   * cursor }`, in the store's order. The store pages over every key, so
   * the prefix is applied here; the cursor says where the last page
   * stopped (the store's page and the last key given from it), so each
   * call reads from there on, and a key added or removed meanwhile moves
   * nothing.
   */
  async list(options = {}) {
    const prefix = options.prefix ?? "";
    const limit = options.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new TypeError(`KV list: limit must be a whole number from 1 to 1000, not ${JSON.stringify(limit)}`);
    }
    let { page, after } = parseCursor(options.cursor);
    const keys = [];
    for (;;) {
      const listed = call(() => this.#store().listKeys(page), "list");
      let names = listed.keys;
      if (after !== undefined) {
        // Resume past the last key given: by position if it is still
        // there, else by order (the store lists a page in key order).
        const at = names.indexOf(after);
        names = at >= 0 ? names.slice(at + 1) : names.filter((name) => name > after);
      }
      for (const [i, name] of names.entries()) {
        if (!name.startsWith(prefix)) continue;
        keys.push({ name });
        if (keys.length === limit) {
          const more = i < names.length - 1 || listed.cursor !== undefined;
          return more
            ? { keys, list_complete: false, cursor: makeCursor(page, name) }
            : { keys, list_complete: true };
        }
      }
      if (listed.cursor === undefined) return { keys, list_complete: true };
      page = listed.cursor;
      after = undefined;
    }
  }
}

/** A cursor: the store's page (its own cursor) and the last key given. */
function makeCursor(page, after) {
  return encodeURIComponent(JSON.stringify([page === undefined ? null : String(page), after]));
}

function parseCursor(cursor) {
  if (cursor === undefined || cursor === null || cursor === "") return { page: undefined, after: undefined };
  try {
    const [page, after] = JSON.parse(decodeURIComponent(cursor));
    if ((page === null || /^\d+$/.test(page)) && typeof after === "string") {
      return { page: page === null ? undefined : BigInt(page), after };
    }
  } catch {
    // Refused below.
  }
  throw new TypeError(`KV list: ${JSON.stringify(cursor)} is not a cursor this namespace gave`);
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
    // The Worker's own mistakes (a bad key) keep their type and message.
    if (error instanceof TypeError) throw error;
    const payload = error?.payload;
    const why = payload?.tag === "other" ? payload.val : (payload?.tag ?? String(error));
    throw new Error(`KV ${name}: ${why}`);
  }
}
