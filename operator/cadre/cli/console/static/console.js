// The console's live updates, with no framework and no build step.
// 1. Every page listens to /changes (server-sent events). On a change it fetches the same URL
//    with ?fragment=1 (the server renders only the live part) and swaps it in, keeping the
//    keyboard focus. It waits while a person is typing in a form, so no word is lost.
// 2. A transcript (<ol data-stream>) follows the session's events; the browser's reconnection
//    sends Last-Event-ID, so the server goes on after the last line shown: no gap, no repeat.
"use strict";
(function () {
  const live = document.getElementById("live");
  const connection = document.getElementById("connection");
  let busy = false, again = false, typing = false;
  const streams = [];

  function say(text) { if (connection) connection.textContent = text; }

  function editing() {
    const active = document.activeElement;
    if (live.contains(active) && (active.tagName === "TEXTAREA" || active.tagName === "INPUT")) return true;
    return Array.from(live.querySelectorAll("textarea")).some((t) => t.value.trim() !== "");
  }

  async function refresh() {
    if (busy) { again = true; return; }
    if (editing()) { typing = true; say("Live (updates paused while you type)"); return; }
    busy = true;
    try {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (answer.ok) {
        const html = await answer.text();
        const focused = document.activeElement && document.activeElement.id;
        if (html !== live.innerHTML) live.innerHTML = html;
        // A session began after the page was drawn: draw it again, with its transcript.
        if (!document.getElementById("transcript") && live.querySelector("[data-session-stream]")) {
          window.location.reload();
          return;
        }
        if (focused && document.activeElement === document.body) {
          const again_ = document.getElementById(focused);
          if (again_) again_.focus();
        }
        document.body.dataset.version = answer.headers.get("X-Console-Version") || "";
        say("Live");
      }
    } catch (err) {
      say("Disconnected; retrying");
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  if (live && document.body.dataset.changes) {
    const url = document.body.dataset.changes + "?version=" + encodeURIComponent(document.body.dataset.version || "0");
    const changes = new EventSource(url);
    changes.addEventListener("change", refresh);
    changes.onopen = () => say("Live");
    changes.onerror = () => say("Reconnecting…");
    live.addEventListener("focusout", () => { if (typing) { typing = false; setTimeout(refresh, 0); } });
    streams.push(changes);
  }

  const transcript = document.getElementById("transcript");
  if (transcript) {
    const state = document.getElementById("transcript-state");
    const events = new EventSource(transcript.dataset.stream);
    events.addEventListener("line", (e) => {
      const item = JSON.parse(e.data);
      const li = document.createElement("li");
      li.textContent = item.text;
      li.dataset.seq = item.seq;
      li.dataset.type = item.type;
      transcript.appendChild(li);
    });
    events.addEventListener("following", () => { state.textContent = "Following the session live…"; });
    events.addEventListener("end", (e) => { state.textContent = e.data; events.close(); });
    events.addEventListener("problem", (e) => { state.textContent = e.data; events.close(); });
    streams.push(events);
  }

  // A page left for another must let go of its streams: a browser opens at most six
  // connections to one host, and a page kept in the back-forward cache would hold them.
  window.addEventListener("pagehide", () => streams.forEach((s) => s.close()));
  window.addEventListener("pageshow", (e) => { if (e.persisted) window.location.reload(); });
})();
