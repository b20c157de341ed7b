// The kurir mock web UI: plain JavaScript, no build step, no CDN. It talks
// to the JSON API (/api/v1, docs/api.md) and keeps the list live through
// the Server-Sent Events stream /api/v1/events. HTML bodies render in a
// sandboxed iframe (no scripts, no forms) whose Content-Security-Policy
// blocks remote content until the user asks for it.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path, opts) => fetch("/api/v1" + path, opts).then(async (r) => {
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(body.error || r.status);
  return body;
});

const state = { mailbox: "", query: "", selected: null, tab: "html", remote: false, messages: [] };

function qs(extra) {
  const p = new URLSearchParams();
  if (state.mailbox) p.set("mailbox", state.mailbox);
  if (state.query) p.set("query", state.query);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  const s = p.toString();
  return s ? "?" + s : "";
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

async function loadMailboxes() {
  const { mailboxes } = await api("/mailboxes");
  const sel = $("mailbox");
  const keep = state.mailbox;
  sel.replaceChildren(el("option", { value: "" }, "All mailboxes"));
  let seen = false;
  for (const m of mailboxes) {
    sel.append(el("option", { value: m.name }, `${m.name} (${m.unread}/${m.total})`));
    if (m.name === keep) seen = true;
  }
  if (keep && !seen) sel.append(el("option", { value: keep }, `${keep} (0/0)`));
  sel.value = keep;
}

async function loadList() {
  let body;
  try {
    body = await api("/messages" + qs({ limit: 500 }));
  } catch (e) {
    $("count").textContent = "Search error: " + e.message;
    return;
  }
  state.messages = body.messages;
  $("count").textContent = `${body.total} message${body.total === 1 ? "" : "s"}`;
  const list = $("list");
  list.replaceChildren();
  for (const m of body.messages) {
    const li = el("li", { "data-testid": "message", "data-id": m.id, class: m.read ? "" : "unread" },
      el("div", { class: "row" },
        el("span", { class: "from" }, m.header_from || m.from || "<>"),
        el("span", { class: "time" }, when(m.received))),
      el("div", { class: "row" },
        el("span", { class: "subject", "data-testid": "subject" }, m.subject || "(no subject)"),
        el("span", { class: "box" }, (m.attachment_count ? `${m.attachment_count} att. \u00B7 ` : "") + m.mailbox)));
    if (m.id === state.selected) li.classList.add("selected");
    li.addEventListener("click", () => openMessage(m.id));
    list.append(li);
  }
}

function refresh() {
  clearTimeout(refresh.timer);
  refresh.timer = setTimeout(() => { loadList(); loadMailboxes(); }, 50);
}

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const t of ["html", "text", "headers", "raw"]) $("t-" + t).hidden = t !== tab;
  $("remote-bar").hidden = tab !== "html" || state.remote || !state.hasRemote;
  if (tab === "raw" && state.selected && !$("t-raw").dataset.loaded) {
    fetch(`/api/v1/messages/${encodeURIComponent(state.selected)}/raw`).then((r) => r.text()).then((t) => {
      $("t-raw").textContent = t;
      $("t-raw").dataset.loaded = "1";
    });
  }
}

const REMOTE = /^\s*(https?:)?\/\//i;
const URL_ATTRS = ["src", "srcset", "background", "poster"];

