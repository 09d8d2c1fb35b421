// Live updates: every element with data-live="<url>" polls that URL (its HTML fragment) every
// data-every ms and swaps it in when it changed, keeping the reader's <details> as they were. A fragment that
// holds [data-final] (an execution that ended) stops the polling. No framework, no build step.
(function () {
  "use strict";
  var dot = document.getElementById("live-dot");

  function mark(state) {
    if (dot) { dot.className = "live-dot " + state; }
  }

  // <details> the reader opened or closed stay so across swaps (the server decides the rest).
  var chosen = {};
  document.addEventListener("click", function (event) {
    var summary = event.target.closest && event.target.closest("summary");
    var details = summary && summary.parentElement;
    if (details && details.id) { chosen[details.id] = !details.open; }
  });

  function live(el) {
    var url = el.getAttribute("data-live");
    var every = parseInt(el.getAttribute("data-every") || "1000", 10);
    var last = null;

    function schedule() { window.setTimeout(tick, every); }

    function tick() {
      if (document.hidden) { schedule(); return; }
      fetch(url, { cache: "no-store", headers: { "X-Requested-With": "console" } })
        .then(function (response) {
          if (response.status === 404) { mark("stale"); return null; }   // gone: stop asking
          if (!response.ok) { throw new Error(response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          mark("on");
          if (html !== last) {
            el.innerHTML = html;
            last = html;
            Object.keys(chosen).forEach(function (id) {
              var d = document.getElementById(id);
              if (d && el.contains(d)) { d.open = chosen[id]; }
            });
          }
          if (!el.querySelector("[data-final]")) { schedule(); }
        })
        .catch(function () { mark("stale"); schedule(); });
    }

    if (!el.querySelector("[data-final]")) { schedule(); }
  }

  document.querySelectorAll("[data-live]").forEach(live);
})();
