/*
 * The consent page (/consent): names the application and, in plain words, what it asks for;
 * Allow or Deny are sent to POST /api/oidc/consent and the browser follows the redirect the
 * server answers (to the application). Errors of a request the server refused to send back
 * (unknown application, unregistered return address) come as ?error=CODE and are shown from
 * this fixed table only: nothing from the URL is displayed. No inline script (strict CSP);
 * text is set with textContent only.
 */
"use strict";

(function () {
  const ERRORS = {
    invalid_client: "This application is not registered here. Tell its administrator.",
    invalid_redirect_uri:
      "This application asked to return to an address it did not register, so you were not sent there.",
    invalid_request: "This sign-in request is invalid or has expired. Start again from the application.",
  };
  const VIEWS = ["view-loading", "view-consent", "view-error"];
  const query = new URLSearchParams(window.location.search);

  function $(id) {
    return document.getElementById(id);
  }

  function show(id) {
    for (const view of VIEWS) $(view).hidden = view !== id;
    const title = $(id).querySelector("h1");
    if (title) title.focus();
  }

  function fail(message) {
    $("error-text").textContent = message;
    show("view-error");
  }

  async function api(method, path, body) {
    const init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    return { status: resp.status, data: data };
  }

  /** Follow a redirect the server gave, only to http(s). */
  function go(url) {
    let target;
    try {
      target = new URL(url, window.location.href);
    } catch (e) {
      fail(ERRORS.invalid_request);
      return;
    }
    if (target.protocol !== "https:" && target.protocol !== "http:") {
      fail(ERRORS.invalid_request);
      return;
    }
    window.location.assign(target.href);
  }

  async function answer(flow, consent) {
    $("consent-accept").disabled = true;
    $("consent-deny").disabled = true;
    $("consent-error").textContent = "";
    try {
      const r = await api("POST", "/api/oidc/consent", { flow: flow, consent: consent });
      if (r.status === 200 && r.data && r.data.data && r.data.data.redirect) {
        go(r.data.data.redirect);
        return;
      }
      $("consent-error").textContent =
        (r.data && r.data.message) || "Your answer could not be sent. Try again.";
    } catch (e) {
      $("consent-error").textContent = "The server cannot be reached. Check your connection and try again.";
    }
    $("consent-accept").disabled = false;
    $("consent-deny").disabled = false;
  }

  async function start() {
    const error = query.get("error");
    if (error !== null) {
      fail(Object.prototype.hasOwnProperty.call(ERRORS, error) ? ERRORS[error] : ERRORS.invalid_request);
      return;
    }
    const flow = query.get("flow");
    if (!flow) {
      fail(ERRORS.invalid_request);
      return;
    }
    let r;
    try {
      r = await api("GET", "/api/oidc/consent?" + new URLSearchParams({ flow: flow }).toString());
    } catch (e) {
      fail("The server cannot be reached. Check your connection and reload.");
      return;
    }
    if (r.status === 401 || r.status === 403) {
      window.location.assign("/?" + new URLSearchParams({ rd: window.location.href }).toString());
      return;
    }
    if (r.status !== 200 || !r.data || !r.data.data) {
      fail((r.data && r.data.message) || ERRORS.invalid_request);
      return;
    }
    const info = r.data.data;
    $("client-name").textContent = info.client_name;
    $("client-name-again").textContent = info.client_name;
    $("consent-user").textContent = info.username;
    const list = $("scope-list");
    for (const scope of info.scopes) {
      const item = document.createElement("li");
      item.textContent = scope.description;
      list.appendChild(item);
    }
    $("consent-remember").hidden = !info.remember;
    $("consent-accept").addEventListener("click", function () {
      answer(flow, true);
    });
    $("consent-deny").addEventListener("click", function () {
      answer(flow, false);
    });
    show("view-consent");
  }

  start();
})();
