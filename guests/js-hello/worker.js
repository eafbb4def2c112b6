// js-hello: the smallest JavaScript tenant, a module-form Worker as the
// platform's docs write them. Answers with the request as JSON and logs
// once at each console level; reads a secret from `env`, keeps entries in
// its KV binding, and finishes work after its response with ctx.waitUntil.

// Module state: it lives as long as the instance, so with instance reuse
// it carries over from one request to the next, as in a Worker isolate.
let served = 0;

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    served += 1;
    const url = new URL(request.url);
    // The benchmarks' silent path: no log line, a fixed answer.
    if (url.pathname === "/quiet") return new Response("ok\n");
    console.log(`${request.method} ${url.pathname}`);
    console.info(`Request received: ${request.method} ${url.pathname}${url.search}`);
    console.debug(`Headers: ${JSON.stringify(Object.fromEntries(request.headers))}`);
    switch (url.pathname) {
      case "/throw":
        return checkout(url.searchParams.get("cart"));
      case "/fail":
        console.error("Request failed: /fail always fails");
        return json({ error: "failed on purpose" }, 500);
      case "/env":
        // A secret printed is redacted on its way to the log stream.
        console.log(`calling the API with key ${env.API_KEY}`);
        return json({ hasKey: typeof env.API_KEY === "string", greeting: env.GREETING ?? null });
      case "/kv":
        return kv(env.KV, url.searchParams);
      case "/later":
        ctx.waitUntil(later());
        return new Response("sent before the work is done\n");
      case "/echo":
        return new Response(await request.text(), { headers: { "content-type": request.headers.get("content-type") ?? "text/plain" } });
    }
    console.warn("This is what a warning looks like");
    console.error("This is what an error looks like");
    const body = {
      runtime: "javascript",
      method: request.method,
      path: url.pathname + url.search,
      tenant: request.headers.get("x-tenant-slug"),
      version: request.headers.get("x-tenant-version"),
      served,
    };
    console.info(`Response sent in ${Date.now() - started}ms`);
    return json(body);
  },
};

function json(value, status = 200) {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

// `/kv?put=KEY&value=VALUE`, `/kv?delete=KEY`, `/kv?get=KEY`: the change,
// then what the namespace holds.
async function kv(namespace, params) {
  if (params.has("put")) await namespace.put(params.get("put"), params.get("value") ?? "");
  if (params.has("delete")) await namespace.delete(params.get("delete"));
  const key = params.get("get") ?? params.get("put");
  const listed = await namespace.list({ prefix: params.get("prefix") ?? "" });
  return json({ value: key ? await namespace.get(key) : null, keys: listed.keys.map((k) => k.name) });
}

// Work that outlives the response: its line still carries the request id.
async function later() {
  await new Promise((resolve) => setTimeout(resolve, 20));
  console.log("finished after the response");
}

// `/throw`: an uncaught error two functions deep, whose stack arrives on the
// request event.
function checkout(cart) {
  return priceOf(JSON.parse(cart ?? "null"));
}

function priceOf(cart) {
  return cart.items.length; // TypeError: cart is null
}
