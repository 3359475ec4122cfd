// Keeps an open tracking page current: the server pushes the new order section over
// server-sent events whenever the order changes; EventSource resumes with Last-Event-ID.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !window.EventSource) { return; }
  var version = parseInt(root.getAttribute("data-version"), 10) || 0;
  var source = new EventSource(root.getAttribute("data-events") + "&v=" + version);
  source.addEventListener("update", function (event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (!data || data.version <= version) { return; }
    version = data.version;
    root.setAttribute("data-version", String(version));
    var open = {};
    root.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
    root.innerHTML = data.html;
    root.querySelectorAll("details[id]").forEach(function (d) {
      if (Object.prototype.hasOwnProperty.call(open, d.id)) { d.open = open[d.id]; }
    });
  });
})();
