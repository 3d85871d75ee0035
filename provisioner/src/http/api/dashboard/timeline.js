// Live boot timeline: appends each Server-Sent Event for this machine. Text only
// (textContent), so nothing from the wire is ever parsed as HTML.
(function () {
  var tl = document.getElementById("timeline");
  if (!tl) return;
  var live = document.getElementById("live");
  var es = new EventSource("/api/v1/events?mac=" + encodeURIComponent(tl.dataset.mac));
  es.onopen = function () { live.textContent = "live"; };
  es.onerror = function () { live.textContent = "reconnecting…"; };
  // The server ends the stream when the session's token is revoked.
  es.addEventListener("revoked", function () {
    es.close();
    live.textContent = "session ended: token revoked (log in again)";
  });
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
  });
})();
