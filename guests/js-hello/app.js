// js-hello: the smallest JavaScript tenant. Answers with the request as
// JSON and logs once at each console level, in the platform docs' style.
addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const started = Date.now();
  const url = new URL(request.url);
  console.log(`${request.method} ${url.pathname}`);
  console.info(`Request received: ${request.method} ${url.pathname}${url.search}`);
  console.debug(`Headers: ${JSON.stringify(Object.fromEntries(request.headers))}`);
  if (url.pathname === "/throw") {
    return checkout(url.searchParams.get("cart"));
  }
  if (url.pathname === "/fail") {
    console.error("Request failed: /fail always fails");
    return new Response(JSON.stringify({ error: "failed on purpose" }), {
      status: 500,
      headers: { "content-type": "application/json" },
    });
  }
  console.warn("This is what a warning looks like");
  console.error("This is what an error looks like");
  const body = {
    runtime: "javascript",
    method: request.method,
    path: url.pathname + url.search,
    tenant: request.headers.get("x-tenant-slug"),
    version: request.headers.get("x-tenant-version"),
  };
  console.info(`Response sent in ${Date.now() - started}ms`);
  return new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
}

// `/throw`: an uncaught error two functions deep, whose stack arrives on the
// request event (exceptions.js reports it).
function checkout(cart) {
  return priceOf(JSON.parse(cart ?? "null"));
}

function priceOf(cart) {
  return cart.items.length; // TypeError: cart is null
}
