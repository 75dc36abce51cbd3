// Live updates for the dashboard, with no framework. The server stays the one place HTML is
// made: an event that concerns a region of this page refetches that region's part of the page
// (the same URL with an X-Live-Part header). EventSource resumes by itself after a dropped
// connection, sending Last-Event-ID, so events missed meanwhile arrive then.
"use strict";

const page = document.body.dataset;
const skewMs = Number(page.now) * 1000 - Date.now();  // the Commander's clock minus ours
const regions = [...document.querySelectorAll("[data-live]")];
const pending = new Map(regions.map((region) => [region, { timer: null, busy: false, again: false, seq: 0 }]));
const banner = document.getElementById("connection");
const notice = document.getElementById("notice");
let lastId = page.eventId || "0";
let lost = false;

// The same words as site.ago on the server: "12 s ago", "4 min ago", "in 30 s".
function ago(seconds) {
  const span = Math.abs(seconds);
  let amount = `${Math.floor(span)} s`;
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
    if (span >= size) {
      amount = `${Math.floor(span / size)} ${unit}`;
      break;
    }
  }
  return seconds >= 0 ? `${amount} ago` : `in ${amount}`;
}

function tick() {
  const now = (Date.now() + skewMs) / 1000;
  for (const time of document.querySelectorAll("time[data-at]")) {
    time.textContent = ago(now - Number(time.dataset.at));
  }
}

function say(text, bad = false) {
  notice.textContent = text;
  notice.classList.toggle("bad", bad);
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { notice.textContent = ""; }, 8000);
}

function signedOut() {
  const link = document.createElement("a");
  link.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
  link.textContent = "Log in again";
  banner.replaceChildren("Your session has ended. ", link);
}

async function load(region) {
  const seq = ++pending.get(region).seq;
  let response;
  try {
    response = await fetch(location.href, { headers: { "X-Live-Part": region.dataset.live } });
  } catch {
    return;  // the Commander is away: the event stream shows the banner and refreshes on return
  }
  if (response.redirected) return signedOut();
  const html = response.ok ? await response.text() : null;
  if (html === null || seq !== pending.get(region).seq) return;  // failed, or a newer load is on its way
  const focused = region.contains(document.activeElement) ? document.activeElement : null;
  const typed = [...region.querySelectorAll("input[id]")].map((input) => [input.id, input.value]);
  region.innerHTML = html;
  for (const [id, value] of typed) {
    const input = document.getElementById(id);
    if (input) input.value = value;
  }
  if (focused) (document.getElementById(focused.id) || region).focus({ preventScroll: true });
  tick();
}

// A burst of events makes one load, and a region has one load at a time: on a busy fleet a
// dashboard follows at the pace its loads take, not at the pace of events.
function refresh(region, delay = 250) {
  const state = pending.get(region);
  if (state.busy) {
    state.again = true;
    return;
  }
  if (state.timer) return;
  state.timer = setTimeout(async () => {
    state.timer = null;
    state.busy = true;
    await load(region);
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh(region);
    }
  }, delay);
}

function concerns(region, event) {
  const tasks = region.dataset.liveTasks;
  return region.dataset.liveOn.split(" ").some((prefix) => event.kind.startsWith(prefix))
    && (!tasks || tasks.split(" ").includes(String(event.task_id)));
}

function onEvent(message) {
  lastId = message.lastEventId || lastId;
  const event = JSON.parse(message.data);
  for (const region of regions) {
    if (concerns(region, event)) refresh(region);
  }
}

function connect() {
  // `after` covers what happened since this page was made; on reconnecting, the browser's
  // Last-Event-ID header (which the Commander prefers) covers what happened since.
  const source = new EventSource(`/api/events?after=${encodeURIComponent(lastId)}`);
  for (const kind of page.eventKinds.split(" ")) source.addEventListener(kind, onEvent);
  source.onopen = () => {
    if (!lost) return;
    lost = false;
    banner.textContent = "";
    for (const region of regions) refresh(region, 0);
  };
  source.onerror = async () => {
    lost = true;
    banner.textContent = "Connection to the Commander lost. Reconnecting…";
    if (source.readyState !== EventSource.CLOSED) return;  // the browser is retrying by itself
    // Refused with an HTTP error rather than dropped: signed out, or try again in a moment.
    const session = await fetch("/api/session").catch(() => null);
    if (session && session.status === 401) return signedOut();
    setTimeout(connect, 3000);
  };
}

// Forms marked data-inline (approve, reject, cancel, node orders) post in place: the same form
// POST as without JavaScript, then the region is redrawn and the outcome announced.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("form[data-inline]")) return;
  event.preventDefault();
  const button = event.submitter;
  const buttons = [...form.querySelectorAll("button")];
  const body = new URLSearchParams(new FormData(form, button));
  buttons.forEach((b) => { b.disabled = true; });
  let response = null;
  try {
    response = await fetch(button?.getAttribute("formaction") || form.action, { method: "POST", body, redirect: "manual" });
  } catch {
    say("The Commander cannot be reached; try again when it is back.", true);
  }
  if (response && (response.type === "opaqueredirect" || response.ok)) {
    say(button?.dataset.done || "Done");
    const region = form.closest("[data-live]");
    if (region) {
      await load(region);
      if (!region.contains(document.activeElement)) region.focus({ preventScroll: true });
    }
    return;
  }
  if (response) {
    const why = new DOMParser().parseFromString(await response.text(), "text/html").querySelector(".error-message");
    say(why ? why.textContent : `That did not work (HTTP ${response.status}).`, true);
  }
  buttons.forEach((b) => { b.disabled = false; });
});

if (regions.length) connect();
for (const region of regions.filter((r) => r.dataset.liveEvery)) {
  setInterval(() => { if (document.visibilityState === "visible") refresh(region, 0); },
    Number(region.dataset.liveEvery) * 1000);
}
setInterval(tick, 1000);
