// longplay dashboard: moves progress bars, steps and the event log by Server-Sent
// Events (one /live stream per page), never by polling. Text from events is only
// ever set with textContent, so nothing a job or a user wrote is parsed as HTML.
"use strict";

(function () {
  const ENDED = new Set(["completed", "failed", "cancelled", "stopped", "expired", "deleted"]);
  // How often a job page asks again where its job stands while it waits in the queue.
  const PLACE_EVERY_MS = 5000;

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

  // A number as a person reads it in step details: 2 decimals from 1 up, 3
  // significant digits below (0.013315826554794082 is 0.0133), as the server draws it.
  function tidy(key, value) {
    if (typeof value !== "number" || Number.isInteger(value)) return value;
    return Math.abs(value) >= 1 ? Math.round(value * 100) / 100 : Number(value.toPrecision(3));
  }

  // No time is left to tell once the bar is full.
  function etaOf(event) {
    const full = event.type === "completed" || (typeof event.progress === "number" && event.progress >= 100);
    return full || event.eta_seconds == null ? "" : "about " + duration(event.eta_seconds) + " left";
  }

  // The page's "paused" notice, shown while the stream is down (EventSource
  // reconnects by itself) and hidden again once it is back.
  function paused(down) {
    const notice = document.querySelector("[data-paused]");
    if (notice) notice.hidden = !down;
  }

  // Follow jobs on one stream; each job's entries are taken once, in order (a
  // reconnect replays the stream from its start).
  function follow(ids, onEvent, onEnd) {
    const query = ids.map((id) => "job=" + encodeURIComponent(id)).join("&");
    const source = new EventSource("/live?" + query);
    const seen = {};
    source.onerror = () => paused(true);
    source.onopen = () => paused(false);
    source.onmessage = (message) => {
      paused(false);
      const event = JSON.parse(message.data);
      if (event.id) {
        if (seen[event.job_id] && !isNewer(event.id, seen[event.job_id])) return;
        seen[event.job_id] = event.id;
      }
      onEvent(event);
    };
    source.addEventListener("end", () => {
      source.close();
      paused(false);
      if (onEnd) onEnd();
    });
    return source;
  }

  // The status an event moves a job to, as the page shows it; null if none.
  function statusOf(event) {
    const state = event.status || (ENDED.has(event.type) ? event.type : null);
    return state && event.type === "stopped" ? "cancelled" : state;
  }

  // What the live region says when a job's status changes: "Job completed", "Job
  // failed: why". Progress alone never changes it, so percents are not spoken. The
  // stream first replays what the page already drew (`from`, as of the server's
  // `drawnAt`): that is not news, until an event reaches the drawn status or time.
  function announcer(region, from, drawnAt) {
    let said = from;
    let caughtUp = !from;
    return (event, prefix) => {
      const state = statusOf(event);
      if (!region || !state) return;
      if (!caughtUp) {
        caughtUp = state === from || Date.parse(event.at) >= drawnAt;
        if (!caughtUp) return;
      }
      if (state === said) return;
      said = state;
      const why = state === "failed" && event.error ? ": " + event.error.message : "";
      region.textContent = prefix + " " + state + why;
    };
  }

  // When the server drew `element` (its data-drawn-at), in ms; NaN if not said.
  function drawnAt(element) {
    return Date.parse(element.dataset.drawnAt || "");
  }

  // The bar, percent, ETA and status inside `root` brought to what `event` says.
  function show(root, event) {
    const bar = root.querySelector("[data-bar]");
    const percent = root.querySelector("[data-percent]");
    const eta = root.querySelector("[data-eta]");
    const status = root.querySelector("[data-status]");
    const step = root.querySelector("[data-step]");
    let progress = typeof event.progress === "number" ? event.progress : null;
    // Drawn while its worker was silent: any news of the job means it moves again.
    const silent = root.querySelector("[data-silent]");
    if (silent) silent.remove();
    if (event.type === "completed") progress = 100;
    if (progress !== null && bar) {
      bar.value = progress;
      bar.textContent = Math.round(progress) + " %";
      if (percent) percent.textContent = Math.round(progress) + " %";
    }
    const shown = statusOf(event);
    if (shown && status) {
      status.textContent = shown;
      status.className = "status status-" + shown;
      if (bar) bar.className = "bar status-" + shown;
      const position = root.querySelector("[data-position], [data-scheduled]");
      if (position && shown !== "queued") position.remove();
      const waiting = root.querySelector("[data-waiting]");
      if (waiting && shown !== "waiting") waiting.remove();
    }
    if (eta) {
      eta.textContent = (event.status || "") === "running" ? etaOf(event) : "";
    }
    if (step && event.step) step.textContent = event.step;
    if (step && event.type === "completed") step.textContent = ""; // no step left, as drawn
  }

  function jobsList(table) {
    // A job's rows: one, or several where one job reads several things (a
    // collection's documents, each read by the index job they were added with).
    const rows = {};
    table.querySelectorAll("tr[data-job]").forEach((row) => {
      if (row.dataset.finished !== "true") (rows[row.dataset.job] ||= []).push(row);
    });
    const ids = Object.keys(rows);
    if (!ids.length) return;
    const speakers = {};
    const region = document.querySelector("[data-announce]");
    // A page marked data-live-redraw draws its own parts again as each job it follows
    // ends (a flow's status and Cancel, a collection's documents); one fetch after
    // another, so the last drawn is the newest.
    const redrawing = table.closest("[data-live-redraw]");
    let redrawn = Promise.resolve();
    follow(ids, (event) => {
      const followed = rows[event.job_id];
      if (!followed) return;
      const row = followed[0];
      if (!speakers[event.job_id]) {
        const was = row.querySelector("[data-status]");
        speakers[event.job_id] = announcer(region, was && was.textContent, drawnAt(table));
      }
      const name = row.dataset.stage ? "Stage " + row.dataset.stage : "Job " + event.job_id;
      speakers[event.job_id](event, name);
      followed.forEach((one) => show(one, event));
      if (redrawing && ENDED.has(event.type)) {
        redrawn = redrawn.catch(() => {}).then(() => refresh(redrawing, false));
      }
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
        mark(items[current], "current");
      }
      if (event.type === "step_skipped" && items[event.step]) {
        mark(items[event.step], "done");
        items[event.step].querySelector("[data-duration]").textContent = "skipped";
      }
      if (event.type === "progress" && current && items[current]) {
        const details = items[current].querySelector("[data-details]");
        const shown = event.step_details && Object.keys(event.step_details).length;
        details.textContent = shown ? JSON.stringify(event.step_details, tidy, 2) : "";
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
      mark(li, state);
    }
  }

  // A step's state, as its dot's colour and in words (the page draws the same words).
  const STATE_WORDS = { done: "done", current: "running", failed: "failed", stopped: "stopped", pending: "pending" };
  function mark(li, state) {
    li.dataset.state = state;
    const words = li.querySelector("[data-state-text]");
    if (words) words.textContent = STATE_WORDS[state] || state;
  }

  // One line an event; a step's progress is one line that moves, so the log keeps
  // the changes (and a screen reader's list stays short), not every percent.
  function logLine(log, event) {
    const last = log.lastElementChild;
    const moving = event.type === "progress" && last && last.dataset.type === "progress" &&
      last.dataset.step === String(event.step || "");
    const li = moving ? last : document.createElement("li");
    li.replaceChildren();
    const time = document.createElement("time");
    const at = new Date(event.at);
    time.textContent = isNaN(at) ? "" : at.toLocaleTimeString();
    const type = document.createElement("b");
    type.textContent = event.type;
    li.append(time, " ", type, " ", describe(event));
    li.dataset.type = event.type;
    if (event.type === "progress") li.dataset.step = String(event.step || "");
    if (!moving) log.append(li);
  }

  function describe(event) {
    switch (event.type) {
      case "progress":
        return Math.round(event.progress) + " % " + (event.step || "") +
          (etaOf(event) ? ", " + etaOf(event) : "");
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

  // The parts of the page only the server can draw (facts, results, actions, error,
  // attempts) fetched and swapped in; the page stays. Once when the job ends (`ended`),
  // and once as each attempt starts running, so its start and count are not stale.
  async function refresh(root, ended = true) {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    root.querySelectorAll("[data-refresh]").forEach((part) => {
      const other = fresh.querySelector('[data-refresh="' + part.dataset.refresh + '"]');
      if (!other) return;
      const focused = part.contains(document.activeElement) ? document.activeElement : null;
      const form = focused && focused.closest("form");
      const action = form ? form.getAttribute("action") : null;
      const added = document.importNode(other, true);
      part.replaceWith(added);
      if (focused) refocus(root, added, action);
    });
    if (ended) root.dataset.finished = "true";
    document.dispatchEvent(new CustomEvent("longplay:refreshed"));
  }

  // Focus was in a part just swapped: put it on the same control (a form with the
  // same action), else the part's first control, else the heading; never on <body>.
  function refocus(root, part, action) {
    const same = action && Array.from(part.querySelectorAll("form")).find(
      (f) => f.getAttribute("action") === action);
    const target = (same && same.querySelector("button")) ||
      part.querySelector("button, summary, a[href]") ||
      root.querySelector("[data-heading]");
    if (target) target.focus();
  }

  // Progress told after the job ended (a worker reports until its next checkpoint
  // finds the job cancelled) is logged but moves nothing: the job no longer runs.
  function jobPage(root) {
    const log = root.querySelector("[data-log]");
    const timeline = steps(root.querySelector("[data-steps]"));
    const live = root.dataset.finished !== "true";
    const drawn = root.querySelector(".headline [data-status]").textContent;
    const speak = announcer(root.querySelector("[data-announce]"), drawn, drawnAt(root));
    let ended = false;
    // The attempts the page was drawn with; a later one that starts is news to draw.
    let attempts = Number(root.dataset.attempts || 0);
    follow([root.dataset.liveJob], (event) => {
      if (event.type === "queued" || event.type === "retrying") ended = false;
      if (live && event.type === "running" && Number(event.attempt) > attempts) {
        attempts = Number(event.attempt);
        refresh(root, false);
      }
      if (!(ended && event.type === "progress")) {
        if (live) {
          speak(event, "Job");
          show(root.querySelector(".headline"), event);
        }
        timeline(event);
      }
      logLine(log, event);
      if (ENDED.has(event.type)) ended = true;
    }, () => {
      if (live && ended) refresh(root);
    });
    // Where it stands in the queue: no event tells of that, so the page is asked for
    // again every few seconds while the job waits there.
    if (live) {
      const placing = setInterval(() => {
        if (root.querySelector("[data-position]")) refresh(root, false);
        else clearInterval(placing);
      }, PLACE_EVERY_MS);
    }
  }

  // A form posts once: a second click while the answer loads would send it again (the
  // same files uploaded twice). Back on the page from the browser's cache, it may again.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.method !== "post") return;
    if (form.dataset.sent) event.preventDefault();
    form.dataset.sent = "true";
  });
  window.addEventListener("pageshow", () => {
    document.querySelectorAll("form[data-sent]").forEach((form) => delete form.dataset.sent);
  });

  // A table wider than its box (on a phone) scrolls sideways: the box is then a region
  // named by its data-label that a keyboard can reach and scroll; where it fits, it is
  // no tab stop. Checked as the page is drawn, resized, or has parts drawn again.
  function scrollables() {
    document.querySelectorAll(".scroll").forEach((box) => {
      if (box.scrollWidth > box.clientWidth) {
        box.tabIndex = 0;
        box.setAttribute("role", "region");
        box.setAttribute("aria-label", box.dataset.label || "Table");
      } else {
        ["tabindex", "role", "aria-label"].forEach((name) => box.removeAttribute(name));
      }
    });
  }
  let measuring = false;
  function remeasure() {
    if (measuring) return;
    measuring = true;
    requestAnimationFrame(() => { measuring = false; scrollables(); });
  }
  window.addEventListener("resize", remeasure);
  document.addEventListener("longplay:refreshed", remeasure);

  document.addEventListener("DOMContentLoaded", () => {
    scrollables();
    const table = document.querySelector("[data-live-list]");
    if (table) jobsList(table);
    const job = document.querySelector("[data-live-job]");
    if (job) jobPage(job);
    // The page moves by itself: the "reload to see" line is for browsers without us.
    document.querySelectorAll("[data-static]").forEach((line) => { line.hidden = true; });
  });
})();
