// The selflab console's own script: keeps the page live, posts its forms.
// No framework, no build step. The server sends a new "stamp" over
// server-sent events (/stream) whenever the ledger changes; when it differs
// from the stamp the page's #view was drawn at, the page fetches itself
// again (header X-Selflab-Partial: 1) and patches #view in place (only the
// elements that changed). A swap waits while a field inside #view is being
// edited.
"use strict";

(function () {
  const MIN_GAP_MS = 250;
  let latest = null;       // the newest stamp the stream sent
  let fetching = false;
  let again = false;       // a change came while fetching (or editing): fetch once more
  let lastFetch = 0;

  function view() { return document.getElementById("view"); }

  function editing() {
    const active = document.activeElement;
    const v = view();
    return Boolean(active && v && v.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
  }

  function setLive(on, text) {
    const dot = document.getElementById("live-dot");
    const label = document.getElementById("live-text");
    if (dot) { dot.className = "dot " + (on ? "on" : "off"); }
    if (label) { label.textContent = text; }
  }

  function flash(text, kind) {
    const box = document.getElementById("flash");
    if (!box) { return; }
    box.textContent = text;
    box.className = kind;
    box.dataset.kind = kind;
  }

  function openDetails(root) {
    const open = new Set();
    root.querySelectorAll("tr[data-event] details[open]").forEach(function (d) {
      open.add(d.closest("tr").dataset.event);
    });
    return open;
  }

  // Bring `old` up to date with `fresh` (the same element, drawn later),
  // touching only what differs: a live page redraws a counter or a row, not
  // every table, so the browser's layout work (and its share of the cores a
  // campaign runs on) stays small. Children are matched by position; where
  // their number, tags or ids differ, the whole element is swapped.
  function sameShape(a, b) {
    if (a.children.length !== b.children.length) { return false; }
    for (let i = 0; i < a.children.length; i++) {
      const x = a.children[i], y = b.children[i];
      if (x.tagName !== y.tagName || x.id !== y.id) { return false; }
    }
    return true;
  }

  function patch(old, fresh) {
    if (old.isEqualNode(fresh)) { return; }
    const leaf = old.children.length === 0 || fresh.children.length === 0;
    if (leaf || old.tagName !== fresh.tagName || !sameShape(old, fresh) || old.childNodes.length !== fresh.childNodes.length) {
      old.replaceWith(fresh);
      return;
    }
    for (const name of old.getAttributeNames()) {
      if (!fresh.hasAttribute(name)) { old.removeAttribute(name); }
    }
    for (const name of fresh.getAttributeNames()) {
      if (old.getAttribute(name) !== fresh.getAttribute(name)) { old.setAttribute(name, fresh.getAttribute(name)); }
    }
    const olds = Array.from(old.childNodes), freshes = Array.from(fresh.childNodes);
    for (let i = 0; i < olds.length; i++) {
      const a = olds[i], b = freshes[i];
      if (a.nodeType === Node.ELEMENT_NODE && b.nodeType === Node.ELEMENT_NODE) {
        patch(a, b);
      } else if (!a.isEqualNode(b)) {
        a.replaceWith(b);
      }
    }
  }

  async function refresh() {
    if (fetching) { again = true; return; }
    if (editing()) { again = true; return; }
    const wait = lastFetch + MIN_GAP_MS - Date.now();
    if (wait > 0) {
      fetching = true;
      setTimeout(function () { fetching = false; refresh(); }, wait);
      return;
    }
    fetching = true;
    again = false;
    lastFetch = Date.now();
    try {
      const response = await fetch(location.pathname + location.search, {
        headers: { "X-Selflab-Partial": "1" }, cache: "no-store", credentials: "same-origin",
      });
      const text = await response.text();
      const holder = document.createElement("template");
      holder.innerHTML = text;
      const fresh = holder.content.querySelector("#view");
      const old = view();
      if (fresh && old && !editing()) {
        const open = openDetails(old);
        fresh.querySelectorAll("tr[data-event]").forEach(function (row) {
          if (open.has(row.dataset.event)) {
            const d = row.querySelector("details");
            if (d) { d.open = true; }
          }
        });
        patch(old, fresh);
        document.body.dataset.position = fresh.dataset.position || "";
        markImages();
      } else if (!fresh) {
        flash("the page could not be brought up to date (" + response.status + ")", "error");
      } else {
        again = true;
      }
    } catch (err) {
      setLive(false, "reconnecting");
    } finally {
      fetching = false;
    }
    const v = view();
    if (again && latest !== null && v && latest !== v.dataset.stamp) { refresh(); }
  }

  // body[data-images="ready"] once every image of #view has loaded (or failed):
  // the marker a person's eye (and a test) waits for on the plots page.
  function markImages() {
    const images = Array.from(document.querySelectorAll("#view img"));
    const check = function () {
      if (images.every(function (img) { return img.complete; })) { document.body.dataset.images = "ready"; }
    };
    document.body.dataset.images = "loading";
    images.forEach(function (img) {
      if (!img.complete) {
        img.addEventListener("load", check);
        img.addEventListener("error", check);
      }
    });
    check();
  }

  function onStamp(stamp) {
    latest = stamp;
    const v = view();
    if (v && stamp !== v.dataset.stamp) { refresh(); }
  }

  function connect() {
    const url = document.body.dataset.stream;
    if (!url || typeof EventSource === "undefined") { return; }
    const source = new EventSource(url);
    source.addEventListener("open", function () {
      setLive(true, "live");
      document.body.dataset.ready = "1";
    });
    source.addEventListener("stamp", function (event) { onStamp(event.data); });
    source.addEventListener("error", function () { setLive(false, "reconnecting"); });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  async function post(form) {
    const button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; }
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
      let data;
      try { data = await response.json(); } catch (err) { data = { ok: false, error: "HTTP " + response.status }; }
      if (data.ok) {
        flash(data.message, "ok");
        if (form.dataset.reload === "1") { location.reload(); return; }
        form.reset();
        refresh();
      } else {
        flash(data.error, "error");
      }
    } catch (err) {
      flash("the console did not answer: " + err, "error");
    } finally {
      if (button) { button.disabled = false; }
    }
  }

  document.addEventListener("submit", function (event) {
    const form = event.target.closest("form.js-post");
    if (!form) { return; }
    event.preventDefault();
    post(form);
  });

  document.addEventListener("focusout", function () {
    setTimeout(function () { if (again && !editing()) { refresh(); } }, 0);
  });

  document.addEventListener("DOMContentLoaded", function () {
    const v = view();
    if (v) { document.body.dataset.position = v.dataset.position || ""; }
    markImages();
    connect();
  });
}());
