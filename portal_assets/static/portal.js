/* authctl portal: one script for every page, chosen by <body data-page="…">.
 *
 * Rules this file keeps (the portal is served under a strict CSP, see SPEC §3.4):
 * - no inline anything: the HTML pages carry no script or style, everything is wired here;
 * - dynamic text is set with textContent only, never as HTML;
 * - URLs that come from the query string are neither shown nor followed: the site a page names is
 *   the host the server's redirect check gave (`target_host` of /api/state?rd=…), and only URLs
 *   the server returns (already validated there, §3.5) are navigated to, if they are http(s);
 * - every state-changing call is a same-origin fetch with a JSON body.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(window.location.search);
  const NAVIGATING = "navigating";

  /* ------------------------------------------------------------------ API */

  class ApiError extends Error {
    constructor(message, status, data, notAvailable) {
      super(message);
      this.status = status;
      this.data = data || null;
      this.notAvailable = Boolean(notAvailable);
    }
  }

  const DEFAULT_MESSAGES = {
    0: "Cannot reach the server. Check your connection and try again.",
    400: "The request was not accepted. Check what you typed and try again.",
    401: "Authentication failed.",
    403: "This is not allowed.",
    429: "Too many attempts. Wait a moment and try again.",
  };

  function defaultMessage(status) {
    if (DEFAULT_MESSAGES[status]) return DEFAULT_MESSAGES[status];
    if (status >= 500) return "The server had a problem. Try again in a moment.";
    return "Something went wrong (error " + status + "). Try again.";
  }

  /**
   * Call the portal API and return the envelope's `data` (or {}), or throw an ApiError.
   * `feature` names the thing for the "not available yet" message shown on 404/405/501.
   */
  async function api(method, path, body, feature) {
    const init = {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      // Keeps the Origin header on same-origin requests even if the page's policy is no-referrer.
      referrerPolicy: "same-origin",
      headers: { Accept: "application/json" },
    };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(DEFAULT_MESSAGES[0], 0);
    }
    if (response.status === 404 || response.status === 405 || response.status === 501) {
      const what = feature || "This";
      throw new ApiError(what + " is not available yet on this server.", response.status, null, true);
    }
    let payload = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.indexOf("json") !== -1) {
      try {
        payload = await response.json();
      } catch (err) {
        payload = null;
      }
    }
    if (response.ok && payload && payload.status === "OK") {
      return payload.data && typeof payload.data === "object" ? payload.data : {};
    }
    if ((response.status === 201 || response.status === 204) && !payload) return {};
    let message = defaultMessage(response.status);
    if (response.ok) message = "The server sent an unexpected answer. Try again.";
    if (payload && typeof payload.message === "string" && payload.message.trim()) {
      message = payload.message.trim();
    }
    const data = payload && payload.data && typeof payload.data === "object" ? payload.data : null;
    throw new ApiError(message, response.status, data, false);
  }

  /* ------------------------------------------------------------ helpers */

  const sayTimers = new WeakMap();

  /** Put text into a live region; clear first so the same message is announced again. */
  function say(el, text) {
    if (!el) return;
    clearTimeout(sayTimers.get(el));
    el.textContent = "";
    if (text) {
      sayTimers.set(
        el,
        setTimeout(function () {
          el.textContent = text;
        }, 50),
      );
    }
  }

  function markInvalid(input, invalid) {
    if (invalid) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function clearInvalidOnInput(inputs) {
    inputs.forEach(function (input) {
      input.addEventListener("input", function () {
        markInvalid(input, false);
      });
    });
  }

  /** Show a field problem inline, mark the field and put the focus there. */
  function fieldError(errEl, input, message) {
    markInvalid(input, true);
    say(errEl, message);
    input.focus();
  }

  /**
   * Run an async action while `button` (and `others`) are disabled; an ApiError it throws is shown
   * in `errEl`. An action returning NAVIGATING leaves the buttons disabled (the page is leaving).
   */
  async function run(button, errEl, action, others) {
    if (button.getAttribute("aria-busy") === "true") return undefined;
    const all = [button].concat(others || []);
    const hadFocus = document.activeElement === button;
    all.forEach(function (b) {
      b.disabled = true;
    });
    button.setAttribute("aria-busy", "true");
    say(errEl, "");
    let result;
    try {
      result = await action();
    } catch (err) {
      if (err instanceof ApiError) {
        say(errEl, err.message);
      } else {
        say(errEl, "Something went wrong in this page. Reload it and try again.");
        if (window.console) window.console.error(err);
      }
    } finally {
      if (result !== NAVIGATING) {
        all.forEach(function (b) {
          b.disabled = false;
        });
        button.removeAttribute("aria-busy");
        const active = document.activeElement;
        if (hadFocus && (!active || active === document.body)) button.focus();
      }
    }
    return result;
  }

  /** The host of an http(s) URL, or "" for anything else (never trusted for more than display). */
  function hostOf(url) {
    if (!url) return "";
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") return "";
      return parsed.host;
    } catch (err) {
      return "";
    }
  }

  /** Navigate to a URL the server returned, if it is http(s); false otherwise. */
  function navigateTo(url) {
    if (typeof url !== "string" || !hostOf(url)) return false;
    window.location.assign(new URL(url).href);
    return true;
  }

  /** `path` with this page's `rd` and `rm` query parameters carried over. */
  function withTarget(path) {
    const params = new URLSearchParams();
    const rd = query.get("rd");
    const rm = query.get("rm");
    if (rd) params.set("rd", rd);
    if (rm) params.set("rm", rm);
    const qs = params.toString();
    return qs ? path + "?" + qs : path;
  }

  /** Show the view with this id; hide its sibling views (the elements whose id starts "view-"). */
  function showView(id) {
    document.querySelectorAll("main > [id^='view-']").forEach(function (el) {
      el.hidden = el.id !== id;
    });
  }

  /** `/api/state`, asking the server to check this page's `rd` (it answers `target_host`). */
  function stateWithTarget(feature) {
    const rd = query.get("rd");
    const qs = rd ? "?" + new URLSearchParams({ rd: rd }).toString() : "";
    return api("GET", "/api/state" + qs, undefined, feature);
  }

  /**
   * Name the site the user will return to: only the host the server's redirect check passed
   * (`state.target_host`), never one read from this page's URL, where a phishing link can put
   * any site.
   */
  function showTargetHost(containerId, hostId, state) {
    const host = state && typeof state.target_host === "string" ? state.target_host : "";
    if (!host) return "";
    $(hostId).textContent = host;
    $(containerId).hidden = false;
    return host;
  }

  function levelText(level) {
    if (level >= 2) return "two factors";
    if (level === 1) return "one factor";
    return "not signed in";
  }

  function setIdentity(name, avatarId, nameId) {
    $(nameId).textContent = name;
    const first = Array.from((name || "?").trim())[0] || "?";
    $(avatarId).textContent = first;
  }

  function signOutButton(button, errEl, after) {
    button.addEventListener("click", function () {
      run(button, errEl, async function () {
        await api("POST", "/api/logout", {}, "Sign-out");
        return after();
      });
    });
  }

  /** Strip the spaces and dashes that authenticator apps and mails show inside codes. */
  function cleanCode(text) {
    return String(text || "").replace(/[\s-]+/g, "");
  }

  /** Make a code field paste-friendly; `onComplete` runs when a whole code was pasted. */
  function codeField(input, onComplete) {
    input.addEventListener("paste", function (ev) {
      const data = ev.clipboardData ? ev.clipboardData.getData("text") : null;
      if (data === null) return;
      ev.preventDefault();
      const pasted = cleanCode(data);
      const max = input.maxLength > 0 ? input.maxLength : 8;
      const start = input.selectionStart === null ? input.value.length : input.selectionStart;
      const end = input.selectionEnd === null ? start : input.selectionEnd;
      const next = (input.value.slice(0, start) + pasted + input.value.slice(end)).slice(0, max);
      input.value = next;
      const caret = Math.min(start + pasted.length, next.length);
      input.setSelectionRange(caret, caret);
      markInvalid(input, false);
      if (onComplete && pasted === next && /^(\d{6}|\d{8})$/.test(next)) onComplete();
    });
    input.addEventListener("input", function () {
      const cleaned = cleanCode(input.value);
      if (cleaned !== input.value) input.value = cleaned;
    });
  }

  const TOTP_PATTERN = /^(\d{6}|\d{8})$/;
  const TOTP_HINT = "Enter the 6-digit code from your authenticator app (8 digits if your app shows 8).";

  /* ------------------------------------------------------------ WebAuthn */

  /*
   * The server sends WebAuthn options and takes credentials in their JSON form (every byte field
   * base64url, as PublicKeyCredential.toJSON() writes it, SPEC §7.1). The browser's own
   * parse…FromJSON / toJSON are used where they exist; the small fallback below does the same
   * for older browsers.
   */

  function fromBase64url(value) {
    const text = String(value || "").replace(/-/g, "+").replace(/_/g, "/");
    const binary = window.atob(text + "===".slice((text.length + 3) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 1) binary += String.fromCharCode(bytes[i]);
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  /** True when this browser can use passkeys and security keys at all. */
  function webauthnSupported() {
    return (
      typeof window.PublicKeyCredential === "function" &&
      Boolean(navigator.credentials) &&
      typeof navigator.credentials.get === "function"
    );
  }

  function withIds(list) {
    if (!Array.isArray(list)) return list;
    return list.map(function (d) {
      return Object.assign({}, d, { id: fromBase64url(d.id) });
    });
  }

  /** The server's `data.publicKey` (or `data`) as PublicKeyCredentialRequestOptions. */
  function requestOptions(data) {
    const json = data && typeof data.publicKey === "object" && data.publicKey ? data.publicKey : data;
    if (!json || typeof json.challenge !== "string") {
      throw new ApiError("The server sent unusable passkey options. Try again.", 0);
    }
    if (typeof window.PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      try {
        return window.PublicKeyCredential.parseRequestOptionsFromJSON(json);
      } catch (err) {
        /* an option this browser does not know: the fallback below passes it through */
      }
    }
    const options = Object.assign({}, json, { challenge: fromBase64url(json.challenge) });
    if (json.allowCredentials) options.allowCredentials = withIds(json.allowCredentials);
    return options;
  }

  /** The server's `data.publicKey` (or `data`) as PublicKeyCredentialCreationOptions. */
  function creationOptions(data) {
    const json = data && typeof data.publicKey === "object" && data.publicKey ? data.publicKey : data;
    if (!json || typeof json.challenge !== "string" || !json.user || typeof json.user.id !== "string") {
      throw new ApiError("The server sent unusable passkey options. Try again.", 0);
    }
    if (typeof window.PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      try {
        return window.PublicKeyCredential.parseCreationOptionsFromJSON(json);
      } catch (err) {
        /* fall back below */
      }
    }
    const options = Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromBase64url(json.user.id) }),
    });
    if (json.excludeCredentials) options.excludeCredentials = withIds(json.excludeCredentials);
    return options;
  }

  /** A credential from create() or get() in its JSON form (what the server reads). */
  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") {
      try {
        return credential.toJSON();
      } catch (err) {
        /* fall back below */
      }
    }
    const r = credential.response;
    const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      if (typeof r.getTransports === "function") response.transports = r.getTransports();
    }
    if (r.authenticatorData) response.authenticatorData = toBase64url(r.authenticatorData);
    if (r.signature) response.signature = toBase64url(r.signature);
    if (r.userHandle) response.userHandle = toBase64url(r.userHandle);
    const json = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults:
        typeof credential.getClientExtensionResults === "function"
          ? credential.getClientExtensionResults()
          : {},
    };
    if (credential.authenticatorAttachment) {
      json.authenticatorAttachment = credential.authenticatorAttachment;
    }
    return json;
  }

  /** What to tell the user when the browser's part of a ceremony fails. */
  function ceremonyMessage(err, creating, elapsed, timeout) {
    const name = err && err.name ? err.name : "";
    if (name === "NotAllowedError") {
      if (timeout && elapsed >= timeout - 1000) {
        return "The request timed out. Try again and confirm when your browser asks.";
      }
      return creating
        ? "No passkey was added: the request was cancelled or not allowed. Try again."
        : "The request was cancelled or not allowed. Try again and confirm when your browser asks.";
    }
    if (name === "AbortError") return "The request was cancelled.";
    if (name === "InvalidStateError") {
      return creating
        ? "This security key or passkey is already registered for your account."
        : "This passkey cannot be used here.";
    }
    if (name === "SecurityError") {
      return "Your browser refused passkeys on this address. Open the sign-in page at its usual address and try again.";
    }
    if (name === "NotSupportedError") {
      return "This browser or device cannot create or use the kind of passkey this server asks for.";
    }
    return "The passkey request failed. Try again.";
  }

  /** Run the browser's part (`fn` returns the create()/get() promise); its failure becomes an
   * ApiError with a message for people, so run() announces it in the live region. */
  async function ceremony(fn, creating, timeout) {
    if (!webauthnSupported()) {
      throw new ApiError("This browser does not support passkeys or security keys.", 0);
    }
    const started = Date.now();
    let credential;
    try {
      credential = await fn();
    } catch (err) {
      const failure = new ApiError(ceremonyMessage(err, creating, Date.now() - started, timeout), 0);
      failure.ceremony = err && err.name ? err.name : "Error";
      throw failure;
    }
    if (!credential) throw new ApiError("The request was cancelled.", 0);
    return credential;
  }

  /* -------------------------------------------------------- page: sign in */

  async function pageLogin() {
    const rd = query.get("rd") || "";
    const rm = query.get("rm") || "";
    const form = $("login-form");
    const user = $("username");
    const pass = $("password");
    const remember = $("remember-me");
    const submit = $("sign-in");
    const passkeyButton = $("passkey-sign-in");
    const err = $("login-error");
    const status = $("login-status");
    let passkeyLogin = false;
    let conditional = null; // the pending conditional-mediation request: {controller, settled}
    let conditionalTimer = 0;

    submit.disabled = false;
    clearInvalidOnInput([user, pass]);
    function showLogin(focus) {
      showView("view-login");
      if (focus) user.focus();
    }

    async function secondFactorAvailable() {
      try {
        const conf = await api("GET", "/api/configuration");
        const methods = Array.isArray(conf.available_methods) ? conf.available_methods : [];
        return methods.indexOf("totp") !== -1 || methods.indexOf("webauthn") !== -1;
      } catch (e) {
        return true; // the server gave no redirect for a target: most likely it wants a second factor
      }
    }

    async function showSignedIn(state) {
      const level = Number(state.authentication_level) || 0;
      $("signed-in-username").textContent = state.username || "";
      $("signed-in-level").textContent = "signed in with " + levelText(level);
      setIdentity(state.username || "", "avatar", "display-name");

      const continueLink = $("continue-default");
      const defaultHost = hostOf(state.default_redirection_url);
      continueLink.hidden = !(defaultHost && !rd);
      if (!continueLink.hidden) {
        continueLink.href = new URL(state.default_redirection_url).href;
        continueLink.textContent = "Continue to " + defaultHost;
      }
      const twoFa = $("goto-2fa");
      twoFa.hidden = !(level < 2);
      twoFa.href = withTarget("/2fa");

      showView("view-signed-in");
      $("signed-in-title").focus();
      try {
        const info = await api("GET", "/api/user/info", undefined, "Account information");
        if (info.display_name) setIdentity(String(info.display_name), "avatar", "display-name");
        if (info.has_webauthn === true) {
          twoFa.textContent = info.has_totp === true ? "Verify with a second factor" : "Verify with your passkey";
        }
        if (info.has_totp === false && info.has_webauthn !== true) twoFa.hidden = true;
      } catch (e) {
        /* the username stands in for the display name */
      }
    }

    /** After a first factor (password or passkey): follow the server's redirect, go on to the
     * second factor for a target that needs it, or show who is signed in. */
    async function afterFirstFactor(data, verb) {
      if (data.redirect && navigateTo(data.redirect)) {
        say(status, verb + " Taking you to " + hostOf(data.redirect) + "…");
        return NAVIGATING;
      }
      const state = await api("GET", "/api/state");
      const level = Number(state.authentication_level) || 0;
      if (rd && level < 2 && (await secondFactorAvailable())) {
        window.location.assign(withTarget("/2fa"));
        return NAVIGATING;
      }
      user.value = "";
      await stopConditional();
      await showSignedIn(state);
      return undefined;
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(status, "");
      const username = user.value.trim();
      const password = pass.value;
      if (!username) return fieldError(err, user, "Enter your username.");
      if (!password) return fieldError(err, pass, "Enter your password.");
      run(
        submit,
        err,
        async function () {
          const body = { username: username, password: password, keepMeLoggedIn: remember.checked };
          if (rd) body.targetURL = rd;
          if (rm) body.requestMethod = rm;
          let data;
          try {
            data = await api("POST", "/api/firstfactor", body, "Sign-in");
          } catch (e) {
            pass.value = "";
            pass.focus();
            throw e;
          }
          pass.value = "";
          return afterFirstFactor(data, "Signed in.");
        },
        [passkeyButton],
      );
      return undefined;
    });

    /* ---- passkey sign-in (SPEC §7.1: GET/POST /api/firstfactor/passkey) ---- */

    async function passkeyOptions() {
      const data = await api("GET", "/api/firstfactor/passkey", undefined, "Passkey sign-in");
      return requestOptions(data);
    }

    async function finishPasskey(credential) {
      const body = { response: credentialJSON(credential), keepMeLoggedIn: remember.checked };
      if (rd) body.targetURL = rd;
      if (rm) body.requestMethod = rm;
      const data = await api("POST", "/api/firstfactor/passkey", body, "Passkey sign-in");
      pass.value = "";
      return afterFirstFactor(data, "Signed in with your passkey.");
    }

    /**
     * Show "Sign in with a passkey" when the server signs in with passkeys. `/api/configuration`
     * (its `passkey_login`) answers only signed-in sessions, as Authelia's does, so the page asks
     * for passkey options instead: a 404 means passkey sign-in is off. The options then serve
     * the autofill request.
     */
    async function offerPasskeys() {
      if (!webauthnSupported()) return;
      let options = null;
      try {
        options = await passkeyOptions();
      } catch (e) {
        options = null; // off, or not now: the password form is there
      }
      passkeyLogin = options !== null;
      $("passkey-block").hidden = !passkeyLogin;
      if (passkeyLogin && !$("view-login").hidden) startConditional(options);
    }

    /** Offer the user's passkeys in the username field's autofill (conditional mediation),
     * where the browser can; quietly nothing where it cannot. The request is renewed before
     * its challenge expires (`timeout`), as the autofill may wait for a long time. */
    async function startConditional(ready) {
      if (!passkeyLogin || conditional || !webauthnSupported()) return;
      const check = window.PublicKeyCredential.isConditionalMediationAvailable;
      if (typeof check !== "function") return;
      let available = false;
      try {
        available = await check.call(window.PublicKeyCredential);
      } catch (e) {
        available = false;
      }
      if (!available || conditional) return;
      const controller = new AbortController();
      const entry = { controller: controller, settled: null };
      conditional = entry;
      let credential = null;
      const pending = (async function () {
        const options = ready || (await passkeyOptions());
        if (controller.signal.aborted) return null;
        const renewIn = Number(options.timeout) > 5000 ? Number(options.timeout) - 2000 : 58000;
        clearTimeout(conditionalTimer);
        conditionalTimer = setTimeout(function () {
          if (conditional !== entry) return;
          stopConditional().then(function () {
            if (!$("view-login").hidden) startConditional();
          });
        }, renewIn);
        return navigator.credentials.get({
          mediation: "conditional",
          publicKey: options,
          signal: controller.signal,
        });
      })();
      entry.settled = pending.then(
        function () {},
        function () {},
      );
      try {
        credential = await pending;
      } catch (e) {
        credential = null; // aborted, or the browser would not: the button still works
      }
      if (conditional === entry) conditional = null;
      if (!credential || controller.signal.aborted) return;
      // not offered again after a refusal (the button still is): the browser would only pick
      // the same passkey again
      await run(
        passkeyButton,
        err,
        function () {
          return finishPasskey(credential);
        },
        [submit],
      );
    }

    /** Cancel the autofill request (one WebAuthn request at a time) and wait until it ended. */
    async function stopConditional() {
      clearTimeout(conditionalTimer);
      const entry = conditional;
      conditional = null;
      if (!entry) return;
      entry.controller.abort();
      if (entry.settled) await entry.settled;
    }

    passkeyButton.addEventListener("click", function () {
      say(status, "");
      run(
        passkeyButton,
        err,
        async function () {
          await stopConditional();
          const options = await passkeyOptions();
          const credential = await ceremony(
            function () {
              return navigator.credentials.get({ publicKey: options });
            },
            false,
            options.timeout,
          );
          return finishPasskey(credential);
        },
        [submit],
      ).then(function (result) {
        if (result !== NAVIGATING && !$("view-login").hidden) startConditional();
      });
    });

    signOutButton($("sign-out"), $("signed-in-error"), function () {
      showLogin(true);
      say(status, "You have been signed out.");
      offerPasskeys();
    });

    let state;
    try {
      state = await stateWithTarget("Sign-in");
    } catch (e) {
      showLogin(true);
      say(err, e.message);
      return;
    }
    if (showTargetHost("target", "target-host", state)) {
      $("login-lead").hidden = true;
      // a reset started here leads back to the same site (only one the server's check passed)
      $("forgot-password").href = withTarget("/reset-password");
    }
    showTargetHost("signed-in-target", "signed-in-target-host", state);
    if (state.remember_me === false) remember.closest("label").hidden = true;
    const level = Number(state.authentication_level) || 0;
    if (level >= 1) {
      if (rd && level === 1 && (await secondFactorAvailable())) {
        window.location.replace(withTarget("/2fa"));
        return;
      }
      await showSignedIn(state);
    } else {
      showLogin(true);
    }
    if (level < 1) await offerPasskeys();
  }

  /* ------------------------------------------------ page: one-time code */

  async function page2fa() {
    const rd = query.get("rd") || "";

    /** The site asks for a second factor but this user has none: say so, from the heading
     * down, instead of asking for a code that cannot exist. */
    function showNoTotp() {
      $("code-title").textContent = "Set up two-factor sign-in";
      // the server renders [portal] title into the brand line: keep it in the tab's title
      const brandName = document.querySelector(".brand span");
      document.title = "Set up two-factor sign-in · " + (brandName ? brandName.textContent : "authctl");
      $("target-verb").textContent = "A one-time code is needed to continue to";
      $("code-lead").hidden = true;
      $("no-totp").hidden = false;
      form.hidden = true;
    }

    const form = $("code-form");
    const code = $("code");
    const verify = $("verify");
    const err = $("code-error");
    const status = $("code-status");
    const keyButton = $("webauthn-verify");
    const keyErr = $("webauthn-error");
    const keyStatus = $("webauthn-status");

    verify.disabled = false;
    keyButton.disabled = false;
    clearInvalidOnInput([code]);
    codeField(code, function () {
      form.requestSubmit ? form.requestSubmit(verify) : verify.click();
    });

    function showCode(focus) {
      showView("view-code");
      if (focus) code.focus();
    }

    function showKey(focus) {
      showView("view-webauthn");
      if (focus) keyButton.focus();
    }

    /** Remember the method the user switched to (`POST /api/user/info/2fa_method`); a refusal
     * changes nothing on this page. */
    function preferMethod(method) {
      api("POST", "/api/user/info/2fa_method", { method: method }).catch(function () {});
    }

    /** A verified second factor: the server's redirect, or the "verified" view. */
    function verified(data, statusEl, how) {
      if (data.redirect && navigateTo(data.redirect)) {
        say(statusEl, "Verified. Taking you to " + hostOf(data.redirect) + "…");
        return NAVIGATING;
      }
      $("done-lead").textContent = "You signed in with your password and " + how + ".";
      showView("view-done");
      $("done-title").focus();
      say($("done-status"), how === "a passkey" ? "Your passkey was accepted." : "Your one-time code was accepted.");
      return undefined;
    }

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(status, "");
      const token = cleanCode(code.value);
      if (!TOTP_PATTERN.test(token)) return fieldError(err, code, TOTP_HINT);
      run(verify, err, async function () {
        const body = { token: token };
        if (rd) body.targetURL = rd;
        let data;
        try {
          data = await api("POST", "/api/secondfactor/totp", body, "Two-factor sign-in");
        } catch (e) {
          code.value = "";
          markInvalid(code, true);
          code.focus();
          throw e;
        }
        return verified(data, status, "a one-time code");
      });
      return undefined;
    });

    keyButton.addEventListener("click", function () {
      say(keyStatus, "");
      run(keyButton, keyErr, async function () {
        const options = requestOptions(
          await api("GET", "/api/secondfactor/webauthn", undefined, "Security key sign-in"),
        );
        const credential = await ceremony(
          function () {
            return navigator.credentials.get({ publicKey: options });
          },
          false,
          options.timeout,
        );
        const body = { response: credentialJSON(credential) };
        if (rd) body.targetURL = rd;
        const data = await api("POST", "/api/secondfactor/webauthn", body, "Security key sign-in");
        return verified(data, keyStatus, "a passkey");
      });
    });

    $("use-totp").addEventListener("click", function () {
      say(keyErr, "");
      preferMethod("totp");
      showCode(true);
    });
    $("use-webauthn").addEventListener("click", function () {
      say(err, "");
      preferMethod("webauthn");
      showKey(true);
    });

    function leave() {
      window.location.assign(withTarget("/"));
      return NAVIGATING;
    }
    signOutButton($("sign-out"), err, leave);
    signOutButton($("webauthn-sign-out"), keyErr, leave);

    let state;
    try {
      state = await stateWithTarget("Two-factor sign-in");
    } catch (e) {
      showCode(false);
      say(err, e.message);
      return;
    }
    showTargetHost("target", "target-host", state);
    showTargetHost("webauthn-target", "webauthn-target-host", state);
    const level = Number(state.authentication_level) || 0;
    if (level < 1) {
      window.location.replace(withTarget("/"));
      return;
    }
    ["code-username", "webauthn-username"].forEach(function (id) {
      $(id).textContent = state.username || "";
    });
    $("code-user-line").hidden = !state.username;
    $("webauthn-user-line").hidden = !state.username;

    let info = null;
    try {
      info = await api("GET", "/api/user/info", undefined, "Account information");
    } catch (e) {
      info = null; // keep the code form: the server decides
    }
    const hasKey = Boolean(info && info.has_webauthn === true);
    const hasTotp = !info || info.has_totp !== false;
    $("use-webauthn-line").hidden = !hasKey;
    $("use-totp-line").hidden = !(hasKey && hasTotp);
    if (hasKey && (!hasTotp || info.method === "webauthn")) {
      showKey(true);
      if (!webauthnSupported()) say(keyErr, "This browser does not support passkeys or security keys.");
    } else {
      if (!hasTotp) showNoTotp();
      showCode(hasTotp);
    }
    if (level >= 2) {
      const again = "You already verified with a second factor in this session.";
      say($("view-webauthn").hidden ? status : keyStatus, again);
    }
  }

  /* ------------------------------------------------------ page: settings */

  async function pageSettings() {
    const settingsUrl = window.location.origin + "/settings";
    const pageErr = $("settings-error");
    let hasTotp = null;

    /* ---- sign-in state ---- */

    function showSignedOut(message, isError) {
      const link = $("signed-out-sign-in");
      link.href = "/?" + new URLSearchParams({ rd: settingsUrl }).toString();
      if (isError) say($("signed-out-error"), message);
      else if (message) $("signed-out-text").textContent = message;
      showView("view-signed-out");
      $("signed-out-title").focus();
    }

    /* ---- identity check (session elevation) ---- */

    const elev = $("elevation");
    const elevErr = $("elevation-error");
    const elevStatus = $("elevation-status");
    const elevForm = $("elevation-form");
    const otc = $("otc");
    let retryAfterElevation = null;

    function closeElevation() {
      elev.hidden = true;
      retryAfterElevation = null;
      otc.value = "";
      say(elevErr, "");
      say(elevStatus, "");
    }

    /** Put the identity check right below what the user clicked (outside any form, so its own
     * form is not nested), not at the top of the page. */
    function placeElevation(button) {
      let anchor = (button && (button.closest(".actions") || button)) || null;
      const form = anchor && anchor.closest("form");
      if (form) anchor = form;
      if (anchor && anchor.parentNode) anchor.after(elev);
    }

    function openElevation(retry, button) {
      placeElevation(button);
      retryAfterElevation = retry;
      $("elevation-send-row").hidden = false;
      elevForm.hidden = true;
      otc.value = "";
      say(elevErr, "");
      say(elevStatus, "");
      elev.hidden = false;
      $("elevation-title").focus();
    }

    async function sendCode() {
      await api("POST", "/api/user/session/elevation", {}, "Identity check by email");
      $("elevation-send-row").hidden = true;
      elevForm.hidden = false;
      // the server queues the mail and answers at once (a slow relay must not hold the page)
      say(
        elevStatus,
        "A verification code is on its way to your email address; it should arrive within a " +
          "minute and is valid for a few minutes.",
      );
      otc.focus();
    }

    $("elevation-send").addEventListener("click", function () {
      run($("elevation-send"), elevErr, sendCode);
    });
    $("elevation-resend").addEventListener("click", function () {
      run($("elevation-resend"), elevErr, sendCode, [$("elevation-verify")]);
    });
    $("elevation-cancel").addEventListener("click", closeElevation);
    clearInvalidOnInput([otc]);
    elevForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const value = otc.value.replace(/\s+/g, "").toUpperCase();
      if (!value) return fieldError(elevErr, otc, "Enter the code from the email.");
      run(
        $("elevation-verify"),
        elevErr,
        async function () {
          try {
            await api("PUT", "/api/user/session/elevation", { otc: value }, "Identity check by email");
          } catch (e) {
            markInvalid(otc, true);
            otc.focus();
            throw e;
          }
          const retry = retryAfterElevation;
          closeElevation();
          if (retry) retry();
        },
        [$("elevation-resend")],
      );
      return undefined;
    });

    /**
     * Run a sensitive action; when the server asks for an identity check first (403 with
     * data.elevation, as Authelia answers), open the check and retry the action after it.
     */
    function guarded(button, errEl, action) {
      return run(button, errEl, async function () {
        try {
          return await action();
        } catch (e) {
          if (e instanceof ApiError && e.status === 403 && e.data && e.data.elevation) {
            openElevation(function () {
              guarded(button, errEl, action);
            }, button);
            return undefined;
          }
          if (e instanceof ApiError && e.status === 403 && e.data && e.data.second_factor) {
            $("need-2fa-link").href = "/2fa?" + new URLSearchParams({ rd: settingsUrl }).toString();
            $("need-2fa").hidden = false;
            throw new ApiError("This change needs your one-time code first.", 403);
          }
          if (e instanceof ApiError && e.data && e.data.first_factor) {
            showSignedOut("Your session has ended. Sign in again to continue.", true);
            return undefined;
          }
          throw e;
        }
      });
    }

    /* ---- authenticator app (TOTP) ---- */

    const totpErr = $("totp-error");
    const totpStatus = $("totp-status");
    const enrol = $("totp-enrol");
    const enrolErr = $("totp-enrol-error");
    const qr = $("totp-qr");
    const totpCode = $("totp-code");
    let secret = "";

    function renderTotp() {
      const badge = $("totp-badge");
      badge.classList.toggle("badge-on", hasTotp === true);
      badge.classList.toggle("badge-off", hasTotp !== true);
      badge.textContent = hasTotp === true ? "On" : hasTotp === false ? "Off" : "Unknown";
      $("totp-start").textContent = hasTotp ? "Set up a new app" : "Set up authenticator app";
      $("totp-remove").hidden = hasTotp !== true;
      $("totp-text").textContent = hasTotp
        ? "Sites that need two-factor sign-in ask for a code from your authenticator app."
        : "Add an authenticator app to sign in to sites that need two-factor sign-in.";
      renderMethodChoice();
    }

    function closeEnrol() {
      enrol.hidden = true;
      secret = "";
      $("totp-secret").textContent = "";
      qr.hidden = true;
      qr.removeAttribute("src");
      totpCode.value = "";
      say(enrolErr, "");
      $("totp-actions").hidden = false;
    }

    qr.addEventListener("load", function () {
      qr.hidden = false;
    });
    qr.addEventListener("error", function () {
      qr.hidden = true;
      say(enrolErr, "The QR code could not be loaded: enter the setup key in your app by hand.");
    });

    $("totp-start").addEventListener("click", function () {
      say(totpStatus, "");
      $("totp-remove-confirm").hidden = true;
      guarded($("totp-start"), totpErr, async function () {
        const data = await api("PUT", "/api/secondfactor/totp/register", {}, "Authenticator app setup");
        secret = String(data.base32_secret || "");
        $("totp-secret").textContent = (secret.match(/.{1,4}/g) || []).join(" ");
        const open = $("totp-open");
        const url = typeof data.otpauth_url === "string" ? data.otpauth_url : "";
        const touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
        open.hidden = !(touch && url.indexOf("otpauth://") === 0);
        if (!open.hidden) open.href = url;
        qr.hidden = true;
        qr.src = "/api/secondfactor/totp/register/qr.svg?v=" + Date.now();
        totpCode.value = "";
        say(enrolErr, "");
        $("totp-actions").hidden = true;
        enrol.hidden = false;
        totpCode.focus();
      });
    });

    $("totp-copy").addEventListener("click", function () {
      const button = $("totp-copy");
      function done(text) {
        button.textContent = text;
        setTimeout(function () {
          button.textContent = "Copy key";
        }, 2000);
      }
      if (!secret) return;
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(secret).then(
          function () {
            done("Copied");
          },
          function () {
            done("Select the key to copy it");
          },
        );
      } else {
        done("Select the key to copy it");
      }
    });

    $("totp-cancel").addEventListener("click", function () {
      closeEnrol();
      $("totp-start").focus();
    });

    codeField(totpCode, null);
    clearInvalidOnInput([totpCode]);
    $("totp-confirm-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      const token = cleanCode(totpCode.value);
      if (!TOTP_PATTERN.test(token)) return fieldError(enrolErr, totpCode, TOTP_HINT);
      guarded($("totp-confirm"), enrolErr, async function () {
        try {
          await api("POST", "/api/secondfactor/totp/register", { token: token }, "Authenticator app setup");
        } catch (e) {
          totpCode.value = "";
          markInvalid(totpCode, true);
          totpCode.focus();
          throw e;
        }
        closeEnrol();
        hasTotp = true;
        renderTotp();
        say(totpStatus, "Your authenticator app is set up.");
        $("totp-start").focus();
      });
      return undefined;
    });

    $("totp-remove").addEventListener("click", function () {
      say(totpStatus, "");
      $("totp-remove-confirm").hidden = false;
      $("totp-remove-no").focus();
    });
    $("totp-remove-no").addEventListener("click", function () {
      $("totp-remove-confirm").hidden = true;
      $("totp-remove").focus();
    });
    $("totp-remove-yes").addEventListener("click", function () {
      guarded($("totp-remove-yes"), totpErr, async function () {
        await api("DELETE", "/api/secondfactor/totp", {}, "Removing the authenticator app");
        $("totp-remove-confirm").hidden = true;
        hasTotp = false;
        renderTotp();
        say(totpStatus, "Your authenticator app was removed.");
        $("totp-start").focus();
      });
    });

    /* ---- passkeys and security keys (SPEC §7.1) ---- */

    const keyErr = $("webauthn-error");
    const keyStatus = $("webauthn-status");
    const keyList = $("webauthn-list");
    const addForm = $("webauthn-add-form");
    const addName = $("webauthn-description");
    const keyPath = "/api/secondfactor/webauthn/credential/";
    let credentials = [];
    let preferred = "";

    /** A date from the API (RFC 3339, or seconds since 1970) for people, "" when unknown. */
    function formatDate(value) {
      if (value === null || value === undefined || value === "") return "";
      const date = new Date(typeof value === "number" ? value * 1000 : String(value));
      if (Number.isNaN(date.getTime())) return "";
      try {
        return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      } catch (e) {
        return date.toLocaleString();
      }
    }

    function element(tag, className, text) {
      const el = document.createElement(tag);
      if (className) el.className = className;
      if (text !== undefined) el.textContent = text;
      return el;
    }

    function button(text, className, label) {
      const b = element("button", "btn " + className, text);
      b.type = "button";
      if (label) b.setAttribute("aria-label", label);
      return b;
    }

    function renderMethodChoice() {
      const both = hasTotp === true && credentials.length > 0;
      $("method-choice").hidden = !both;
      $("method-webauthn").checked = preferred === "webauthn";
      $("method-totp").checked = preferred !== "webauthn";
    }

    function renderKeys() {
      const badge = $("webauthn-badge");
      const count = credentials.length;
      badge.classList.toggle("badge-on", count > 0);
      badge.classList.toggle("badge-off", count === 0);
      badge.textContent = count === 0 ? "Off" : count === 1 ? "1 added" : count + " added";
      $("webauthn-empty").hidden = count > 0;
      $("webauthn-add").textContent = count > 0 ? "Add another passkey" : "Add a passkey";
      // the identity check may sit below an item's form: keep it in the page when the list goes
      if (keyList.contains(elev)) keyList.after(elev);
      keyList.textContent = "";
      credentials.forEach(function (cred) {
        keyList.appendChild(keyItem(cred));
      });
      renderMethodChoice();
    }

    /** One passkey: its name, when it was added and last used, Rename and Remove (each opening
     * inline, below the item, with the focus in it). */
    function keyItem(cred) {
      const id = String(cred.id);
      const name = String(cred.description || "Unnamed passkey");
      const item = element("li", "credential");
      item.setAttribute("data-credential-id", id);
      const main = element("div", "credential-main");
      main.appendChild(element("p", "credential-name", name));
      const added = formatDate(cred.created_at);
      const used = formatDate(cred.last_used_at);
      const meta = [];
      if (added) meta.push("Added " + added);
      meta.push(used ? "Last used " + used : "Never used");
      main.appendChild(element("p", "credential-meta small muted", meta.join(" · ")));
      item.appendChild(main);

      const actions = element("div", "actions credential-actions");
      const renameButton = button("Rename", "btn-secondary btn-small", "Rename " + name);
      const removeButton = button("Remove", "btn-secondary btn-small", "Remove " + name);
      renameButton.setAttribute("data-action", "rename");
      removeButton.setAttribute("data-action", "remove");
      actions.appendChild(renameButton);
      actions.appendChild(removeButton);
      item.appendChild(actions);

      // rename: a small form of its own
      const renameForm = element("form", "panel credential-rename");
      renameForm.method = "post";
      renameForm.noValidate = true;
      renameForm.hidden = true;
      const field = element("div", "field");
      const inputId = "webauthn-rename-" + Array.from(keyList.children).length;
      const label = element("label", "", "New name for " + name);
      label.htmlFor = inputId;
      const input = element("input");
      input.type = "text";
      input.id = inputId;
      input.maxLength = 64;
      input.autocomplete = "off";
      input.spellcheck = false;
      input.required = true;
      field.appendChild(label);
      field.appendChild(input);
      renameForm.appendChild(field);
      const renameActions = element("div", "actions");
      const save = button("Save", "btn-primary");
      save.type = "submit";
      const cancel = button("Cancel", "btn-secondary");
      renameActions.appendChild(save);
      renameActions.appendChild(cancel);
      renameForm.appendChild(renameActions);
      item.appendChild(renameForm);

      // remove: an inline confirmation
      const confirm = element("div", "panel credential-remove");
      confirm.hidden = true;
      const question = element("p");
      question.appendChild(element("strong", "", "Remove “" + name + "”?"));
      question.appendChild(
        document.createTextNode(" You will not be able to sign in with it any more."),
      );
      confirm.appendChild(question);
      const confirmActions = element("div", "actions");
      const yes = button("Remove", "btn-danger", "Remove " + name + " now");
      const no = button("Keep it", "btn-secondary");
      confirmActions.appendChild(yes);
      confirmActions.appendChild(no);
      confirm.appendChild(confirmActions);
      item.appendChild(confirm);

      renameButton.addEventListener("click", function () {
        say(keyStatus, "");
        confirm.hidden = true;
        input.value = name;
        markInvalid(input, false);
        renameForm.hidden = false;
        input.focus();
        input.select();
      });
      cancel.addEventListener("click", function () {
        renameForm.hidden = true;
        renameButton.focus();
      });
      clearInvalidOnInput([input]);
      renameForm.addEventListener("submit", function (ev) {
        ev.preventDefault();
        const description = input.value.trim();
        if (!description) return fieldError(keyErr, input, "Enter a name for the passkey.");
        if (description === name) {
          renameForm.hidden = true;
          renameButton.focus();
          return undefined;
        }
        guarded(save, keyErr, async function () {
          try {
            await api("PUT", keyPath + encodeURIComponent(id), { description: description }, "Renaming a passkey");
          } catch (e) {
            if (e.status === 400 || e.status === 409) {
              markInvalid(input, true);
              input.focus();
            }
            throw e;
          }
          await loadKeys();
          say(keyStatus, "“" + name + "” is now called “" + description + "”.");
          focusItem(id, "rename");
        });
        return undefined;
      });

      removeButton.addEventListener("click", function () {
        say(keyStatus, "");
        renameForm.hidden = true;
        confirm.hidden = false;
        no.focus();
      });
      no.addEventListener("click", function () {
        confirm.hidden = true;
        removeButton.focus();
      });
      yes.addEventListener("click", function () {
        guarded(yes, keyErr, async function () {
          await api("DELETE", keyPath + encodeURIComponent(id), {}, "Removing a passkey");
          await loadKeys();
          say(keyStatus, "“" + name + "” was removed.");
          $("webauthn-add").focus();
        });
      });
      return item;
    }

    /** Put the focus back on a button of the item with this id after the list was redrawn. */
    function focusItem(id, action) {
      const item = Array.from(keyList.children).find(function (li) {
        return li.getAttribute("data-credential-id") === id;
      });
      const target = item ? item.querySelector("[data-action='" + action + "']") : null;
      (target || $("webauthn-add")).focus();
    }

    async function loadKeys() {
      const data = await api("GET", "/api/secondfactor/webauthn/credentials", undefined, "Passkeys");
      credentials = Array.isArray(data) ? data : [];
      renderKeys();
    }

    function closeAdd() {
      addForm.hidden = true;
      addName.value = "";
      markInvalid(addName, false);
      $("webauthn-actions").hidden = false;
    }

    $("webauthn-add").addEventListener("click", function () {
      say(keyStatus, "");
      say(keyErr, "");
      $("webauthn-actions").hidden = true;
      addForm.hidden = false;
      addName.focus();
    });
    $("webauthn-add-cancel").addEventListener("click", function () {
      closeAdd();
      $("webauthn-add").focus();
    });
    clearInvalidOnInput([addName]);
    addForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(keyStatus, "");
      const description = addName.value.trim();
      if (!description) return fieldError(keyErr, addName, "Enter a name for the passkey.");
      guarded($("webauthn-register"), keyErr, async function () {
        let data;
        try {
          data = await api(
            "PUT",
            "/api/secondfactor/webauthn/credential/register",
            { description: description },
            "Adding a passkey",
          );
        } catch (e) {
          if (e.status === 400 || e.status === 409) {
            markInvalid(addName, true);
            addName.focus();
          }
          throw e;
        }
        const options = creationOptions(data);
        let credential;
        try {
          credential = await ceremony(
            function () {
              return navigator.credentials.create({ publicKey: options });
            },
            true,
            options.timeout,
          );
        } catch (e) {
          // end the server's half of the ceremony too (best effort)
          api("DELETE", "/api/secondfactor/webauthn/credential/register", {}).catch(function () {});
          throw e;
        }
        await api(
          "POST",
          "/api/secondfactor/webauthn/credential/register",
          credentialJSON(credential),
          "Adding a passkey",
        );
        closeAdd();
        await loadKeys();
        say(keyStatus, "Your passkey “" + description + "” was added.");
        $("webauthn-add").focus();
      });
      return undefined;
    });

    ["method-webauthn", "method-totp"].forEach(function (id) {
      $(id).addEventListener("change", function () {
        const method = $(id).value;
        api("POST", "/api/user/info/2fa_method", { method: method }, "Choosing the second factor").then(
          function () {
            preferred = method;
            say(keyStatus, method === "webauthn" ? "Sites will ask for your passkey first." : "Sites will ask for a one-time code first.");
          },
          function (e) {
            renderMethodChoice();
            say(keyErr, e.message);
          },
        );
      });
    });

    /* ---- where you are signed in (SPEC §7.6) ---- */

    const sessErr = $("sessions-error");
    const sessStatus = $("sessions-status");
    const sessList = $("sessions-list");
    const sessionPath = "/api/user/sessions/";
    let sessions = [];

    /** Append "label <time>" to `el`: the API's RFC 3339 value in the machine-readable
     * attribute, the browser's locale in the text; false when the value is unusable. */
    function appendTime(el, label, value) {
      const text = formatDate(value);
      if (!text) return false;
      el.appendChild(document.createTextNode(label));
      const time = element("time", "", text);
      time.dateTime = String(value);
      el.appendChild(time);
      return true;
    }

    /** Parts joined by " · ", each a plain string or a [label, RFC 3339 value] time; a time
     * the browser cannot read is left out. */
    function metaLine(className, parts) {
      const line = element("p", "credential-meta small muted " + className);
      parts.forEach(function (part) {
        const piece = document.createDocumentFragment();
        if (typeof part === "string") piece.appendChild(document.createTextNode(part));
        else appendTime(piece, part[0], part[1]);
        if (!piece.childNodes.length) return;
        if (line.childNodes.length) line.appendChild(document.createTextNode(" · "));
        line.appendChild(piece);
      });
      return line;
    }

    const BROWSERS = [
      [/\bEdg(?:e|A|iOS)?\//, "Edge"],
      [/\b(?:OPR|Opera)\//, "Opera"],
      [/\bSamsungBrowser\//, "Samsung Internet"],
      [/\b(?:Firefox|FxiOS)\//, "Firefox"],
      [/(?:Chrome|Chromium|CriOS)\//, "Chrome"],
      [/\bVersion\/[\d.]+ .*\bSafari\//, "Safari"],
      [/^curl\//, "curl"],
      [/^Wget\//, "Wget"],
      [/^python-(?:requests|httpx|urllib)/i, "a Python script"],
    ];
    const SYSTEMS = [
      [/\b(?:iPhone|iPod)\b/, "iPhone"],
      [/\biPad\b/, "iPad"],
      [/\bAndroid\b/, "Android"],
      [/\bCrOS\b/, "ChromeOS"],
      [/\bWindows\b/, "Windows"],
      [/\bMac OS X\b|\bMacintosh\b/, "macOS"],
      [/\bLinux\b/, "Linux"],
    ];

    /** "Firefox on Windows" from a User-Agent, for people; the text itself is shown too, as
     * text (it is whatever the client sent). */
    function agentSummary(agent) {
      const text = typeof agent === "string" ? agent : "";
      const browser = BROWSERS.find(function (b) {
        return b[0].test(text);
      });
      const system = SYSTEMS.find(function (s) {
        return s[0].test(text);
      });
      if (browser && system) return browser[1] + " on " + system[1];
      if (browser) return browser[1];
      if (system) return "A browser on " + system[1];
      return "Unknown browser";
    }

    /** One session: browser, when it signed in and was last seen, its address, "This
     * device", and "Sign out". */
    function sessionItem(sess) {
      const handle = String(sess.handle || "");
      const summary = agentSummary(sess.user_agent);
      const current = sess.current === true;
      const item = element("li", "credential session");
      item.setAttribute("data-session-handle", handle);
      if (current) item.setAttribute("data-current", "true");
      const main = element("div", "credential-main");
      const name = element("p", "credential-name", summary);
      if (current) {
        name.appendChild(document.createTextNode(" "));
        name.appendChild(element("span", "badge badge-on", "This device"));
      }
      main.appendChild(name);
      main.appendChild(
        metaLine("session-times", [
          ["Signed in ", sess.created_at],
          ["Last seen ", sess.last_seen_at],
        ]),
      );
      const ip = typeof sess.ip === "string" && sess.ip ? sess.ip : "";
      const level = Number(sess.authentication_level) >= 2 ? "two factors" : "one factor";
      main.appendChild(
        metaLine("session-ip", [ip ? "IP address " + ip : "IP address unknown", "Signed in with " + level]),
      );
      if (typeof sess.user_agent === "string" && sess.user_agent) {
        main.appendChild(element("p", "credential-meta small muted session-agent", sess.user_agent));
      }
      item.appendChild(main);

      const actions = element("div", "actions credential-actions");
      const seen = formatDate(sess.last_seen_at);
      const label = current
        ? "Sign out this device"
        : "Sign out " + summary + (seen ? ", last seen " + seen : "") + (ip ? ", " + ip : "");
      const out = button("Sign out", "btn-secondary btn-small", label);
      out.setAttribute("data-action", "revoke");
      actions.appendChild(out);
      item.appendChild(actions);

      out.addEventListener("click", function () {
        say(sessStatus, "");
        guarded(out, sessErr, async function () {
          try {
            await api("DELETE", sessionPath + encodeURIComponent(handle), {}, "Signing out a session");
          } catch (e) {
            if (e.status !== 404) throw e;
            await loadSessions();
            say(sessStatus, "That session had already ended.");
            focusSessions();
            return undefined;
          }
          if (current) {
            // the server ended this session and expired its cookie, as a sign-out does
            window.location.assign("/");
            return NAVIGATING;
          }
          await loadSessions();
          say(sessStatus, "Signed out " + summary + (ip ? " (" + ip + ")" : "") + ".");
          focusSessions();
          return undefined;
        });
      });
      return item;
    }

    /** After the list changed: the focus goes to "Sign out everywhere else", or the first row. */
    function focusSessions() {
      const first = sessList.querySelector("[data-action='revoke']");
      if (!$("sessions-actions").hidden) $("sessions-revoke-others").focus();
      else if (first) first.focus();
    }

    function renderSessions() {
      $("sessions-loading").hidden = true;
      if (sessList.contains(elev)) sessList.after(elev);
      sessList.textContent = "";
      // this device first, then the API's order (latest activity first)
      const ordered = sessions
        .filter(function (s) {
          return s && s.current === true;
        })
        .concat(
          sessions.filter(function (s) {
            return s && s.current !== true;
          }),
        );
      ordered.forEach(function (sess) {
        sessList.appendChild(sessionItem(sess));
      });
      $("sessions-actions").hidden = ordered.length < 2;
    }

    async function loadSessions() {
      const data = await api("GET", "/api/user/sessions", undefined, "The list of your sessions");
      sessions = Array.isArray(data) ? data : [];
      renderSessions();
    }

    $("sessions-revoke-others").addEventListener("click", function () {
      say(sessStatus, "");
      guarded($("sessions-revoke-others"), sessErr, async function () {
        const data = await api("DELETE", "/api/user/sessions", {}, "Signing out other sessions");
        const count = Number(data.revoked) || 0;
        await loadSessions();
        say(
          sessStatus,
          count === 1
            ? "Signed out 1 other session. Only this device is signed in now."
            : "Signed out " + count + " other sessions. Only this device is signed in now.",
        );
        focusSessions();
      });
    });

    /* ---- personal access tokens (SPEC §7.6) ---- */

    const tokErr = $("tokens-error");
    const tokStatus = $("tokens-status");
    const tokList = $("tokens-list");
    const tokForm = $("token-form");
    const tokName = $("token-name");
    const tokDomains = $("token-domains");
    const tokenPath = "/api/user/tokens/";
    let tokens = [];
    let tokenValue = "";

    /** Forget the shown token: it is in this page's memory and DOM only until then. */
    function hideToken() {
      tokenValue = "";
      $("token-value").textContent = "";
      $("token-created").hidden = true;
    }

    function tokenItem(tok) {
      const id = String(tok.id || "");
      const name = String(tok.name || "Unnamed token");
      const item = element("li", "credential token");
      item.setAttribute("data-token-id", id);
      const main = element("div", "credential-main");
      const title = element("p", "credential-name", name);
      if (tok.expired === true) {
        title.appendChild(document.createTextNode(" "));
        title.appendChild(element("span", "badge badge-off", "Expired"));
      }
      main.appendChild(title);
      const used = tok.last_used_at ? ["Last used ", tok.last_used_at] : "Never used";
      main.appendChild(metaLine("token-times", [["Created ", tok.created_at], used]));
      let expiry = "Never expires";
      if (tok.expires_at && formatDate(tok.expires_at)) {
        expiry = [tok.expired === true ? "Expired " : "Expires ", tok.expires_at];
      }
      const domains = Array.isArray(tok.domains) ? tok.domains.map(String) : [];
      const where = domains.length ? "Only for " + domains.join(", ") : "For every site";
      const factor = tok.two_factor === true ? "Counts as two factors" : "";
      main.appendChild(metaLine("token-scope", factor ? [expiry, where, factor] : [expiry, where]));
      item.appendChild(main);

      const actions = element("div", "actions credential-actions");
      const revoke = button("Revoke", "btn-secondary btn-small", "Revoke " + name);
      revoke.setAttribute("data-action", "revoke");
      actions.appendChild(revoke);
      item.appendChild(actions);

      const confirm = element("div", "panel token-revoke");
      confirm.hidden = true;
      const question = element("p");
      question.appendChild(element("strong", "", "Revoke “" + name + "”?"));
      question.appendChild(
        document.createTextNode(" Scripts and machines that use it will be refused at once."),
      );
      confirm.appendChild(question);
      const confirmActions = element("div", "actions");
      const yes = button("Revoke", "btn-danger", "Revoke " + name + " now");
      const no = button("Keep it", "btn-secondary");
      confirmActions.appendChild(yes);
      confirmActions.appendChild(no);
      confirm.appendChild(confirmActions);
      item.appendChild(confirm);

      revoke.addEventListener("click", function () {
        say(tokStatus, "");
        confirm.hidden = false;
        no.focus();
      });
      no.addEventListener("click", function () {
        confirm.hidden = true;
        revoke.focus();
      });
      yes.addEventListener("click", function () {
        guarded(yes, tokErr, async function () {
          let message = "“" + name + "” was revoked.";
          try {
            await api("DELETE", tokenPath + encodeURIComponent(id), {}, "Revoking a token");
          } catch (e) {
            if (e.status !== 404) throw e;
            message = "“" + name + "” was already revoked.";
          }
          await loadTokens();
          say(tokStatus, message);
          // "Create a token" waits while a new token is shown (until "I have copied it")
          ($("tokens-actions").hidden ? $("token-copy") : $("token-create")).focus();
        });
      });
      return item;
    }

    function renderTokens() {
      // the identity check may sit below an item: keep it in the page when the list goes
      if (tokList.contains(elev)) tokList.after(elev);
      tokList.textContent = "";
      tokens.forEach(function (tok) {
        tokList.appendChild(tokenItem(tok));
      });
      $("tokens-empty").hidden = tokens.length > 0;
    }

    async function loadTokens() {
      const data = await api("GET", "/api/user/tokens", undefined, "Personal access tokens");
      tokens = Array.isArray(data) ? data : [];
      renderTokens();
    }

    function closeTokenForm() {
      tokForm.hidden = true;
      tokName.value = "";
      tokDomains.value = "";
      $("token-expires").value = "30d";
      markInvalid(tokName, false);
      markInvalid(tokDomains, false);
      $("tokens-actions").hidden = false;
    }

    $("token-create").addEventListener("click", function () {
      say(tokStatus, "");
      say(tokErr, "");
      hideToken();
      $("tokens-actions").hidden = true;
      tokForm.hidden = false;
      tokName.focus();
    });
    $("token-cancel").addEventListener("click", function () {
      closeTokenForm();
      $("token-create").focus();
    });
    clearInvalidOnInput([tokName, tokDomains]);
    tokForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(tokStatus, "");
      const name = tokName.value.trim();
      if (!name) return fieldError(tokErr, tokName, "Enter a name for the token.");
      const body = { name: name };
      const expires = $("token-expires").value;
      if (expires) body.expires = expires;
      const domains = tokDomains.value.split(/[\s,]+/).filter(Boolean);
      if (domains.length) body.domains = domains;
      guarded($("token-submit"), tokErr, async function () {
        let data;
        try {
          data = await api("POST", "/api/user/tokens", body, "Personal access tokens");
        } catch (e) {
          if (e.status === 400 || e.status === 409) {
            const field = /domain|host/i.test(e.message) ? tokDomains : tokName;
            markInvalid(field, true);
            field.focus();
          }
          throw e;
        }
        const token = typeof data.token === "string" ? data.token : "";
        if (!token) throw new ApiError("The server sent an unexpected answer. Try again.", 0);
        closeTokenForm();
        $("tokens-actions").hidden = true;
        tokenValue = token;
        $("token-value").textContent = token;
        $("token-created-title").textContent = "Your new token “" + name + "”";
        $("token-copy").textContent = "Copy token";
        $("token-created").hidden = false;
        try {
          await loadTokens();
        } catch (e) {
          /* the token exists; the list catches up at the next load */
        }
        say(tokStatus, "Token “" + name + "” created. Copy it now: you will not see it again.");
        $("token-copy").focus();
      });
      return undefined;
    });

    $("token-copy").addEventListener("click", function () {
      const copy = $("token-copy");
      function selectIt(text) {
        const selection = window.getSelection ? window.getSelection() : null;
        if (selection) selection.selectAllChildren($("token-value"));
        copy.textContent = text;
      }
      if (!tokenValue) return;
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(tokenValue).then(
          function () {
            copy.textContent = "Copied";
            say(tokStatus, "The token is copied to your clipboard.");
          },
          function () {
            selectIt("Press Ctrl+C to copy");
          },
        );
      } else {
        selectIt("Press Ctrl+C to copy");
      }
    });
    $("token-done").addEventListener("click", function () {
      hideToken();
      $("tokens-actions").hidden = false;
      say(tokStatus, "");
      $("token-create").focus();
    });

    /* ---- change password ---- */

    const pwErr = $("password-error");
    const pwStatus = $("password-status");
    const oldPw = $("old-password");
    const newPw = $("new-password");
    const confirmPw = $("confirm-password");
    clearInvalidOnInput([oldPw, newPw, confirmPw]);
    $("password-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      say(pwStatus, "");
      const oldValue = oldPw.value;
      const newValue = newPw.value;
      if (!oldValue) return fieldError(pwErr, oldPw, "Enter your current password.");
      if (!newValue) return fieldError(pwErr, newPw, "Enter a new password.");
      if (newValue !== confirmPw.value) {
        return fieldError(pwErr, confirmPw, "The two new passwords are not the same.");
      }
      if (newValue === oldValue) {
        return fieldError(pwErr, newPw, "The new password must differ from the current one.");
      }
      guarded($("change-password"), pwErr, async function () {
        try {
          await api(
            "POST",
            "/api/change-password",
            { old_password: oldValue, new_password: newValue },
            "Changing the password",
          );
        } catch (e) {
          if (e.status === 401) {
            oldPw.value = "";
            markInvalid(oldPw, true);
            oldPw.focus();
          }
          throw e;
        }
        oldPw.value = "";
        newPw.value = "";
        confirmPw.value = "";
        say(pwStatus, "Your password has been changed.");
        try {
          const after = await api("GET", "/api/state");
          if (!Number(after.authentication_level)) {
            showSignedOut("Your password has been changed. Sign in again with the new one.", false);
          }
        } catch (e) {
          /* the change itself succeeded */
        }
      });
      return undefined;
    });

    signOutButton($("sign-out"), pageErr, function () {
      window.location.assign("/");
      return NAVIGATING;
    });

    /* ---- load ---- */

    let state;
    try {
      state = await api("GET", "/api/state", undefined, "Account settings");
    } catch (e) {
      showSignedOut(e.message, true);
      return;
    }
    if (!Number(state.authentication_level)) {
      showSignedOut("", false);
      return;
    }
    const username = state.username || "";
    $("settings-username").textContent = username;
    $("password-username").value = username;
    setIdentity(username, "avatar", "display-name");
    renderTotp();
    showView("view-settings");
    $("settings-title").focus();
    // the lists load beside the rest; each section shows its own failure
    const lists = [
      loadSessions().catch(function (e) {
        $("sessions-loading").hidden = true;
        say(sessErr, e.message);
      }),
      loadTokens().catch(function (e) {
        if (e.notAvailable) $("token-create").disabled = true;
        say(tokErr, e.message);
      }),
    ];
    try {
      const info = await api("GET", "/api/user/info", undefined, "Account information");
      if (info.display_name) setIdentity(String(info.display_name), "avatar", "display-name");
      const email = Array.isArray(info.emails) && info.emails.length ? String(info.emails[0]) : "";
      $("settings-email").textContent = email;
      $("settings-email-sep").hidden = !email;
      if (typeof info.has_totp === "boolean") hasTotp = info.has_totp;
      if (typeof info.method === "string") preferred = info.method;
      renderTotp();
    } catch (e) {
      say(pageErr, e.message);
    }
    let conf = null;
    try {
      conf = await api("GET", "/api/configuration");
      if (conf.password_change_disabled === true) {
        $("password-form").hidden = true;
        $("password-disabled").hidden = false;
      }
    } catch (e) {
      /* keep the form: the server decides */
    }
    const methods = conf && Array.isArray(conf.available_methods) ? conf.available_methods : [];
    if (methods.indexOf("webauthn") !== -1) {
      $("webauthn-section").hidden = false;
      if (!webauthnSupported()) {
        $("webauthn-add").disabled = true;
        say(keyErr, "This browser does not support passkeys or security keys: you can still remove them here.");
      }
      try {
        await loadKeys();
      } catch (e) {
        say(keyErr, e.message);
      }
    }
    await Promise.all(lists);
  }

  /* ------------------------------------------------ page: reset password */

  async function pageResetPassword() {
    const form = $("reset-form");
    const user = $("username");
    const submit = $("reset-start");
    const err = $("reset-error");
    const rd = query.get("rd") || "";
    submit.disabled = false;
    clearInvalidOnInput([user]);

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const username = user.value.trim();
      if (!username) return fieldError(err, user, "Enter your username.");
      run(submit, err, async function () {
        // the server puts rd in the mailed link only if its redirect check passes it
        const body = { username: username };
        if (rd) body.targetURL = rd;
        await api("POST", "/api/reset-password/identity/start", body, "Password reset");
        showView("view-sent");
        $("sent-title").focus();
        say($("sent-status"), "If the account exists, a link to reset its password is on its way to its email address.");
      });
      return undefined;
    });

    $("reset-again").addEventListener("click", function () {
      user.value = "";
      say($("sent-status"), "");
      showView("view-request");
      user.focus();
    });

    user.focus();
    await carryCheckedTarget(["back-to-sign-in"]);
  }

  /**
   * Point the sign-in links with these ids at `/?rd=…` when the server's redirect check passes
   * this page's `rd` (an unchecked one never reaches the page's links); the host, or "".
   */
  async function carryCheckedTarget(ids) {
    if (!query.get("rd")) return "";
    let state;
    try {
      state = await stateWithTarget("Password reset");
    } catch (e) {
      return "";
    }
    const host = state && typeof state.target_host === "string" ? state.target_host : "";
    if (host) {
      ids.forEach(function (id) {
        $(id).href = withTarget("/");
      });
    }
    return host;
  }

  async function pageResetPasswordStep2() {
    const form = $("step2-form");
    const newPw = $("new-password");
    const confirmPw = $("confirm-password");
    const submit = $("reset-password");
    const err = $("step2-error");
    const token = query.get("token") || "";
    let tokenAccepted = false;
    // where the reset started (`rd` of the mailed link): never followed from here; the sign-in
    // links carry it once the server's redirect check passed it, and the sign-in page passes it
    // back to the server, whose check decides again
    const checkedTarget = carryCheckedTarget(["done-sign-in", "back-to-sign-in"]);

    // The token is a secret: keep it in memory only, not in the address bar or the history.
    if (token && window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname);
    }
    if (!token) {
      form.hidden = true;
      $("request-new-link").hidden = false;
      say(err, "This link is incomplete. Open the link from the email again, or request a new one.");
      return;
    }
    submit.disabled = false;
    clearInvalidOnInput([newPw, confirmPw]);

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const password = newPw.value;
      if (!password) return fieldError(err, newPw, "Enter a new password.");
      if (password !== confirmPw.value) {
        return fieldError(err, confirmPw, "The two passwords are not the same.");
      }
      run(submit, err, async function () {
        if (!tokenAccepted) {
          try {
            await api("POST", "/api/reset-password/identity/finish", { token: token }, "Password reset");
          } catch (e) {
            if (!e.notAvailable && e.status >= 400 && e.status < 500 && e.status !== 429) {
              form.hidden = true;
              $("request-new-link").hidden = false;
              throw new ApiError("This link has expired or was already used. Request a new one.", e.status);
            }
            throw e;
          }
          tokenAccepted = true;
        }
        try {
          await api("POST", "/api/reset-password", { password: password }, "Password reset");
        } catch (e) {
          newPw.focus();
          throw e;
        }
        newPw.value = "";
        confirmPw.value = "";
        showView("view-done");
        $("done-title").focus();
        say($("done-status"), "Your password has been changed. You can now sign in with it.");
        const host = await checkedTarget;
        if (host) {
          $("done-target-host").textContent = host;
          $("done-target").hidden = false;
          $("done-sign-in").textContent = "Sign in and continue";
        }
      });
      return undefined;
    });

    newPw.focus();
  }

  /* ------------------------------------------------------------- start */

  const PAGES = {
    login: pageLogin,
    "2fa": page2fa,
    settings: pageSettings,
    "reset-password": pageResetPassword,
    "reset-password-step2": pageResetPasswordStep2,
  };

  // Coming back through the browser's back/forward cache: nothing is in flight any more.
  window.addEventListener("pageshow", function (ev) {
    if (!ev.persisted) return;
    document.querySelectorAll("button[aria-busy='true']").forEach(function (b) {
      b.removeAttribute("aria-busy");
      b.disabled = false;
    });
  });

  function start() {
    const page = PAGES[document.body.getAttribute("data-page")];
    if (!page) return;
    page().catch(function (err) {
      if (window.console) window.console.error(err);
      const alert = document.querySelector("main [role='alert']");
      say(alert, "Something went wrong in this page. Reload it and try again.");
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
