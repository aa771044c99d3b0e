// GMAI-VL console: "Sign in" at the hospital's identity provider (OpenID Connect),
// the authorization code flow with PKCE (RFC 7636) as a public client: no secret in
// the page. Shown only when the gateway names an IdP (GET config.json); API keys keep
// working beside it. The access token lives in this tab's sessionStorage, is renewed
// a minute before it expires (refresh token) or the page asks to sign in again, and
// "Sign out" forgets it. console.js asks `window.gmaivlAuth.bearer()` for it.
"use strict";

(() => {
  const TOKEN_STORAGE = "gmaivl.accessToken"; // {access_token, refresh_token, expires_at, who}
  const PENDING_STORAGE = "gmaivl.signinPending"; // {state, verifier} across the redirect
  const RENEW_BEFORE_S = 60;
  const $ = (id) => document.getElementById(id);
  let config = null; // {issuer, client_id, scope, authorization_endpoint, token_endpoint}
  let token = load();
  let renewTimer = null;

  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(TOKEN_STORAGE) || "null");
      return saved && saved.expires_at > now() ? saved : null;
    } catch (_) {
      return null;
    }
  }

  function now() {
    return Date.now() / 1000;
  }

  function b64url(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomString(size) {
    return b64url(crypto.getRandomValues(new Uint8Array(size)));
  }

  function redirectUri() {
    return location.origin + location.pathname.replace(/index\.html$/, "");
  }

  // Whom the token names, for display only (the gateway verifies it; the page does not).
  function subjectOf(accessToken) {
    try {
      const part = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part));
      return String(claims.preferred_username || claims.name || claims.sub || "");
    } catch (_) {
      return "";
    }
  }

  function changed() {
    render();
    document.dispatchEvent(new Event("gmaivl:auth"));
  }

  function message(text) {
    const el = $("notice");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function render() {
    const box = $("signin");
    if (!box) return;
    box.hidden = !config;
    $("signin-button").hidden = !!token;
    $("signout-button").hidden = !token;
    $("signin-who").textContent = token ? "Signed in as " + (token.who || "a user") : "";
  }

  function keep(body) {
    if (!body || typeof body.access_token !== "string") throw new Error("no access token");
    const lifetime = Number(body.expires_in) > 0 ? Number(body.expires_in) : 300;
    token = {
      access_token: body.access_token,
      refresh_token: typeof body.refresh_token === "string" ? body.refresh_token : (token && token.refresh_token) || null,
      expires_at: now() + lifetime,
      who: subjectOf(body.access_token),
    };
    sessionStorage.setItem(TOKEN_STORAGE, JSON.stringify(token));
    schedule();
  }

  function forget() {
    token = null;
    sessionStorage.removeItem(TOKEN_STORAGE);
    if (renewTimer !== null) clearTimeout(renewTimer);
    renewTimer = null;
  }

  async function tokenRequest(params) {
    const response = await fetch(config.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(params),
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) throw new Error("token endpoint answered HTTP " + response.status);
    return response.json();
  }

  // A minute before expiry: renew with the refresh token, else ask to sign in again;
  // at expiry the token is forgotten.
  function schedule() {
    if (renewTimer !== null) clearTimeout(renewTimer);
    if (!token) return;
    const left = token.expires_at - now();
    const renewIn = Math.max(0, left - Math.min(RENEW_BEFORE_S, left / 2));
    renewTimer = setTimeout(renew, renewIn * 1000);
  }

  async function renew() {
    renewTimer = null;
    if (!token) return;
    if (token.refresh_token) {
      try {
        keep(await tokenRequest({
          grant_type: "refresh_token",
          refresh_token: token.refresh_token,
          client_id: config.client_id,
        }));
        changed();
        return;
      } catch (_) { /* fall through: ask the user */ }
    }
    const left = token.expires_at - now();
    if (left > 1) {
      message("Your sign-in ends in " + Math.round(left) + " s: sign in again to keep working.");
      renewTimer = setTimeout(renew, left * 1000);
    } else {
      forget();
      message("Your sign-in has ended: sign in again.");
      changed();
    }
  }

  async function signIn() {
    const verifier = randomString(32);
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const state = randomString(16);
    sessionStorage.setItem(PENDING_STORAGE, JSON.stringify({ state, verifier }));
    const url = new URL(config.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: "code",
      client_id: config.client_id,
      redirect_uri: redirectUri(),
      scope: config.scope,
      state,
      code_challenge: challenge,
      code_challenge_method: "S256",
    }).toString();
    location.assign(url.toString());
  }

  // Back from the IdP with ?code=&state= (or ?error=): exchange the code, clean the URL.
  async function finish(params) {
    let pending = null;
    try {
      pending = JSON.parse(sessionStorage.getItem(PENDING_STORAGE) || "null");
    } catch (_) { /* treated as missing */ }
    sessionStorage.removeItem(PENDING_STORAGE);
    history.replaceState(null, "", location.pathname);
    if (params.has("error")) {
      message("Sign-in was not completed (" + params.get("error") + ").");
      return;
    }
    if (!pending || params.get("state") !== pending.state) {
      message("The sign-in answer does not belong to this page: sign in again.");
      return;
    }
    if (params.has("iss") && params.get("iss") !== config.issuer) {
      message("The sign-in answer came from another identity provider: sign in again.");
      return;
    }
    try {
      keep(await tokenRequest({
        grant_type: "authorization_code",
        code: params.get("code"),
        redirect_uri: redirectUri(),
        client_id: config.client_id,
        code_verifier: pending.verifier,
      }));
      message("");
    } catch (_) {
      message("The identity provider did not issue a token: sign in again.");
    }
  }

  async function start() {
    try {
      const response = await fetch("config.json", { cache: "no-store" });
      config = response.ok ? (await response.json()).sign_in : null;
      if (response.status === 503) {
        message("Sign-in is unavailable right now: the identity provider cannot be reached.");
      }
    } catch (_) {
      config = null;
    }
    if (!config) {
      forget();
      return;
    }
    const params = new URLSearchParams(location.search);
    if (params.has("code") || params.has("error")) await finish(params);
    schedule();
  }

  const ready = start();

  window.gmaivlAuth = {
    ready,
    // The access token while it is valid, else "" (console.js then sends the API key).
    bearer: () => (token && token.expires_at > now() ? token.access_token : ""),
    signedIn: () => !!token,
    offered: () => !!config, // the gateway names an IdP: "Sign in" is shown
  };

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-button").addEventListener("click", () => {
      signIn().catch(() => message("Sign-in could not start in this browser."));
    });
    $("signout-button").addEventListener("click", () => {
      forget();
      message("You are signed out; the token was forgotten.");
      changed();
    });
    ready.then(render);
  });
})();
