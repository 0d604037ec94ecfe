// Messenger sandbox chat page: one simulated customer talking to the Page.
// All text goes through textContent; URLs are only used when they are http(s).
(function () {
  "use strict";
  var app = document.getElementById("app");
  var psid = app.dataset.psid;
  var ref = app.dataset.ref || null;
  var log = document.getElementById("log");
  var typing = document.getElementById("typing");
  var errorBox = document.getElementById("error");
  var quick = document.getElementById("quick");
  var welcome = document.getElementById("welcome");
  var composer = document.getElementById("composer");
  var input = document.getElementById("message");
  var getStarted = document.getElementById("get-started");
  var rendered = new Map();
  var version = null;
  var readRequested = 0;
  var latest = null;

  // A reload must not send the referral again.
  if (ref) {
    var url = new URL(window.location.href);
    url.searchParams.delete("ref");
    url.searchParams.delete("new");
    window.history.replaceState(null, "", url.pathname + url.search);
  }

  function api(method, path, body) {
    var init = { method: method, headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/__emu/users/" + encodeURIComponent(psid) + path, init).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error(data && data.error ? data.error : "HTTP " + r.status); }
        return data;
      });
    });
  }

  function showError(err) {
    errorBox.textContent = err ? String(err.message || err) : "";
    errorBox.hidden = !err;
  }

  function safeUrl(u) {
    return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
  }

  function renderAttachment(box, att) {
    var payload = att.payload || {};
    var url = safeUrl(payload.url);
    if ((att.type === "image" || att.type === "sticker") && url) {
      var img = document.createElement("img");
      img.src = url;
      img.alt = att.type === "sticker" ? "Sticker" : "Image";
      box.appendChild(img);
    } else if (att.type === "template") {
      var t = document.createElement("span");
      t.textContent = payload.text || ("[" + (payload.template_type || "template") + "]");
      box.appendChild(t);
    } else if (url) {
      var a = document.createElement("a");
      a.href = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = att.title || (att.type + " attachment");
      box.appendChild(a);
    }
  }

  function renderMessage(m) {
    var box = document.createElement("div");
    var fromPage = m.from && m.from.role === "page";
    box.className = "msg " + (fromPage ? "page" : "customer") + (m.kind === "postback" ? " postback" : "");
    box.dataset.mid = m.mid;
    if (m.text) {
      var text = document.createElement("span");
      text.textContent = m.text;
      box.appendChild(text);
    }
    // A sticker arrives as both image and sticker during the transition: show one.
    var atts = (m.attachments || []).filter(function (a) { return a.type !== "sticker" || !m.sticker_id; });
    atts.forEach(function (att) { renderAttachment(box, att); });
    if (fromPage && m.from.app_id === "263902037430900") {
      var note = document.createElement("span");
      note.className = "note";
      note.textContent = "Sent from the Page Inbox";
      box.appendChild(note);
    }
    var reaction = document.createElement("span");
    reaction.className = "reaction";
    box.appendChild(reaction);
    return box;
  }

  function renderQuickReplies(last) {
    quick.textContent = "";
    var items = last && last.from && last.from.role === "page" ? (last.quick_replies || []) : [];
    items.filter(function (q) { return q.content_type === "text"; }).forEach(function (q) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = q.title || q.payload;
      b.addEventListener("click", function () {
        send({ text: q.title || String(q.payload), quick_reply_payload: String(q.payload) });
      });
      quick.appendChild(b);
    });
    quick.hidden = quick.childElementCount === 0;
  }

  function render(view) {
    latest = view;
    view.messages.forEach(function (m) {
      var box = rendered.get(m.mid);
      if (!box) {
        box = renderMessage(m);
        rendered.set(m.mid, box);
        log.appendChild(box);
        log.scrollTop = log.scrollHeight;
      }
      var r = box.querySelector(".reaction");
      r.textContent = m.reaction || "";
      r.hidden = !m.reaction;
    });
    typing.hidden = !view.typing;
    renderQuickReplies(view.messages[view.messages.length - 1]);
    var needsWelcome = !view.started && view.get_started_available;
    welcome.hidden = !needsWelcome;
    composer.hidden = needsWelcome || view.user.blocked;
    markRead();
  }

  function markRead() {
    if (!latest || document.visibilityState !== "visible") { return; }
    var newest = 0;
    latest.messages.forEach(function (m) {
      if (m.from && m.from.role === "page" && m.timestamp > newest) { newest = m.timestamp; }
    });
    if (newest > latest.read_watermark && newest > readRequested) {
      readRequested = newest;
      api("POST", "/read?from_page=1").catch(function () { readRequested = 0; });
    }
  }
  document.addEventListener("visibilitychange", markRead);

  function poll() {
    var q = version === null ? "" : "?since=" + version + "&wait_ms=25000";
    api("GET", "/thread" + q).then(function (view) {
      version = view.version;
      render(view);
      setTimeout(poll, 0);
    }).catch(function () {
      setTimeout(poll, 1000);
    });
  }

  function send(message) {
    showError(null);
    return api("POST", "/messages", message).catch(showError);
  }

  getStarted.addEventListener("click", function () {
    getStarted.disabled = true;
    api("POST", "/get_started", { ref: ref }).then(function () {
      ref = null;
      welcome.hidden = true;
      composer.hidden = false;
      input.focus();
    }).catch(function (err) {
      getStarted.disabled = false;
      showError(err);
    });
  });

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text.trim()) { return; }
    input.value = "";
    send({ text: text });
  });

  api("POST", "/open", { ref: ref }).then(function (result) {
    if (result.outcome !== "get_started_shown") { ref = null; }
  }).catch(showError).then(poll);
})();
