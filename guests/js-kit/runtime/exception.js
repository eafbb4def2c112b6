// Uncaught exceptions, reported to the host with their stack.
//
// One stderr line that is a JSON object starting with "exception" — name,
// message and the stack as "function (file:line:column)" frames, innermost
// first — which mctx-host turns into the request's `exception` (outcome
// `exception`). Under plain `wasmtime serve` the line is simply printed.

import { rawError } from "./console.js";

/** SpiderMonkey's `fn@file:line:col` frames, written as V8 does. */
const frames = (stack) =>
  String(stack ?? "")
    .split("\n")
    .filter((frame) => frame.length > 0)
    .map((frame) => {
      const at = frame.lastIndexOf("@");
      return at < 0 ? frame : `${frame.slice(0, at) || "<anonymous>"} (${frame.slice(at + 1)})`;
    });

/** Frames from here on are the adapter's, not the Worker's. */
const adapter = /^(serve\/|handle \(|async\*export_incomingHandler)/;

/** The Worker's frames: the adapter's, below its `fetch`, are left out. */
const workerFrames = (stack) => {
  const all = frames(stack);
  const cut = all.findIndex((frame) => adapter.test(frame));
  return cut < 0 ? all : all.slice(0, cut);
};

export function reportException(error) {
  const exception =
    error instanceof Error
      ? { name: error.name, message: error.message, stack: workerFrames(error.stack) }
      : { name: "Error", message: String(error), stack: [] };
  rawError(JSON.stringify({ exception, level: "error", message: `Uncaught ${exception.name}: ${exception.message}` }));
}
