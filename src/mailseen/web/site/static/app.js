// mailseen: live updates of the eye over server-sent events, and optional notifications.
// No build step, no framework.
(function () {
  "use strict";
  var listing = document.querySelector("[data-events]");
  if (!listing || !window.EventSource) return;

  var notifyButton = listing.querySelector(".notify");
  var wantNotes = window.Notification && localStorage.getItem("mailseen.notify") === "1"
    && Notification.permission === "granted";
  if (notifyButton && window.Notification && !wantNotes) {
    notifyButton.hidden = false;
    notifyButton.addEventListener("click", function () {
      Notification.requestPermission().then(function (p) {
        if (p === "granted") {
          localStorage.setItem("mailseen.notify", "1");
          wantNotes = true;
          notifyButton.hidden = true;
        }
      });
    });
  }

  var templates = {};
  document.querySelectorAll("template[data-eye]").forEach(function (t) {
    templates[t.getAttribute("data-eye")] = t;
  });

  function setEye(row, data) {
    var status = row.querySelector(".status");
    if (!status) return;
    status.className = "status status-" + data.kind;
    status.setAttribute("data-kind", data.kind);
    var svg = status.querySelector("svg, .eye");
    var tpl = templates[data.icon];
    if (tpl && svg) {
      var fresh = tpl.content.firstElementChild.cloneNode(true);
      fresh.setAttribute("aria-label", data.label);
      var title = fresh.querySelector("title");
      if (title) title.textContent = data.label;
      svg.replaceWith(fresh);
    }
    var text = status.querySelector(".status-text");
    if (text) text.textContent = data.label;
  }

  var source = new EventSource(listing.getAttribute("data-events"));
  source.addEventListener("view", function (event) {
    var data = JSON.parse(event.data);
    document.querySelectorAll('[data-conversation-id="' + data.conversation_id + '"], ' +
      '[data-message-id="' + data.message_id + '"]').forEach(function (row) {
      setEye(row, data);
    });
    if (wantNotes && data.human) {
      new Notification((data.recipient || "Someone") + " viewed " + (data.subject || "your message"));
    }
  });
})();
