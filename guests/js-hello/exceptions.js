// Uncaught exceptions that reach the host with their stack.
//
// StarlingMonkey answers 500 when a fetch handler throws (or its promise
// rejects) and prints the error as plain text, so the host would see an
// ordinary 500. This prelude reports the error first, as one stderr line
// that is a JSON object starting with "exception" — name, message and the
// stack as "function (file:line:column)" frames, innermost first — which
// mctx-host turns into the request's `exception` (outcome `exception`).
// The error is then rethrown, so the response is what it always was, and
// under plain `wasmtime serve` the line is simply printed. It runs before
// console-levels.js, so its line keeps no [ERROR] prefix.
{
  const writeError = console.error.bind(console);
  const frames = (stack) =>
    String(stack ?? "")
      .split("\n")
      .filter((frame) => frame.length > 0)
      .map((frame) => {
        const at = frame.lastIndexOf("@");
        return at < 0 ? frame : `${frame.slice(0, at) || "<anonymous>"} (${frame.slice(at + 1)})`;
      });
  const report = (error) => {
    const exception =
      error instanceof Error
        ? { name: error.name, message: error.message, stack: frames(error.stack) }
        : { name: "Error", message: String(error), stack: [] };
    writeError(JSON.stringify({ exception, level: "error", message: `Uncaught ${exception.name}: ${exception.message}` }));
  };
  let patched = false;
  const listen = globalThis.addEventListener;
  globalThis.addEventListener = function (type, listener, ...rest) {
    if (type !== "fetch" || typeof listener !== "function") return listen.call(this, type, listener, ...rest);
    const guarded = (event) => {
      if (!patched) {
        // respondWith lives on the event's prototype; wrap it once so a
        // rejected response promise is reported too.
        const proto = Object.getPrototypeOf(event);
        const respondWith = proto.respondWith;
        proto.respondWith = function (response) {
          return respondWith.call(this, Promise.resolve(response).catch((error) => {
            report(error);
            throw error;
          }));
        };
        patched = true;
      }
      try {
        return listener.call(this, event);
      } catch (error) {
        report(error);
        throw error;
      }
    };
    return listen.call(this, type, guarded, ...rest);
  };
}
