// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core), against the real host that tests/all/dashboard.rs started.
// Every check is an assertion; the first failure exits non-zero.
//
// Env: MCTX_URL (the control plane, https), MCTX_SPKI (the host key's
// SHA-256, for Chromium), NODE_EXTRA_CA_CERTS (the test CA, for Node's fetch),
// MCTX_TOKEN (alice's session token;
// alice is an admin), MCTX_WASM (a component to deploy), MCTX_SCREENSHOTS
// (optional: a folder to save the page and the modal in).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { chromium } from "playwright-core";

const url = process.env.MCTX_URL;
const token = process.env.MCTX_TOKEN;
const screenshots = process.env.MCTX_SCREENSHOTS;
const TIME_ZONE = "Asia/Kolkata"; // UTC+05:30: local time visibly differs from UTC
const PALETTE = {
  log: "rgb(107, 114, 128)",
  info: "rgb(37, 99, 235)",
  warn: "rgb(217, 119, 6)",
  error: "rgb(220, 38, 38)",
  debug: "rgb(124, 58, 237)",
};

const step = (name) => console.log(`step: ${name}`);
const get = async (path) => {
  const response = await fetch(`${url}${path}`);
  await response.arrayBuffer();
  assert.equal(response.status, 200, `GET ${path}`);
};
const localClock = (ms) => {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(ms));
  return `${parts}.${String(ms % 1000).padStart(3, "0")}`;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    // The host's key, signed by the test's own CA: trusted, and only it.
    ...(process.env.MCTX_SPKI ? [`--ignore-certificate-errors-spki-list=${process.env.MCTX_SPKI}`] : []),
  ],
});
try {
  const context = await browser.newContext({ timezoneId: TIME_ZONE, viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const requestRows = () => page.locator("#log-list li.request").count();
  const waitForRequestRows = (n) =>
    page.waitForFunction((n) => document.querySelectorAll("#log-list li.request").length >= n, n);
  const atBottom = () => page.evaluate(() => {
    const list = document.getElementById("log-list");
    return list.scrollHeight - list.scrollTop - list.clientHeight < 8;
  });

  step("sign in with a pasted token");
  await page.goto(`${url}/login`);
  await page.fill("#token", token);
  await page.click("#sign-in");
  await page.waitForURL(`${url}/dev/servers`);
  if (url.startsWith("https:")) {
    const [session] = (await context.cookies()).filter((c) => c.name === "session");
    assert.equal(session.secure, true, "the session cookie is Secure over TLS");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
  }
  const servers = await page.locator("#servers tbody tr td:first-child").allTextContents();
  assert.deepEqual(servers, ["bad", "hello", "sleepy"], "only alice's servers are listed");

  step("another owner's server is refused");
  const refused = await page.goto(`${url}/dev/servers/bobs`);
  assert.equal(refused.status(), 403);

  step("an inactive server's button is disabled, with the reason");
  await page.goto(`${url}/dev/servers/sleepy`);
  assert.equal(await page.locator("#view-logs").isDisabled(), true);
  assert.match(await page.locator("#logs-unavailable").textContent(), /only available for active servers/);

  step("requests nobody watched, kept: the server's logs are retained");
  await get("/t/hello/before");
  await page.goto(`${url}/dev/servers/hello`);
  assert.match(await page.textContent("#logs-kept"), /^1h, at most 64 MiB$/);

  step("open the modal");
  await page.goto(`${url}/dev/servers/hello`);
  if (screenshots) await page.screenshot({ path: `${screenshots}/server-page.png` });
  await page.click("#view-logs");
  await page.waitForSelector('#log-conn[data-state="live"]');

  step("entries appear as the guest logs");
  await get("/t/hello/first");
  await waitForRequestRows(1);
  const rows = await page.$$eval("#log-list li", (lis) => lis.map((li) => ({
    timestamp: Number(li.dataset.timestamp),
    level: li.dataset.level,
    time: li.querySelector(".time").textContent,
    badge: li.querySelector(".badge").textContent,
    color: getComputedStyle(li.querySelector(".badge")).backgroundColor,
    message: li.querySelector(".message").textContent,
    request: li.classList.contains("request"),
  })));
  assert.deepEqual(rows.map((r) => r.message).slice(0, 2), [
    "hello: GET /first", "[INFO] request received: GET /first",
  ]);
  assert.match(rows[2].message, /^\[DEBUG\] headers: \d+$/);

  step("timestamps are local HH:MM:SS.mmm");
  for (const row of rows) {
    assert.match(row.time, /^\d{2}:\d{2}:\d{2}\.\d{3}$/);
    assert.equal(row.time, localClock(row.timestamp), "shown in the browser's time zone");
  }

  step("a coloured badge per level");
  const seen = new Set(rows.map((r) => r.level));
  for (const level of ["log", "info", "warn", "error", "debug"]) assert.ok(seen.has(level), `a ${level} entry`);
  for (const row of rows) {
    assert.equal(row.badge, row.level);
    assert.equal(row.color, PALETTE[row.level], `${row.level} badge colour`);
  }

  step("the request event is one compact row");
  const event = rows.find((r) => r.request);
  assert.match(event.message, /^GET \/first 200 \d+ ms$/);
  if (screenshots) await page.screenshot({ path: `${screenshots}/log-modal.png` });

  step("load earlier pages back through the kept entries, each once, in order");
  await page.click("#log-earlier");
  await page.waitForSelector("#log-earlier[disabled]");
  assert.equal(await page.textContent("#log-earlier"), "No earlier entries");
  const all = await page.$$eval("#log-list li", (lis) => lis.map((li) => li.querySelector(".message").textContent));
  assert.equal(all[0], "hello: GET /before", "the kept request comes first");
  assert.match(all[6], /^GET \/before 200 \d+ ms$/);
  assert.equal(all[7], "hello: GET /first", "then what was shown live");
  assert.equal(all.filter((m) => m === "hello: GET /first").length, 1, "nothing twice");

  step("markup a guest logs is shown as text");
  await page.goto(`${url}/dev/servers/bad`);
  await page.click("#view-logs");
  await page.waitForSelector('#log-conn[data-state="live"]');
  await get("/t/bad/script");
  await waitForRequestRows(1);
  assert.equal(await page.locator("#log-earlier").count(), 0, "a server whose logs are not kept has no Load earlier");
  const markup = await page.locator("#log-list li:first-child .message").textContent();
  assert.equal(markup, '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">');
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "nothing ran");
  assert.equal(await page.locator("#log-list script, #log-list img").count(), 0, "no elements were made");

  step("auto-scroll follows new entries");
  await get("/t/bad/flood?lines=300");
  await waitForRequestRows(2);
  assert.equal(await atBottom(), true, "scrolled to the newest entry");

  step("scrolling up pauses auto-scroll and offers a jump");
  await page.evaluate(() => {
    const list = document.getElementById("log-list");
    list.scrollTop = 0;
    list.dispatchEvent(new Event("scroll"));
  });
  await get("/t/bad/flood?lines=40");
  await waitForRequestRows(3);
  await page.waitForSelector("#log-jump:not([hidden])");
  assert.match(await page.textContent("#log-jump"), /^4\d new — jump to latest$/);
  assert.equal(await page.evaluate(() => document.getElementById("log-list").scrollTop), 0, "stayed where the user was");

  step("the jump control resumes following");
  await page.click("#log-jump");
  assert.equal(await atBottom(), true);
  assert.equal(await page.locator("#log-jump").isHidden(), true);
  await get("/t/bad/flood?lines=40");
  await waitForRequestRows(4);
  assert.equal(await atBottom(), true, "following again");

  step("level filter and search hide rows without losing them");
  await page.uncheck("#log-level-log");
  const shown = await page.$$eval("#log-list li:not([hidden])", (lis) => lis.map((li) => li.dataset.level));
  assert.ok(shown.length > 0 && shown.every((level) => level !== "log"));
  await page.check("#log-level-log");
  await page.fill("#log-search", "flood line 299");
  assert.equal(await page.locator("#log-list li:not([hidden])").count(), 1);

  step("10,000 entries: the DOM keeps the newest 5,000");
  await page.fill("#log-search", "");
  await get("/t/bad/flood?lines=10000");
  await page.waitForFunction(() => [...document.querySelectorAll("#log-list li.request .message")]
    .some((m) => m.textContent.startsWith("GET /flood?lines=10000 200")));
  assert.equal(await page.locator("#log-list li").count(), 5000);
  assert.equal(await page.locator("#log-list li:nth-last-child(2) .message").textContent(), "flood line 9999");

  step("the deployments table follows deploys live");
  const api = async (method, path, body, type) => {
    const response = await fetch(`${url}${path}`, {
      method, body, headers: { authorization: `Bearer ${token}`, ...(type ? { "content-type": type } : {}) },
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  };
  const wasm = await readFile(process.env.MCTX_WASM);
  await api("POST", "/api/servers", JSON.stringify({ slug: "live", owner: "alice" }), "application/json");
  await api("PUT", "/api/servers/live/versions/1.0.0", wasm, "application/wasm");
  await page.goto(`${url}/dev/servers/live`);
  assert.deepEqual(await page.locator("#deployments tbody tr td:first-child").allTextContents(), ["1.0.0"]);
  const deployedAt = await page.locator("#deployments .deployed-at").first().textContent();
  assert.match(deployedAt, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/, "local time");
  await api("PUT", "/api/servers/live/versions/1.1.0", wasm, "application/wasm");
  await page.waitForFunction(() => document.querySelectorAll("#deployments tbody tr").length === 2);
  const newest = await page.locator("#deployments tbody tr:first-child td").allTextContents();
  assert.equal(newest[0], "1.1.0");
  assert.equal(newest[2], "alice");

  step("a tenant page in the same browser gets no session and cannot call the API");
  const tenantSees = async (tenantUrl) => {
    const response = await page.goto(tenantUrl);
    assert.equal(response.status(), 200, tenantUrl);
    const echoed = JSON.parse(await page.locator("body").textContent());
    assert.equal(echoed.headers.cookie, undefined, `${tenantUrl} received ${echoed.headers.cookie}`);
    assert.equal(echoed.headers.authorization, undefined);
    // The tenant's own script, calling the control plane's API the way an
    // attacker would: with the browser's credentials.
    return page.evaluate(async (api) => {
      try {
        const r = await fetch(api, { credentials: "include" });
        return `status ${r.status}: ${(await r.text()).slice(0, 80)}`;
      } catch (e) {
        return `refused: ${e.name}`;
      }
    }, `${url}/api/servers`);
  };
  assert.ok((await context.cookies()).some((c) => c.name === "session"), "still signed in");
  // On the control plane's host, under /t/: the cookie is taken off and the
  // page is sandboxed (an opaque origin), so the API is another origin.
  const fromPath = await tenantSees(`${url}/t/hello/steal`);
  assert.match(fromPath, /^refused: TypeError|^status 40[13]/, fromPath);
  // On its own origin: the host-only cookie never goes there at all.
  const own = url.replace("://localhost", "://hello.localhost");
  const fromOwn = await tenantSees(`${own}/steal`);
  assert.match(fromOwn, /^refused: TypeError|^status 40[13]/, fromOwn);

  step("a refused stream is explained, not retried");
  await page.goto(`${url}/dev/servers/bad`);
  await context.clearCookies();
  await page.click("#view-logs");
  await page.waitForSelector('#log-conn[data-state="closed"]');
  assert.match(await page.textContent("#log-conn"), /^closed: 401 sign in first/);

  console.log("browser checks passed");
} finally {
  await browser.close();
}
