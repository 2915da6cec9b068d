// longplay dashboard: moves progress bars, steps and the event log by Server-Sent
// Events (one /live stream per page), never by polling. Text from events is only
// ever set with textContent, so nothing a job or a user wrote is parsed as HTML.
"use strict";

(function () {
  const ENDED = new Set(["completed", "failed", "cancelled", "stopped", "expired", "deleted"]);

  function entryKey(id) {
    const [ms, seq] = String(id).split("-");
    return [Number(ms), Number(seq || 0)];
  }

  function isNewer(id, than) {
    const a = entryKey(id);
    const b = entryKey(than);
    return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    seconds = Math.max(0, seconds);
    if (seconds < 10) return seconds.toFixed(1) + " s";
    const whole = Math.round(seconds);
    const hours = Math.floor(whole / 3600);
    const minutes = Math.floor((whole % 3600) / 60);
    const secs = whole % 60;
    if (hours) return hours + " h " + minutes + " min";
    return minutes ? minutes + " min " + secs + " s" : secs + " s";
  }

  // Follow jobs on one stream; each job's entries are taken once, in order (a
  // reconnect replays the stream from its start).
  function follow(ids, onEvent, onEnd) {
    const query = ids.map((id) => "job=" + encodeURIComponent(id)).join("&");
    const source = new EventSource("/live?" + query);
    const seen = {};
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.id) {
        if (seen[event.job_id] && !isNewer(event.id, seen[event.job_id])) return;
        seen[event.job_id] = event.id;
      }
      onEvent(event);
    };
    source.addEventListener("end", () => {
      source.close();
      if (onEnd) onEnd();
    });
    return source;
  }

  // The bar, percent, ETA and status inside `root` brought to what `event` says.
  function show(root, event) {
    const bar = root.querySelector("[data-bar]");
    const percent = root.querySelector("[data-percent]");
    const eta = root.querySelector("[data-eta]");
    const status = root.querySelector("[data-status]");
    const step = root.querySelector("[data-step]");
    let progress = typeof event.progress === "number" ? event.progress : null;
    if (event.type === "completed") progress = 100;
    if (progress !== null && bar) {
      bar.value = progress;
      bar.textContent = Math.round(progress) + " %";
      if (percent) percent.textContent = Math.round(progress) + " %";
    }
    const state = event.status || (ENDED.has(event.type) ? event.type : null);
    if (state && status) {
      const shown = event.type === "stopped" ? "cancelled" : state;
      status.textContent = shown;
      status.className = "status status-" + shown;
      if (bar) bar.className = "bar status-" + shown;
      const position = root.querySelector("[data-position], [data-scheduled]");
      if (position && shown !== "queued") position.remove();
    }
    if (eta) {
      const running = (event.status || "") === "running" && event.eta_seconds != null;
      eta.textContent = running ? "about " + duration(event.eta_seconds) + " left" : "";
    }
    if (step && event.step) step.textContent = event.step;
    if (step && event.type === "completed") step.textContent = ""; // no step left, as drawn
  }

  function jobsList(table) {
    const rows = {};
    table.querySelectorAll("tr[data-job]").forEach((row) => {
      if (row.dataset.finished !== "true") rows[row.dataset.job] = row;
    });
    const ids = Object.keys(rows);
    if (!ids.length) return;
    follow(ids, (event) => {
      const row = rows[event.job_id];
      if (row) show(row, event);
    });
  }

  // The timeline: a step starts at its first event, ends when the next one starts
  // or the job ends.
  function steps(list) {
    const items = {};
    const started = {};
    let current = null;
    list.querySelectorAll("[data-step-name]").forEach((li) => {
      items[li.dataset.stepName] = li;
    });
    return (event) => {
      const at = Date.parse(event.at);
      if (event.step && event.step !== current && items[event.step]) {
        if (current && items[current]) finish(current, at);
        current = event.step;
        started[current] = started[current] || at;
        items[current].dataset.state = "current";
      }
      if (event.type === "step_skipped" && items[event.step]) {
        items[event.step].dataset.state = "done";
        items[event.step].querySelector("[data-duration]").textContent = "skipped";
      }
      if (event.type === "progress" && current && items[current]) {
        const details = items[current].querySelector("[data-details]");
        const shown = event.step_details && Object.keys(event.step_details).length;
        details.textContent = shown ? JSON.stringify(event.step_details, null, 2) : "";
      }
      if (ENDED.has(event.type) && current) {
        finish(current, at, event.type === "completed" ? "done" : event.type === "failed" ? "failed" : "stopped");
        current = null;
      }
      if (event.type === "retrying" || event.type === "queued") current = null;
    };

    // A step the job ended in (failed, or stopped: cancelled, expired) keeps its last
    // details, as the page draws it: they say how far it got.
    function finish(name, at, state = "done") {
      const li = items[name];
      if (started[name] !== undefined && !isNaN(at)) {
        li.querySelector("[data-duration]").textContent = duration((at - started[name]) / 1000);
      }
      if (state === "done") li.querySelector("[data-details]").textContent = "";
      li.dataset.state = state;
    }
  }

  function logLine(log, event) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    const at = new Date(event.at);
    time.textContent = isNaN(at) ? "" : at.toLocaleTimeString();
    const type = document.createElement("b");
    type.textContent = event.type;
    li.append(time, " ", type, " ", describe(event));
    li.dataset.type = event.type;
    log.append(li);
  }

  function describe(event) {
    switch (event.type) {
      case "progress":
        return Math.round(event.progress) + " % " + (event.step || "") +
          (event.eta_seconds != null ? ", about " + duration(event.eta_seconds) + " left" : "");
      case "failed":
      case "retrying":
        return event.error ? event.error.code + ": " + event.error.message : "";
      case "note":
        return event.message || "";
      case "token":
        return event.text || "";
      case "running":
        return "attempt " + (event.attempt || "") + " on " + (event.worker || "");
      case "step_skipped":
        return event.step || "";
      default:
        return event.status && event.status !== event.type ? event.status : "";
    }
  }

  // After the job ends: the parts of the page only the server can draw (results,
  // actions, error, attempts) are fetched once and swapped in; the page stays.
  async function refresh(root) {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    root.querySelectorAll("[data-refresh]").forEach((part) => {
      const other = fresh.querySelector('[data-refresh="' + part.dataset.refresh + '"]');
      if (other) part.replaceWith(document.importNode(other, true));
    });
    root.dataset.finished = "true";
    document.dispatchEvent(new CustomEvent("longplay:refreshed"));
  }

  // Progress told after the job ended (a worker reports until its next checkpoint
  // finds the job cancelled) is logged but moves nothing: the job no longer runs.
  function jobPage(root) {
    const log = root.querySelector("[data-log]");
    const timeline = steps(root.querySelector("[data-steps]"));
    const live = root.dataset.finished !== "true";
    let ended = false;
    follow([root.dataset.liveJob], (event) => {
      if (event.type === "queued" || event.type === "retrying") ended = false;
      if (!(ended && event.type === "progress")) {
        if (live) show(root.querySelector(".headline"), event);
        timeline(event);
      }
      logLine(log, event);
      if (ENDED.has(event.type)) ended = true;
    }, () => {
      if (live && ended) refresh(root);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.querySelector("[data-live-list]");
    if (table) jobsList(table);
    const job = document.querySelector("[data-live-job]");
    if (job) jobPage(job);
  });
})();
