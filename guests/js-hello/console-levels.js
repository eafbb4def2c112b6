// Console levels that survive the trip to the log stream.
//
// StarlingMonkey (the JS engine componentize-js uses) writes console.log and
// console.info to stdout and console.warn, console.error and console.debug
// to stderr, with no level marker, so a host reading the streams could not
// tell warn from error or debug. This prelude prefixes each level the way
// the platform's docs write them ([INFO], [WARN], [ERROR], [DEBUG]; plain
// for console.log), which the host turns into exact entry levels. Lines the
// tenant already prefixes are left alone. Prepended to the tenant's code by
// build.mjs; it works the same under plain `wasmtime serve`.
{
  const write = { log: console.log, info: console.log, warn: console.error, error: console.error, debug: console.error };
  const prefix = { log: "", info: "[INFO] ", warn: "[WARN] ", error: "[ERROR] ", debug: "[DEBUG] " };
  const text = (args) => args.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(" ");
  for (const level of Object.keys(prefix)) {
    const out = write[level].bind(console);
    console[level] = (...args) => {
      const message = text(args);
      out(/^\[(INFO|WARN|ERROR|DEBUG)\]/.test(message) ? message : prefix[level] + message);
    };
  }
}
