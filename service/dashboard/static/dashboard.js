// okr-sync dashboard: reads the progress API with the user's token, live through
// GET /api/v1/stream. Hand-written, no dependency, no build step.
"use strict";
(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "okr-sync-token";
  const POLL_MS = 5000;
  const STREAM_RETRY_MS = 30000;
  const params = new URLSearchParams(location.search);
  // A wall screen shows one team at a time, for `cycle` seconds each (default 15).
  const TV_CYCLE_MS = (Number(params.get("cycle")) || 15) * 1000;
  const STATUS_TEXT = {
    achieved: "Achieved", on_track: "On track", at_risk: "At risk",
    off_track: "Off track", no_data: "No data",
  };
  const tv = params.get("tv") === "1";
  const krPage = location.pathname.match(/^\/kr\/(\d+)$/);
  const state = {
    token: localStorage.getItem(TOKEN_KEY), period: params.get("period") || "current",
    tree: null, etag: null, teams: new Map(), connectors: [], teamIndex: 0,
    streaming: false, pollTimer: null, generation: 0, controller: null, retryTimer: null,
  };
  const $ = (id) => document.getElementById(id);

  // A DOM element from a tag, attributes and children (strings become text nodes: data
  // from the API is never parsed as HTML).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "style") el.style.cssText = v; else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const svg = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  };

  class Unauthorized extends Error {}

  async function api(path, init) {
    const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, (init || {}).headers);
    const response = await fetch(API + path, Object.assign({ cache: "no-store" }, init, { headers }));
    if (response.status === 401) throw new Unauthorized();
    return response;
  }
  async function json(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }
  async function all(path) {
    const items = [];
    let cursor = null;
    const seen = new Set();
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await json(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
      items.push(...page.items);
      seen.add(cursor);
      cursor = page.next_cursor;
    } while (cursor && !seen.has(cursor)); // stop on a repeated cursor
    return items;
  }

  // ------------------------------------------------------------------ formatting
  const lang = navigator.language || "en";
  const number = (v, digits) => new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(v);
  function formatValue(v, kr) {
    if (v === null || v === undefined) return "—";
    if (kr.unit === "currency" && kr.currency) {
      return new Intl.NumberFormat(lang, { style: "currency", currency: kr.currency, maximumFractionDigits: 0 }).format(v);
    }
    if (kr.unit === "percent") return `${number(v, 1)} %`;
    return number(v, Math.abs(v) < 100 ? 1 : 0);
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" }) : "never");
  const pct = (x) => `${(Math.max(0, Math.min(1, x)) * 100).toFixed(1)}%`;

  // ------------------------------------------------------------------ pieces
  function progressBar(item, label) {
    const now = Math.round(item.progress * 100);
    return h("div", {
      class: "bar", "data-status": item.status, role: "progressbar", "aria-label": label, "aria-valuemin": 0,
      "aria-valuemax": 100, "aria-valuenow": now,
      "aria-valuetext": `${now}% done, ${Math.round(item.expected_progress * 100)}% expected`,
    },
    h("span", { class: "fill", style: `width:${pct(item.progress)}` }),
    h("span", { class: "expected", style: `left:${pct(item.expected_progress)}`, title: "Expected progress today" }));
  }
  const badge = (status) => h("span", { class: "badge", "data-status": status }, STATUS_TEXT[status] || status);

  function keyResultCard(kr, headingLevel) {
    const unitWord = kr.unit === "count" ? "" : kr.unit === "score" ? " points" : "";
    return h("li", { class: "kr", "data-kr": kr.key_result_id, "data-status": kr.status },
      h(`h${headingLevel}`, {}, h("a", { href: `/kr/${kr.key_result_id}` }, kr.title)),
      progressBar(kr, `Progress of ${kr.title}`),
      h("p", { class: "figures" }, badge(kr.status), " ",
        h("span", { class: "value" }, formatValue(kr.value, kr)), " of ",
        formatValue(kr.target, kr), unitWord,
        kr.responses !== null && kr.responses !== undefined ? ` (${number(kr.responses, 0)} responses)` : null),
      h("p", { class: "meta" },
        `Forecast ${formatValue(kr.forecast, kr)}`,
        kr.ambition ? ` · Ambition: ${kr.ambition}` : null,
        kr.baseline_previous_period !== null && kr.baseline_previous_period !== undefined
          ? ` (last period ${formatValue(kr.baseline_previous_period, kr)})` : null,
        h("span", { class: "why" }, " · ", h("a", { href: `/kr/${kr.key_result_id}#records` }, "Why this number?")),
        kr.stale ? h("span", { class: "stale-flag" }, ` · Stale since ${when(kr.last_synced_at)}`) : null),
      kr.initiatives && kr.initiatives.length
        ? h("ul", { class: "initiatives", "aria-label": `Initiatives for ${kr.title}` },
          kr.initiatives.map((i) => h("li", {}, `${i.title} (${i.status.replace("_", " ")})`)))
        : null);
  }

  function objectiveCard(o, depth) {
    const team = state.teams.get(o.team_id);
    const level = Math.min(2 + depth, 5);
    return h("section", { class: "objective", "data-objective": o.objective_id, "data-status": o.status, "aria-labelledby": `o${o.objective_id}` },
      h("header", {},
        h("p", { class: "team" }, depth === 0 && team && team.parent_id === null ? `Company · ${team.name}` : team ? team.name : "Objective"),
        h(`h${level}`, { id: `o${o.objective_id}` }, o.title),
        progressBar(o, `Progress of ${o.title}`),
        h("p", { class: "figures" }, badge(o.status), ` ${Math.floor(o.progress * 100)}% done, ${Math.round(o.expected_progress * 100)}% expected`)),
      h("ul", { class: "krs", "aria-label": `Key results of ${o.title}` }, o.key_results.map((kr) => keyResultCard(kr, level + 1))),
      (o.children || []).map((c) => objectiveCard(c, depth + 1)));
  }

  function banners(keyResults) {
    const out = [];
    for (const c of state.connectors) {
      if (c.last_run_status === "failed") {
        out.push(h("p", { class: "banner failed", role: "alert" },
          `The last sync of ${c.name} failed; figures from it date from its last good sync (${when(c.last_success_at)}).`));
      }
    }
    const stale = keyResults.filter((kr) => kr.stale);
    if (stale.length) {
      const oldest = stale.map((kr) => kr.last_synced_at).filter(Boolean).sort()[0] || null;
      out.push(h("p", { class: "banner stale", role: "status" },
        `${stale.length} key result(s) show stale data: last good sync ${when(oldest)}.`));
    }
    $("banners").replaceChildren(...out);
  }

  function allKeyResults(objectives) {
    return objectives.flatMap((o) => [...o.key_results, ...allKeyResults(o.children || [])]);
  }

  // ------------------------------------------------------------------ the pyramid
  // Every team owning an objective anywhere in the pyramid, in the order they appear.
  function teamsOf(objectives, ids = []) {
    for (const o of objectives) {
      if (!ids.includes(o.team_id)) ids.push(o.team_id);
      teamsOf(o.children || [], ids);
    }
    return ids;
  }
  // A team's objectives (with those aligned to them), wherever they sit in the pyramid.
  function objectivesOf(objectives, team) {
    return objectives.flatMap((o) => (o.team_id === team ? [o] : objectivesOf(o.children || [], team)));
  }

  function renderTree() {
    const tree = state.tree;
    if (!tree) return;
    let objectives = tree.objectives;
    let heading = `Period ${tree.period}`;
    if (tv) {
      // One team's objectives at a time on a TV screen.
      const teams = teamsOf(tree.objectives);
      const team = teams[state.teamIndex % Math.max(teams.length, 1)];
      objectives = objectivesOf(objectives, team);
      const t = state.teams.get(team);
      if (t) heading = `${t.name} · ${tree.period}`;
    }
    document.title = `OKRs ${tree.period} · okr-sync`;
    banners(allKeyResults(tree.objectives));
    $("view").replaceChildren(
      h("h1", { class: "period" }, heading),
      h("p", { class: "period-summary", "data-status": tree.status }, badge(tree.status),
        ` ${Math.floor(tree.progress * 100)}% done, ${Math.round(tree.expected_progress * 100)}% of the period elapsed (${tree.window.start} to ${tree.window.end})`),
      ...(objectives.length ? objectives.map((o) => objectiveCard(o, 0)) : [h("p", {}, "No objectives in this period.")]));
  }

  async function loadTree() {
    const headers = state.etag ? { "If-None-Match": state.etag } : {};
    const response = await api(`/progress?period=${encodeURIComponent(state.period)}`, { headers });
    if (response.status === 304) return false;
    if (response.status === 404 || response.status === 422) {
      $("view").replaceChildren(h("p", { class: "error", role: "alert" }, `No period “${state.period}”.`));
      return false;
    }
    if (!response.ok) throw new Error(`progress: HTTP ${response.status}`);
    state.etag = response.headers.get("ETag");
    state.tree = await response.json();
    renderTree();
    return true;
  }

  // A key result's new progress object (a stream event): replace it where the tree holds it.
  function applyProgress(kr) {
    if (!state.tree) return;
    const replace = (objectives) => {
      for (const o of objectives) {
        const i = o.key_results.findIndex((k) => k.key_result_id === kr.key_result_id);
        if (i >= 0) { o.key_results[i] = kr; return true; }
        if (replace(o.children || [])) return true;
      }
      return false;
    };
    if (replace(state.tree.objectives)) renderTree();
  }

  // ------------------------------------------------------------------ live updates
  // EventSource cannot send an Authorization header: read the event stream with fetch.
  // The stream follows the current period; another period's key results are named (the
  // stream sends their changes only, whatever period they belong to).
  function streamPath() {
    if (state.period === "current") return "/stream";
    const ids = state.tree ? allKeyResults(state.tree.objectives).map((kr) => kr.key_result_id) : [];
    if (!ids.length || ids.length > 100) return null; // 100: the stream's limit; poll instead
    return `/stream?${ids.map((id) => `key_result=${id}`).join("&")}`;
  }

  async function stream(generation) {
    const path = streamPath();
    if (!path) throw new Error("nothing to stream");
    state.controller = new AbortController();
    const response = await api(path, { signal: state.controller.signal, headers: { Accept: "text/event-stream" } });
    if (generation !== state.generation) return;
    if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
    state.streaming = true;
    live("Live");
    stopPolling();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(event, JSON.parse(data.join("\n")));
      }
    }
    state.streaming = false;
  }

  function onEvent(event, data) {
    if (event === "progress") applyProgress(data);
    else if (event === "removed") loadTree().catch(failed);
    else if (event === "tree" && data.etag && data.etag !== state.etag) {
      // The current period changed as a whole (objectives added, renamed, moved).
      if (state.tree && (state.period === "current" || state.period === data.period || state.period === String(data.period_id))) {
        loadTree().catch(failed);
      }
    }
  }

  function live(text) { $("live").textContent = text; }
  function stopPolling() { clearInterval(state.pollTimer); state.pollTimer = null; }
  function startPolling() {
    if (state.pollTimer) return;
    live(`Updating every ${POLL_MS / 1000} s`);
    state.pollTimer = setInterval(() => loadTree().catch(failed), POLL_MS);
  }
  function keepLive() {
    const generation = state.generation;
    stream(generation).catch((e) => { if (e instanceof Unauthorized) return failed(e); }).finally(() => {
      if (generation !== state.generation) return; // replaced by a newer stream
      state.streaming = false;
      // Streams can be cut by proxies or a restart: poll with ETags, try the stream again later.
      startPolling();
      state.retryTimer = setTimeout(keepLive, STREAM_RETRY_MS);
    });
  }
  // Another period picked: a new stream for it.
  function restartLive() {
    stopLive();
    keepLive();
  }

  // ------------------------------------------------------------------ key result page
  function burnUp(kr, history) {
    const W = 720, H = 320, L = 64, R = 16, T = 16, B = 40;
    const t0 = Date.parse(kr.window.start), t1 = Date.parse(kr.window.end);
    const start = kr.start ?? 0;
    const points = history.items.filter((p) => p.value !== null).map((p) => [Date.parse(p.start), p.value]);
    const values = [start, kr.target, ...points.map((p) => p[1])];
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi === lo) hi = lo + 1;
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title" });
    const title = svg("title", { id: "chart-title" });
    title.textContent = `Burn-up of ${kr.title}: ${points.length} days with a value, latest ${formatValue(kr.value, kr)}, target ${formatValue(kr.target, kr)}.`;
    chart.append(title);
    chart.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    chart.append(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    chart.append(svg("line", { class: "target", x1: L, y1: y(kr.target), x2: W - R, y2: y(kr.target) }));
    chart.append(svg("line", { class: "ideal", x1: x(t0), y1: y(start), x2: x(t1), y2: y(kr.target) }));
    if (points.length) {
      // A step line: a value holds until the next one.
      let d = "";
      points.forEach(([t, v], i) => { d += i ? ` H${x(t).toFixed(1)} V${y(v).toFixed(1)}` : `M${x(t).toFixed(1)} ${y(v).toFixed(1)}`; });
      // Held until "now": the server's clock, as the elapsed fraction of the window.
      d += ` H${x(t0 + kr.expected_progress * (t1 - t0)).toFixed(1)}`;
      chart.append(svg("path", { class: "actual", d }));
      // Each day's value as a dot too: a young history is a few points, not a line.
      for (const [t, v] of points) chart.append(svg("circle", { class: "point", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3 }));
    }
    const label = (text, attrs) => { const el = svg("text", attrs); el.textContent = text; chart.append(el); };
    label(formatValue(kr.target, kr), { x: L - 6, y: y(kr.target) + 4, "text-anchor": "end" });
    label(formatValue(lo, kr), { x: L - 6, y: H - B + 4, "text-anchor": "end" });
    label(kr.window.start, { x: L, y: H - B + 20 });
    label(kr.window.end, { x: W - R, y: H - B + 20, "text-anchor": "end" });
    return chart;
  }

  async function renderKeyResult(id) {
    const [kr, history, explain] = await Promise.all([
      json(`/key-results/${id}/progress`),
      json(`/key-results/${id}/history?bucket=day`),
      api(`/key-results/${id}/explain`).then((r) => (r.ok ? r.json() : null)),
    ]);
    document.title = `${kr.title} · okr-sync`;
    $("banners").replaceChildren(...(explain ? explain.sources : []).filter((s) => s.stale || s.last_run_status === "failed").map((s) =>
      h("p", { class: `banner ${s.last_run_status === "failed" ? "failed" : "stale"}`, role: "status" },
        `${s.name}: ${s.last_run_status === "failed" ? "the last sync failed" : "stale"}; last good sync ${when(s.last_success_at)}.`)));
    const records = h("section", { id: "records", "aria-labelledby": "records-title" },
      h("h2", { id: "records-title" }, "Why this number"));
    if (!explain) records.append(h("p", {}, "This key result is checked in by hand: no records behind it."));
    else {
      records.append(h("p", {}, explain.parts.map((p) => `${p.part}: ${p.aggregate} of ${number(p.records_counted, 0)} ${p.kind} record(s) = ${number(p.result ?? 0, 2)}. `)));
      const body = h("tbody", {});
      const table = h("table", {}, h("caption", { class: "visually-hidden" }, `Records behind the ${explain.records.part}`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Record"), h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "Stored id"))), body);
      const more = h("button", { type: "button" }, "More records");
      const add = (page) => {
        for (const r of page.items) {
          body.append(h("tr", { "data-record": r.source_id },
            h("td", {}, r.url ? h("a", { href: r.url, rel: "noopener", target: "_blank" }, r.source_id) : r.source_id),
            h("td", {}, r.kind), h("td", {}, r.value === null ? "" : number(r.value, 2) + (r.currency ? ` ${r.currency}` : "")), h("td", {}, String(r.id))));
        }
        more.hidden = !page.next_cursor;
        more.onclick = () => json(`/key-results/${id}/explain?part=${page.part}&cursor=${encodeURIComponent(page.next_cursor)}`).then((e) => add(e.records)).catch(failed);
      };
      records.append(table, more);
      add(explain.records);
    }
    $("view").replaceChildren(
      h("p", {}, h("a", { href: "/" }, "← All objectives")),
      h("h1", { class: "period" }, kr.title),
      h("div", { class: "kr", "data-kr": kr.key_result_id, "data-status": kr.status },
        progressBar(kr, `Progress of ${kr.title}`),
        h("p", { class: "figures" }, badge(kr.status), " ", h("span", { class: "value" }, formatValue(kr.value, kr)), " of ", formatValue(kr.target, kr)),
        h("p", { class: "meta" }, `Forecast ${formatValue(kr.forecast, kr)}`, kr.ambition ? ` · Ambition: ${kr.ambition}` : null, ` · Last sync ${when(kr.last_synced_at)}`)),
      h("h2", {}, "Burn-up"),
      burnUp(kr, history),
      h("p", { class: "legend" }, "Solid: the value day by day. Dashed: the ideal line from start to target. Dotted: the target."),
      records);
    if (location.hash === "#records") records.scrollIntoView();
    live("");
  }

  // ------------------------------------------------------------------ start
  function failed(error) {
    if (error instanceof Unauthorized) return signOut("That token was refused: give another one.");
    live(`Error: ${error.message}`);
  }
  function stopLive() {
    state.generation += 1; // a stream still running ends without scheduling anything
    if (state.controller) state.controller.abort();
    clearTimeout(state.retryTimer);
    stopPolling();
  }
  function signOut(message) {
    stopLive();
    localStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.tree = null;
    state.etag = null;
    live("");
    $("view").replaceChildren();
    $("banners").replaceChildren();
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  async function loadPeriods() {
    const periods = await all("/periods");
    const select = $("period");
    for (const p of periods) select.append(h("option", { value: p.name }, p.name));
    select.value = state.period;
    if (select.value !== state.period) select.append(h("option", { value: state.period, selected: true }, state.period));
    select.onchange = () => {
      state.period = select.value;
      state.etag = null;
      const url = new URL(location.href);
      url.searchParams.set("period", state.period);
      history.replaceState(null, "", url);
      loadTree().then(restartLive).catch(failed);
    };
  }

  async function start() {
    $("login").hidden = true;
    if (tv) for (const el of [document.documentElement, document.body]) el.classList.add("tv");
    if (krPage) {
      document.querySelector(".picker").hidden = true; // a key result has one period
      await renderKeyResult(krPage[1]);
      return;
    }
    // All at once: the tree is drawn as soon as it arrives, again with team names and
    // sync banners once those are in.
    await Promise.all([
      loadTree(),
      loadPeriods(),
      all("/teams").then((teams) => { for (const t of teams) state.teams.set(t.id, t); }),
      // A token that may not list connectors sees no failed-sync banner (stale key
      // results still say so).
      all("/connectors").then((c) => { state.connectors = c; }, (e) => { if (e instanceof Unauthorized) throw e; }),
    ]);
    renderTree();
    keepLive();
    if (tv) setInterval(() => { state.teamIndex += 1; renderTree(); }, TV_CYCLE_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signout").onclick = () => signOut();
    $("login").onsubmit = (event) => {
      event.preventDefault();
      state.token = $("token").value.trim();
      localStorage.setItem(TOKEN_KEY, state.token);
      start().catch(failed);
    };
    if (state.token) start().catch(failed); else signOut();
  });
})();
