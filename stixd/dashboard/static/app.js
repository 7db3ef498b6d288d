// stix dashboard: renders a page's data again whenever the server says what it shows changed.
// The first view comes rendered in the HTML; this file only keeps it live. Text is set with
// textContent and createElement, never parsed as HTML, so any name shows as the text it is.
"use strict";
(function () {
  var body = document.body;
  var api = body.dataset.api;
  if (!api) return;
  var watch = (body.dataset.watch || "").split(" ").filter(Boolean);
  var live = document.getElementById("live");
  var main = document.getElementById("main");
  var logBox = document.getElementById("log");
  var fetching = false, again = false;
  var LOG_LIMIT = 400000;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function cell(v) {
    var td = el("td");
    if (v !== null && typeof v === "object") {
      if (v.h) { var a = el("a", "", v.t); a.href = v.h; td.appendChild(a); }
      else if (v.s) td.appendChild(el("span", "badge st-" + String(v.t).toLowerCase().replace(/[^a-z_]/g, "").slice(0, 24), v.t));
      else td.textContent = v.t;
    } else td.textContent = String(v);
    return td;
  }
  function section(s) {
    var sec = el("section"), table = el("table"), head = el("tr"), tbody = el("tbody");
    sec.appendChild(el("h2", "", s.title));
    s.columns.forEach(function (c) { head.appendChild(el("th", "", c)); });
    var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
    if (s.rows.length === 0) {
      var td = el("td", "empty", s.empty); td.colSpan = s.columns.length || 1;
      var tr = el("tr"); tr.appendChild(td); tbody.appendChild(tr);
    }
    s.rows.forEach(function (r) {
      var tr = el("tr"); r.forEach(function (v) { tr.appendChild(cell(v)); }); tbody.appendChild(tr);
    });
    table.appendChild(tbody); sec.appendChild(table);
    return sec;
  }
  function pager(p) {
    var nav = el("nav", "pager");
    [["\u2190 newer", p.newer], ["older \u2192", p.older]].forEach(function (x, i) {
      var e = x[1] ? el("a", "", x[0]) : el("span", "", x[0]);
      if (x[1]) e.href = x[1];
      if (i) nav.appendChild(document.createTextNode(" "));
      nav.appendChild(e);
    });
    return nav;
  }
  function render(page) {
    var frag = document.createDocumentFragment();
    page.sections.forEach(function (s) { frag.appendChild(section(s)); });
    if (page.pager) frag.appendChild(pager(page.pager));
    main.replaceChildren(frag);
  }
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(api, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (page) { if (page) render(page); })
      .catch(function () {})
      .then(function () { fetching = false; if (again) { again = false; refresh(); } });
  }
  function say(state) { live.textContent = state; live.className = "live is-" + state; }

  var url = "/api/v1/dashboard/events";
  if (logBox) {
    url += "?cluster=" + encodeURIComponent(body.dataset.logCluster) + "&job=" + encodeURIComponent(body.dataset.logJob);
  }
  var source = new EventSource(url);
  source.onopen = function () { say("live"); };
  source.onerror = function () { say("reconnecting"); };
  source.addEventListener("change", function (e) {
    var kinds = JSON.parse(e.data);
    if (kinds.some(function (k) { return watch.indexOf(k) >= 0; })) refresh();
  });
  if (logBox) {
    source.addEventListener("log", function (e) {
      var text = logBox.textContent + JSON.parse(e.data);
      logBox.textContent = text.length > LOG_LIMIT ? text.slice(-LOG_LIMIT) : text;
    });
    source.addEventListener("logend", function (e) {
      logBox.appendChild(el("div", "logend", "(log ended: " + JSON.parse(e.data) + ")"));
      source.close(); say("ended");
    });
  }
  window.addEventListener("pagehide", function () { source.close(); });
})();