// The HTML body as the iframe's document. It is parsed with DOMParser (an
// inert document: nothing loads, no script runs), cid: references point at
// the message's parts, and unless the user asked, remote URLs are taken out
// of the markup (data-kurir-* keeps them) and a CSP forbids any that remain
// (in CSS, say): the browser's preload scanner never sees a remote URL.
function renderHtml(m) {
  const origin = location.origin;
  const doc = new DOMParser().parseFromString(m.html || "", "text/html");
  const cids = new Map((m.inline || []).map((p) => [p.content_id.replace(/^<|>$/g, ""),
    `${origin}/api/v1/messages/${encodeURIComponent(m.id)}/parts/${p.part}?inline=1`]));
  let remote = /url\(\s*["']?\s*(https?:)?\/\//i.test(m.html || "");
  for (const e of doc.querySelectorAll("[src],[srcset],[background],[poster],link[href]")) {
    for (const a of URL_ATTRS.concat(e.tagName === "LINK" ? ["href"] : [])) {
      const v = e.getAttribute(a);
      if (v === null) continue;
      if (/^\s*cid:/i.test(v)) {
        const target = cids.get(v.trim().slice(4));
        if (target) e.setAttribute(a, target); else e.removeAttribute(a);
      } else if (REMOTE.test(v) || (a === "srcset" && /(https?:)?\/\//i.test(v))) {
        remote = true;
        if (!state.remote) {
          e.setAttribute("data-kurir-" + a, v);
          e.removeAttribute(a);
        }
      }
    }
  }
  state.hasRemote = remote;
  const csp = state.remote
    ? "default-src 'none'; img-src * data:; style-src 'unsafe-inline' *; font-src *; media-src *"
    : `default-src 'none'; img-src data: ${origin}; style-src 'unsafe-inline'`;
  const meta = doc.createElement("meta");
  meta.httpEquiv = "Content-Security-Policy";
  meta.content = csp;
  const base = doc.createElement("base");
  base.target = "_blank";
  doc.head.prepend(meta, base);
  for (const s of doc.querySelectorAll("script")) s.remove();
  $("t-html").srcdoc = "<!doctype html>" + doc.documentElement.outerHTML;
}

async function openMessage(id) {
  state.selected = id;
  state.remote = false;
  for (const li of $("list").children) li.classList.toggle("selected", li.dataset.id === id);
  const m = await api("/messages/" + encodeURIComponent(id));
  $("empty").hidden = true;
  $("message").hidden = false;
  $("m-subject").textContent = m.subject || "(no subject)";
  $("m-from").textContent = m.header_from || m.from;
  $("m-to").textContent = [m.header_to, m.header_cc && "Cc: " + m.header_cc].filter(Boolean).join("  ") || m.to.join(", ");
  $("m-envelope").textContent = `${m.from || "<>"} \u2192 ${m.to.join(", ")}${m.tls ? "  (TLS " + m.tls + ")" : ""}${m.auth ? "  (AUTH " + m.auth + ")" : ""}`;
  $("m-date").textContent = when(m.date || m.received);
  $("m-mailbox").textContent = m.mailbox;
  $("m-download").href = `/api/v1/messages/${encodeURIComponent(id)}/raw?download=1`;
  const atts = $("m-attachments");
  atts.replaceChildren();
  for (const a of m.attachments) {
    atts.append(el("li", {}, el("a", {
      href: `/api/v1/messages/${encodeURIComponent(id)}/parts/${a.part}`, "data-testid": "attachment",
      download: a.filename || "part",
    }, `${a.filename || a.content_type} (${a.size} B)`)));
  }
  $("t-text").textContent = m.text || "";
  const table = $("t-headers");
  table.replaceChildren();
  for (const h of m.headers) table.append(el("tr", {}, el("td", {}, h.name), el("td", {}, h.value)));
  $("t-raw").textContent = "";
  delete $("t-raw").dataset.loaded;
  state.current = m;
  renderHtml(m);
  showTab(m.html ? (state.tab === "html" ? "html" : state.tab) : (state.tab === "html" ? "text" : state.tab));
  if (!m.read) {
    await api(`/messages/${encodeURIComponent(id)}/read`, { method: "PUT" });
  }
}

function closeMessage() {
  state.selected = null;
  $("message").hidden = true;
  $("empty").hidden = false;
}

function connectEvents() {
  const es = new EventSource("/api/v1/events");
  es.onopen = () => { $("live").textContent = "live"; $("live").className = "live on"; };
  es.onerror = () => { $("live").textContent = "offline"; $("live").className = "live off"; };
  for (const kind of ["new", "deleted", "read"]) {
    es.addEventListener(kind, (ev) => {
      const data = JSON.parse(ev.data);
      if (kind === "deleted" && data.id === state.selected) closeMessage();
      refresh();
    });
  }
}

function init() {
  const params = new URLSearchParams(location.search);
  state.mailbox = params.get("mailbox") || "";
  state.query = params.get("query") || "";
  $("search").value = state.query;
  $("mailbox").addEventListener("change", (e) => { state.mailbox = e.target.value; loadList(); });
  let t;
  $("search").addEventListener("input", (e) => {
    clearTimeout(t);
    t = setTimeout(() => { state.query = e.target.value.trim(); loadList(); }, 200);
  });
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("load-remote").addEventListener("click", () => { state.remote = true; renderHtml(state.current); showTab("html"); });
  $("m-delete").addEventListener("click", async () => {
    if (!state.selected) return;
    await api("/messages/" + encodeURIComponent(state.selected), { method: "DELETE" });
    closeMessage();
    refresh();
  });
  $("m-unread").addEventListener("click", async () => {
    if (!state.selected) return;
    await api(`/messages/${encodeURIComponent(state.selected)}/read`, { method: "DELETE" });
    refresh();
  });
  $("delete-all").addEventListener("click", async () => {
    const what = state.mailbox ? `every message in mailbox "${state.mailbox}"` : "every message";
    if (!confirm(`Delete ${what}${state.query ? " matching the search" : ""}?`)) return;
    await api("/messages" + qs(), { method: "DELETE" });
    closeMessage();
    refresh();
  });
  loadMailboxes().then(loadList);
  connectEvents();
}

init();
