// Roundtrip dashboard: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  function csrfToken(form) {
    var input = (form || document).querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function post(url, form, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (name) { body.append(name, fields[name]); });
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-CSRFToken": csrfToken(form),
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: body,
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    });
  }

  // Copy buttons: data-copy="#id of the element whose text to copy".
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(area); }
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    copyText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = "Copy"; button.classList.remove("copied"); }, 1500);
    });
  });

  // Confirmation for destructive buttons: data-confirm="question".
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  // "Select all" checkbox: data-select-all="name of the checkboxes".
  document.addEventListener("change", function (event) {
    var all = event.target.closest("input[data-select-all]");
    if (!all) { return; }
    var name = all.getAttribute("data-select-all");
    all.form.querySelectorAll("input[type=checkbox][name='" + name + "']").forEach(function (box) {
      box.checked = all.checked;
    });
  });

  // Callback editor: live preview as you type, placeholder chips, "Send test postback".
  var form = document.getElementById("callback-form");
  if (!form) { return; }
  var input = form.querySelector("[data-preview-source]");
  var preview = document.getElementById("preview");
  var previewUrl = document.getElementById("preview-url");
  var previewError = document.getElementById("preview-error");
  var timer = null;
  var sequence = 0;

  function refreshPreview() {
    var mine = ++sequence;
    var text = input.value.trim();
    if (!text) {
      previewUrl.textContent = "Type a URL such as https://your-site.example/postback?spid=[spid]";
      previewUrl.classList.add("muted");
      previewError.hidden = true;
      return;
    }
    post(preview.getAttribute("data-url"), form, { url_template: text }).then(function (data) {
      if (mine !== sequence) { return; } // an answer to an older keystroke
      if (data.ok) {
        previewUrl.textContent = data.url;
        previewUrl.classList.remove("muted");
        previewError.hidden = true;
      } else {
        previewUrl.textContent = "—";
        previewUrl.classList.add("muted");
        previewError.textContent = data.error;
        previewError.hidden = !data.error;
      }
    }).catch(function () { /* keep the last preview; the form still validates on save */ });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(refreshPreview, 120);
  });
  refreshPreview();

  document.querySelectorAll("[data-insert]").forEach(function (chip) {
    chip.addEventListener("click", function () {
      var token = chip.getAttribute("data-insert");
      var start = input.selectionStart == null ? input.value.length : input.selectionStart;
      var end = input.selectionEnd == null ? input.value.length : input.selectionEnd;
      input.value = input.value.slice(0, start) + token + input.value.slice(end);
      input.focus();
      input.setSelectionRange(start + token.length, start + token.length);
      refreshPreview();
    });
  });

  var testButton = document.getElementById("send-test");
  var result = document.getElementById("test-result");
  testButton.addEventListener("click", function (event) {
    event.preventDefault();
    testButton.disabled = true;
    testButton.textContent = "Sending…";
    var method = form.querySelector("input[name=method]:checked");
    var saved = form.querySelector("input[name=callback]");
    post(testButton.getAttribute("data-url"), form, {
      url_template: input.value.trim(),
      method: method ? method.value : "GET",
      callback: saved ? saved.value : "",
    })
      .then(showTest)
      .catch(function (error) {
        showTest({ ok: false, request: null, response: null, error: { kind: "dashboard", message: String(error) } });
      })
      .then(function () {
        testButton.disabled = false;
        testButton.textContent = "Send test postback";
      });
  });

  function showTest(data) {
    result.hidden = false;
    var verdict = document.getElementById("test-verdict");
    verdict.innerHTML = "";
    var pill = document.createElement("span");
    pill.className = "pill " + (data.ok ? "pill-succeeded" : "pill-failed");
    pill.textContent = data.ok ? "delivered" : "not delivered";
    verdict.appendChild(pill);
    var request = data.request;
    document.getElementById("test-request").textContent = request
      ? request.method + " " + request.url + "\n" + Object.keys(request.headers).map(function (name) {
        return name + ": " + request.headers[name];
      }).join("\n") + (request.body ? "\n\n" + request.body : "")
      : "(not sent)";
    var response = data.response;
    document.getElementById("test-response").textContent = response
      ? "HTTP " + response.status_code + " · " + response.duration_ms + " ms · " + response.resolved_ip + "\n\n" + response.body_excerpt
      : data.error.kind + ": " + data.error.message;
    result.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }
})();
