// Live pages. Text only (textContent) for what comes off the event stream, so
// nothing from the wire is ever parsed as HTML; regions marked data-refresh are
// replaced by the same regions of a fresh server render of this page (our own
// templates, auto-escaped), so the numbers on screen always come from the server.
(function () {
  var live = document.getElementById("live");
  var refreshTimer = null;
  function refresh() {
    if (refreshTimer) return;
    // Events come in bursts (a boot writes several at once): one render per burst.
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      fetch(location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-refresh]").forEach(function (old) {
            var fresh = doc.getElementById(old.id);
            if (fresh) old.replaceWith(document.importNode(fresh, true));
          });
          if (live) live.dataset.renders = String(Number(live.dataset.renders || 0) + 1);
        })
        .catch(function () { if (live) live.textContent = "refresh failed; reload the page"; });
    }, 250);
  }
  function watch(es) {
    es.onopen = function () { if (live) live.textContent = "live"; };
    es.onerror = function () { if (live) live.textContent = "reconnecting…"; };
    // The server ends the stream when the session's token is revoked.
    es.addEventListener("revoked", function () {
      es.close();
      if (live) live.textContent = "session ended: token revoked (log in again)";
    });
    es.addEventListener("changed", refresh);
    return es;
  }

  var tl = document.getElementById("timeline");
  if (!tl) {
    // Fleet and clusters pages: any change re-renders their regions.
    if (live && live.dataset.events) {
      watch(new EventSource(live.dataset.events)).addEventListener("timeline", refresh);
    }
    return;
  }
  // The machine page: the timeline grows event by event; the waterfall re-renders.
  var es = watch(new EventSource("/api/v1/events?mac=" + encodeURIComponent(tl.dataset.mac)));
  es.addEventListener("timeline", function (msg) {
    var ev = JSON.parse(msg.data);
    var li = document.createElement("li");
    li.className = "ev ev-" + ev.kind;
    [["time", ev.at], ["span", ev.kind], ["span", ev.detail]].forEach(function (p, i) {
      var el = document.createElement(p[0]);
      el.textContent = p[1];
      if (i === 1) el.className = "kind";
      if (i === 2) el.className = "detail";
      li.appendChild(el);
      li.appendChild(document.createTextNode(" "));
    });
    tl.appendChild(li);
    if (ev.kind === "state_changed") {
      var st = document.getElementById("state");
      if (st) st.textContent = ev.detail.split(" -> ").pop();
    }
    refresh();
  });
})();
