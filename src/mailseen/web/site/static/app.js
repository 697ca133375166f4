// mailseen: live pages and notifications. No build step, no framework.
//
// A page whose content changes marks that part with data-live (what it shows) and
// data-live-cursor (the change cursor it was rendered at). Every few seconds the page asks
// /live whether the cursor moved; when it has, it fetches itself again and patches the live
// part in place: only what differs is touched, so the scroll position, an open or closed
// timeline, loaded message frames and anything being typed into a form stay as they are.
// The same answer carries notifications of new views and mail, shown when this browser
// turned them on.
(function () {
  "use strict";
  var EVERY = 2000;          // ms between polls while the page is visible
  var HIDDEN_EVERY = 10000;  // ... and while it is not (notifications still come)
  var LONGEST = 60000;       // the longest wait after failures
  var KEY = "mailseen.notify";

  var region = document.querySelector("[data-live]");
  var toggle = document.querySelector(".notify-toggle");
  var scope = region ? region.getAttribute("data-live") : "none";
  var cursor = region ? region.getAttribute("data-live-cursor") || "" : "";
  var canNotify = "Notification" in window;
  var timer = null, busy = false, stopped = false, failures = 0;

  // -- notifications: off until turned on, remembered per browser -----------------------

  function notifying() {
    return canNotify && localStorage.getItem(KEY) === "1" && Notification.permission === "granted";
  }

  function showToggle() {
    if (!toggle || !canNotify) return;
    var on = notifying(), blocked = Notification.permission === "denied";
    toggle.hidden = false;
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
    toggle.textContent = "Notifications " + (on ? "on" : blocked ? "blocked" : "off");
    toggle.title = on ? "Notified of views and new mail in this browser. Click to turn off."
      : blocked ? "This browser blocks notifications from this site: " +
        "allow them in its site settings."
      : "Click to be notified of views and new mail in this browser.";
  }

  if (toggle && canNotify) {
    toggle.addEventListener("click", function () {
      if (notifying()) {
        localStorage.setItem(KEY, "0");
        showToggle();
        return;
      }
      Promise.resolve(Notification.requestPermission()).then(function (permission) {
        if (permission === "granted") localStorage.setItem(KEY, "1");
        showToggle();
        schedule(0);
      });
    });
    window.addEventListener("storage", function (event) {  // turned on or off in another tab
      if (event.key === KEY) showToggle();
    });
    showToggle();
  }

  function notify(note) {
    if (!notifying()) return;
    var shown;
    try {
      // The tag makes the notification one per view, however many tabs are open.
      shown = new Notification(note.title, { tag: note.tag });
    } catch (e) {
      return;  // where pages may not make notifications (Chrome on Android)
    }
    shown.addEventListener("click", function () {
      window.focus();
      shown.close();
      location.assign(note.url);
    });
  }

  // -- patching the live part in place -----------------------------------------------------

  var FIELDS = "input, textarea, select";

  function edited(field) {
    if (field.tagName === "SELECT") {
      return Array.prototype.some.call(field.options, function (o) {
        return o.selected !== o.defaultSelected;
      });
    }
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    return field.value !== field.defaultValue;
  }

  // What the user is in the middle of: a form or field they are in or have changed, and
  // anything marked data-live-keep, is left exactly as it is, whatever the server now says.
  // A form nobody touched follows the server (a button that no longer applies goes away).
  function kept(el) {
    if (el.hasAttribute("data-live-keep")) return true;
    var form = el.tagName === "FORM" || el.matches(FIELDS);
    if (!form && !el.isContentEditable) return false;
    if (el.contains(document.activeElement)) return true;
    var fields = el.matches(FIELDS) ? [el] : el.querySelectorAll(FIELDS);
    return el.isContentEditable || Array.prototype.some.call(fields, edited);
  }

  // Attributes the user changes: a <details> they opened or closed stays so.
  function userOwned(el, name) {
    return name === "open" && el.tagName === "DETAILS";
  }

  function sameNode(a, b) {
    return a.nodeType === b.nodeType && a.nodeName === b.nodeName &&
      (a.nodeType !== 1 || (a.id || "") === (b.id || ""));
  }

  function syncAttributes(old, fresh) {
    var i, a;
    for (i = old.attributes.length - 1; i >= 0; i--) {
      a = old.attributes[i];
      if (!fresh.hasAttribute(a.name) && !userOwned(old, a.name)) old.removeAttribute(a.name);
    }
    for (i = 0; i < fresh.attributes.length; i++) {
      a = fresh.attributes[i];
      // Only what differs: setting a frame's src, even to the same address, reloads it.
      if (old.getAttribute(a.name) !== a.value && !userOwned(old, a.name)) {
        old.setAttribute(a.name, a.value);
      }
    }
  }

  // Children are paired by id where they have one (rows, messages: new ones are inserted
  // and the rest keep their nodes, so the browser keeps what is on screen in place), else
  // by position.
  function morphChildren(old, fresh) {
    var byId = {}, child, next, match, cursorNode = old.firstChild;
    for (child = old.firstChild; child; child = child.nextSibling) {
      if (child.nodeType === 1 && child.id) byId[child.id] = child;
    }
    for (child = fresh.firstChild; child; child = next) {
      next = child.nextSibling;
      match = null;
      if (child.nodeType === 1 && child.id && byId[child.id] &&
          byId[child.id].nodeName === child.nodeName) {
        match = byId[child.id];
        delete byId[child.id];
      } else if (cursorNode && sameNode(cursorNode, child)) {
        match = cursorNode;
      }
      if (match === null) {
        old.insertBefore(child, cursorNode);  // moves it out of the fetched document
      } else {
        if (match === cursorNode) cursorNode = cursorNode.nextSibling;
        else old.insertBefore(match, cursorNode);
        morph(match, child);
      }
    }
    while (cursorNode) {  // what the server no longer shows
      next = cursorNode.nextSibling;
      if (cursorNode.nodeType !== 1 || !kept(cursorNode)) old.removeChild(cursorNode);
      cursorNode = next;
    }
  }

  function morph(old, fresh) {
    if (old.nodeType !== 1) {
      if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
      return;
    }
    if (kept(old)) return;
    syncAttributes(old, fresh);
    morphChildren(old, fresh);
  }

  function refresh() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("page answered " + response.status);
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var fresh = page.querySelector("[data-live]");
        // Signed out meanwhile, or the page no longer shows this: leave it as it is.
        if (!fresh || fresh.getAttribute("data-live") !== scope) return;
        morph(region, fresh);
        document.dispatchEvent(new CustomEvent("mailseen:live-updated"));
      });
  }

  // -- polling ---------------------------------------------------------------------------

  function wanted() {
    return !stopped && (region !== null || notifying());
  }

  function schedule(ms) {
    clearTimeout(timer);
    if (wanted()) timer = setTimeout(poll, ms);
  }

  function later() {
    var wait = (document.hidden ? HIDDEN_EVERY : EVERY) * Math.pow(2, failures);
    return Math.min(LONGEST, wait);
  }

  function poll() {
    if (busy || !wanted()) return;
    busy = true;
    fetch("/live?scope=" + encodeURIComponent(scope) + "&cursor=" + encodeURIComponent(cursor),
      { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        // Signed out, or this conversation is no longer there: nothing more to follow.
        if (response.status === 401 || response.status === 404) stopped = true;
        if (!response.ok) throw new Error("live answered " + response.status);
        return response.json();
      })
      .then(function (answer) {
        cursor = answer.cursor;
        answer.notes.forEach(notify);
        return answer.changed && region ? refresh() : null;
      })
      .then(function () { failures = 0; }, function () { failures = Math.min(failures + 1, 5); })
      .then(function () {
        busy = false;
        schedule(later());
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule(0);
  });
  // A page rendered with a cursor waits for the first change; one without asks for its
  // starting point at once.
  schedule(cursor ? EVERY : 0);
})();
