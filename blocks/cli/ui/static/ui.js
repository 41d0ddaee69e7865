// blocks UI: the only script. Polls a running key rotation for its progress bar.
(function () {
  "use strict";
  var box = document.getElementById("rotation");
  if (!box || box.dataset.state !== "running") return;
  function poll() {
    fetch(box.dataset.status, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        var bar = document.getElementById("rotation-bar");
        var text = document.getElementById("rotation-text");
        if (bar) { bar.max = s.total || 1; bar.value = s.done; }
        if (text) { text.textContent = s.state + ": " + s.done + " / " + s.total; }
        if (s.state === "running") { setTimeout(poll, 200); } else { window.location.reload(); }
      })
      .catch(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
