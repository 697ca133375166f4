// mailseen compose: a small rich-text editor over the HTML field, and the tracking preview
// kept in step with the chosen mailbox and the message. Without this script the form still
// works: the HTML field is a plain textarea and "Update tracking preview" asks the server.
(function () {
  "use strict";
  var form = document.querySelector("form.compose-form");
  if (!form) return;
  var source = form.querySelector("#html");
  var select = form.querySelector("#mailbox");
  var fixed = document.getElementById("mailbox-fixed");
  var preview = document.getElementById("tracking-preview");
  var noTrack = document.getElementById("no-track");
  var text = form.querySelector("#text");
  form.querySelectorAll("[data-nojs-only]").forEach(function (el) { el.hidden = true; });

  // Parsed inertly (no scripts run, no images load) just to see whether there is content.
  function hasContent(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    return doc.body.textContent.trim() !== "" || doc.body.querySelector("img") !== null;
  }

  var editor = document.createElement("div");
  editor.className = "editor";
  editor.contentEditable = "true";
  editor.setAttribute("role", "textbox");
  editor.setAttribute("aria-multiline", "true");
  editor.setAttribute("aria-labelledby", "html-label");
  editor.setAttribute("aria-describedby", "html-hint");
  editor.innerHTML = source.value;
  var editingSource = false;

  function sync() {
    if (!editingSource) source.value = hasContent(editor.innerHTML) ? editor.innerHTML : "";
  }

  var toolbar = document.createElement("div");
  toolbar.className = "toolbar";
  toolbar.setAttribute("role", "toolbar");
  toolbar.setAttribute("aria-label", "Formatting");
  function tool(label, text, run) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.title = label;
    b.addEventListener("click", function () {
      if (editingSource && label !== "Edit HTML source") return;
      run(b);
      if (!editingSource) editor.focus();
      sync();
      update();
    });
    toolbar.appendChild(b);
    return b;
  }
  function exec(command, value) {
    return function () { document.execCommand(command, false, value); };
  }
  tool("Bold", "B", exec("bold"));
  tool("Italic", "I", exec("italic"));
  tool("Bulleted list", "• List", exec("insertUnorderedList"));
  tool("Numbered list", "1. List", exec("insertOrderedList"));
  tool("Link", "Link", function () {
    var url = window.prompt("Link address (https://…)", "https://");
    if (url && /^(https?:|mailto:)/i.test(url.trim())) exec("createLink", url.trim())();
  });
  tool("Remove formatting", "Clear", exec("removeFormat"));
  var sourceButton = tool("Edit HTML source", "HTML", function (b) {
    if (editingSource) {
      editor.innerHTML = source.value;
      editingSource = false;
    } else {
      sync();
      editingSource = true;
    }
    editor.hidden = editingSource;
    source.hidden = !editingSource;
    b.setAttribute("aria-pressed", String(editingSource));
    (editingSource ? source : editor).focus();
  });
  sourceButton.setAttribute("aria-pressed", "false");

  source.hidden = true;
  source.parentNode.insertBefore(toolbar, source);
  source.parentNode.insertBefore(editor, source);
  try { document.execCommand("defaultParagraphSeparator", false, "p"); } catch (e) { /* old */ }

  editor.addEventListener("input", function () { sync(); update(); });
  source.addEventListener("input", update);
  if (text) text.addEventListener("input", update);
  form.addEventListener("submit", sync);

  function update() {
    if (!preview) return;
    var from = select ? select.options[select.selectedIndex] : fixed;
    if (!from) return;
    var state = from.getAttribute("data-tracking-state");
    var words = from.getAttribute("data-tracking-words");
    // What the server worked out for the recipients typed (a privacy policy), while the
    // mailbox it was worked out for is still the one chosen.
    var details = document.getElementById("tracking-details");
    var same = !select || select.value === preview.getAttribute("data-mailbox");
    if (details) details.hidden = !same;
    if (same && state === "on" && preview.hasAttribute("data-policy-state")) {
      state = preview.getAttribute("data-policy-state");
      words = preview.getAttribute("data-policy-words");
    }
    // Until something is typed the message is to be written in the editor, as HTML.
    if (state === "on" && !hasContent(source.value) && text && text.value.trim() !== "") {
      state = "plain";
      words = "Not trackable: plain text";
    }
    // The switch turns tracking off for this message; it never turns it on.
    if (state === "on" && noTrack && noTrack.checked) {
      state = "off";
      words = "Tracking off (this message)";
    }
    preview.setAttribute("data-state", state);
    preview.querySelector(".preview-words").textContent = words;
  }
  if (select) select.addEventListener("change", update);
  if (noTrack) noTrack.addEventListener("change", update);
  sync();
  update();
})();
