// mctx-host dashboard: the live log modal. Plain JavaScript, no build step.
//
// Entries arrive over the /log-stream WebSocket (the session cookie rides
// along). Messages are always inserted as text, never as HTML: a guest that
// logs "<script>" must not run anything here.
"use strict";

// The server page's deployments table, kept current from the deploy API
// (GET /api/servers/{slug}, same session cookie) while the page is shown,
// and at once when the log stream reports a deploy.
const deployments = (() => {
  const card = document.getElementById("deployments-card");
  if (!card) return { refresh() {} };
  const base = document.body.dataset.base || "";
  const body = card.querySelector("tbody");
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const when = (ms) => {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  const cell = (text, tag = "td") => {
    const td = document.createElement(tag);
    td.textContent = text;
    return td;
  };
  function render(versions) {
    const rows = versions.slice().reverse().map((v) => {
      const tr = document.createElement("tr");
      tr.dataset.version = v.version;
      const at = cell(when(v.deployedAt));
      at.className = "deployed-at";
      at.dataset.ms = v.deployedAt;
      const sha = document.createElement("code");
      sha.title = v.sha256;
      sha.textContent = v.sha256.slice(0, 12);
      const shaCell = document.createElement("td");
      shaCell.append(sha);
      tr.append(cell(v.version), at, cell(v.deployedBy), shaCell);
      return tr;
    });
    body.replaceChildren(...rows);
  }
  for (const td of body.querySelectorAll(".deployed-at")) td.textContent = when(Number(td.dataset.ms));
  async function refresh() {
    try {
      const response = await fetch(`${base}/api/servers/${encodeURIComponent(card.dataset.slug)}`);
      if (response.ok) render((await response.json()).versions);
    } catch (_) {
      // Offline for a moment: the next round tries again.
    }
  }
  setInterval(() => { if (!document.hidden) refresh(); }, 3000);
  return { refresh };
})();

(() => {
  const button = document.getElementById("view-logs");
  if (!button || button.disabled) return;

  const base = document.body.dataset.base || "";
  const slug = button.dataset.slug;
  const $ = (id) => document.getElementById(id);
  const modal = $("log-modal"), list = $("log-list"), conn = $("log-conn"), jump = $("log-jump");
  const search = $("log-search"), pauseButton = $("log-pause"), earlierButton = $("log-earlier");
  const MAX_ROWS = 5000;          // the DOM keeps the newest 5,000 rows
  const MAX_PENDING = 5000;       // entries held while paused
  const LEVELS = ["log", "info", "warn", "error", "debug"];

  let socket = null, userClosed = true, retries = 0, retryTimer = null, closingReason = null;
  let following = true, unseen = 0, paused = false, pending = [];

  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const clock = (ms) => {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  };

  function setConn(state, detail) {
    conn.className = `conn conn-${state}`;
    conn.dataset.state = state;
    conn.textContent = detail ? `${state}: ${detail}` : state;
  }

  function enabledLevels() {
    return new Set(LEVELS.filter((level) => $(`log-level-${level}`).checked));
  }

  function visible(li, levels, needle) {
    const entry = li.entry;
    if (!entry) return true; // notices always show
    if (!levels.has(entry.level)) return false;
    if (!needle || entry.message.toLowerCase().includes(needle)) return true;
    // A structured line's fields are searched too, names and values.
    return Object.entries(entry.fields || {}).some(([key, value]) =>
      `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`.toLowerCase().includes(needle));
  }

  function makeRow(entry) {
    const li = document.createElement("li");
    li.entry = entry;
    li.dataset.timestamp = entry.timestamp;
    li.dataset.level = entry.level;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(entry.timestamp);
    const badge = document.createElement("span");
    badge.className = `badge level-${entry.level}`;
    badge.textContent = entry.level;
    const message = document.createElement("span");
    message.className = "message";
    if (entry.type === "request") {
      li.className = "request";
      const status = entry.status == null ? "-" : entry.status;
      const outcome = entry.outcome === "ok" ? "" : ` ${entry.outcome}`;
      // An MCP request shows what it called (its Mcp-Method and Mcp-Name).
      const what = entry.mcpMethod
        ? [entry.mcpMethod, entry.mcpName].filter(Boolean).join(" ")
        : `${entry.method} ${entry.path}`;
      message.textContent = `${what} ${status} ${entry.wallMs} ms${outcome}`;
    } else {
      message.textContent = entry.message;
    }
    // On a cluster, which host served the request (hover to see).
    if (entry.node) li.title = `served by ${entry.node}`;
    li.append(time, badge, message);
    // A trap's exception, collapsed under the request row.
    if (entry.exception) {
      const details = document.createElement("details");
      details.className = "exception";
      const summary = document.createElement("summary");
      summary.textContent = `${entry.exception.name}: ${entry.exception.message}`;
      const stack = document.createElement("pre");
      stack.textContent = entry.exception.stack.map((frame) => `at ${frame}`).join("\n");
      details.append(summary, stack);
      li.append(details);
    }
    // A structured line's other fields, as key=value chips (text, never HTML).
    for (const [key, value] of Object.entries(entry.fields || {})) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`;
      li.append(chip);
    }
    return li;
  }

  function makeNotice(text) {
    const li = document.createElement("li");
    li.className = "notice";
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = text;
    li.append(message);
    return li;
  }

  function scrollToBottom() {
    list.scrollTop = list.scrollHeight;
  }

  function updateJump() {
    jump.hidden = following || unseen === 0;
    jump.textContent = `${unseen} new — jump to latest`;
  }

  function appendRows(rows) {
    if (rows.length === 0) return;
    const levels = enabledLevels(), needle = search.value.trim().toLowerCase();
    const fragment = document.createDocumentFragment();
    let shown = 0;
    for (const li of rows) {
      li.hidden = !visible(li, levels, needle);
      if (!li.hidden) shown++;
      fragment.append(li);
    }
    list.append(fragment);
    while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
    if (following) {
      scrollToBottom();
    } else {
      unseen += shown;
    }
    updateJump();
  }

  // "Load earlier" (a server whose logs the host keeps): pages of stored
  // entries, newest first, from the API; kept are those older than every
  // row shown (by seq), prepended in order without moving the view.
  let earlierCursor = null, earlierDone = false;
  async function loadEarlier() {
    earlierButton.disabled = true;
    const shown = [...list.children].map((li) => li.entry?.seq).filter(Boolean);
    const below = shown.length ? Math.min(...shown) : Infinity;
    const older = [];
    try {
      while (older.length === 0 && !earlierDone) {
        const cursor = earlierCursor ? `&cursor=${encodeURIComponent(earlierCursor)}` : "";
        const response = await fetch(
          `${base}/api/servers/${encodeURIComponent(slug)}/logs?limit=200${cursor}`,
          { credentials: "same-origin" });
        const page = await response.json().catch(() => ({}));
        if (!response.ok) {
          receive([makeNotice(`earlier entries: ${response.status} ${page.error || response.statusText}`)]);
          earlierButton.disabled = false;
          return;
        }
        older.push(...page.entries.filter((entry) => entry.seq < below));
        earlierCursor = page.next;
        earlierDone = page.next == null;
      }
    } catch (_) {
      earlierButton.disabled = false; // offline for a moment: try again
      return;
    }
    const rows = older.reverse().map(makeRow);
    const levels = enabledLevels(), needle = search.value.trim().toLowerCase();
    const fromBottom = list.scrollHeight - list.scrollTop;
    for (const li of rows) li.hidden = !visible(li, levels, needle);
    list.prepend(...rows);
    list.scrollTop = list.scrollHeight - fromBottom;
    earlierButton.disabled = earlierDone;
    earlierButton.textContent = earlierDone ? "No earlier entries" : "Load earlier";
  }

  function receive(rows) {
    if (paused) {
      pending.push(...rows);
      if (pending.length > MAX_PENDING) pending.splice(0, pending.length - MAX_PENDING);
      pauseButton.textContent = `Resume (${pending.length})`;
    } else {
      appendRows(rows);
    }
  }

  function onFrame(frame) {
    if (frame.type === "logs") {
      receive(frame.entries.map(makeRow));
      if (frame.entries.some((entry) => entry.type === "deploy")) deployments.refresh();
    } else if (frame.type === "dropped") {
      receive([makeNotice(`${frame.count} entries missed (this viewer fell behind, or the cluster link was down)`)]);
    } else if (frame.type === "notice") {
      receive([makeNotice(frame.message)]);
    } else if (frame.type === "closing") {
      closingReason = frame.reason;
    }
  }

  function streamPath() {
    return `${base}/log-stream/${encodeURIComponent(slug)}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    closingReason = null;
    setConn(retries === 0 ? "connecting" : "reconnecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}${streamPath()}`);
    socket = ws;
    ws.onopen = () => {
      retries = 0;
      setConn("live");
    };
    ws.onmessage = (event) => onFrame(JSON.parse(event.data));
    ws.onclose = () => {
      if (socket !== ws || userClosed) return;
      socket = null;
      if (closingReason) {
        // The host closed this viewer on purpose (idle, too slow): say why.
        setConn("closed", closingReason);
        return;
      }
      diagnose();
    };
  }

  // A browser does not expose why a WebSocket handshake failed, so ask the
  // endpoint over plain HTTP: 401/403/404/429 are final and shown; anything
  // else is a dropped connection, retried with backoff.
  async function diagnose() {
    let response = null;
    try {
      response = await fetch(streamPath(), { credentials: "same-origin" });
    } catch (_) {
      // the host is unreachable: retry
    }
    if (userClosed) return;
    if (response && [401, 403, 404, 429].includes(response.status)) {
      const body = await response.json().catch(() => ({}));
      setConn("closed", `${response.status} ${body.error || response.statusText}`);
      return;
    }
    const delay = Math.min(1000 * 2 ** retries, 16000);
    retries++;
    setConn("reconnecting", `retrying in ${delay / 1000} s`);
    retryTimer = setTimeout(connect, delay);
  }

  function open() {
    modal.hidden = false;
    userClosed = false;
    retries = 0;
    following = true;
    unseen = 0;
    updateJump();
    connect();
  }

  function close() {
    userClosed = true;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000, "viewer closed");
    socket = null;
    modal.hidden = true;
    setConn("closed");
  }

  function refilter() {
    const levels = enabledLevels(), needle = search.value.trim().toLowerCase();
    for (const li of list.children) li.hidden = !visible(li, levels, needle);
    if (following) scrollToBottom();
  }

  list.addEventListener("scroll", () => {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
    following = atBottom;
    if (atBottom) unseen = 0;
    updateJump();
  });
  jump.addEventListener("click", () => {
    following = true;
    unseen = 0;
    scrollToBottom();
    updateJump();
  });
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume (0)" : "Pause";
    if (!paused) {
      appendRows(pending);
      pending = [];
    }
  });
  earlierButton?.addEventListener("click", loadEarlier);
  $("log-clear").addEventListener("click", () => {
    list.replaceChildren();
    earlierCursor = null;
    earlierDone = false;
    if (earlierButton) {
      earlierButton.disabled = false;
      earlierButton.textContent = "Load earlier";
    }
    pending = [];
    unseen = 0;
    updateJump();
  });
  search.addEventListener("input", refilter);
  for (const level of LEVELS) $(`log-level-${level}`).addEventListener("change", refilter);
  $("log-close").addEventListener("click", close);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !modal.hidden) close();
  });
  button.addEventListener("click", open);
})();

// `serve --dev` prints `/login#token=…`: the fragment never reaches a
// server (nor its logs), and it only fills the form in — signing in is
// still the visitor's own button press, so a link cannot sign anyone in.
(() => {
  const field = document.getElementById("token");
  const match = /^#token=(.+)$/.exec(window.location.hash);
  if (!field || !match) return;
  field.value = decodeURIComponent(match[1]);
  history.replaceState(null, "", window.location.pathname);
  document.getElementById("sign-in")?.focus();
})();
