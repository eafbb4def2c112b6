// Console levels that survive the trip to the log stream.
//
// StarlingMonkey writes console.log and console.info to stdout and
// console.warn, console.error and console.debug to stderr, with no level
// marker, so a host reading the streams could not tell warn from error or
// debug. Here each level gets the prefix the platform's docs write ([INFO],
// [WARN], [ERROR], [DEBUG]; none for console.log), which mctx-host turns
// into exact entry levels; a line the tenant already prefixed is left
// alone. Under plain `wasmtime serve` the lines are printed as they are.

const stdout = console.log.bind(console);
const stderr = console.error.bind(console);

/** Writes one line to stderr as it is: for lines the host parses. */
export const rawError = stderr;

const text = (args) =>
  args
    .map((arg) => {
      if (typeof arg === "string") return arg;
      if (arg instanceof Error) return arg.stack ? `${arg.name}: ${arg.message}\n${arg.stack}` : String(arg);
      try {
        return JSON.stringify(arg) ?? String(arg);
      } catch {
        return String(arg);
      }
    })
    .join(" ");

const levels = { log: [stdout, ""], info: [stdout, "[INFO] "], warn: [stderr, "[WARN] "], error: [stderr, "[ERROR] "], debug: [stderr, "[DEBUG] "] };
const prefixed = /^\[(INFO|WARN|ERROR|DEBUG)\]/;

for (const [level, [write, prefix]] of Object.entries(levels)) {
  console[level] = (...args) => {
    const message = text(args);
    write(prefixed.test(message) ? message : prefix + message);
  };
}
console.trace = console.debug;
