// GMAI-VL console: plain JavaScript, no build step, no external fetch. It speaks only
// the gateway's public API (same origin): /v1/models, /v1/chat/completions (SSE),
// /v1/images/render, /v1/ops/stats, /v1/dicom/* . The API key lives in sessionStorage;
// a user signed in at the IdP (signin.js) sends the access token instead.
"use strict";

(() => {
  const KEY_STORAGE = "gmaivl.apiKey";
  const $ = (id) => document.getElementById(id);
  const state = {
    image: null, // {kind: "file", mime, url, name, dicom} | {kind: "pacs", url, label, dicom: true}
    previewSeq: 0,
    controller: null,
    pacs: [],
    study: null,
    opsTimer: null,
    askingForKey: false, // the notice asks for a key (hidden once one is typed)
  };

  // --- API calls --------------------------------------------------------------------

  function apiKey() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  function signedIn() {
    return !!(window.gmaivlAuth && window.gmaivlAuth.bearer());
  }

  function headers(json) {
    const h = {};
    const key = (window.gmaivlAuth && window.gmaivlAuth.bearer()) || apiKey();
    if (key) h.Authorization = "Bearer " + key;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  class ApiError extends Error {
    constructor(status, message, code, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  // A readable sentence for an error answer: 401/403/429 get their own words.
  async function apiError(response) {
    let message = "", code = null;
    try {
      const body = await response.json();
      message = (body && body.error && body.error.message) || "";
      code = body && body.error ? body.error.code : null;
    } catch (_) { /* not JSON: keep the status */ }
    const retry = response.headers.get("Retry-After");
    const s = response.status;
    let text;
    if (s === 401 && signedIn()) {
      text = "Your sign-in was refused (" + (code || "invalid_token") + "). Sign in again.";
    } else if (s === 401 && !apiKey() && window.gmaivlAuth && window.gmaivlAuth.offered()) {
      text = "This gateway needs you to sign in or to enter an API key.";
    } else if (s === 401) {
      text = apiKey()
        ? "The API key was refused (" + (code || "invalid_api_key") + "). Enter a valid API key above."
        : "This gateway needs an API key. Enter your API key above.";
    } else if (s === 403) {
      text = "Not allowed for your key: " + message;
    } else if (s === 429) {
      text = "Too many requests: " + message + (retry ? " Retry in " + retry + " s." : "");
    } else if (s === 404 && !message) {
      text = "Not available on this gateway (404).";
    } else {
      text = (message || "The gateway answered HTTP " + s + ".") + " (HTTP " + s + ")";
    }
    return new ApiError(s, text, code, retry);
  }

  // `background`: the operations panel's timer, which must not apply a key half typed.
  async function call(method, path, body, signal, background = false) {
    if (!background && applyKey()) loadAll(); // a person's action: the typed key is used
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: "no-store",
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "The gateway could not be reached.", null, null);
    }
    if (!response.ok) throw await apiError(response);
    return response;
  }

  async function getJSON(path, background = false) {
    return (await call("GET", path, undefined, undefined, background)).json();
  }

  async function postJSON(path, body) {
    return (await call("POST", path, body)).json();
  }

  function show(el, text) {
    el.textContent = text || "";
    el.hidden = !text;
  }

  function notice(text, askingForKey = false) {
    show($("notice"), text);
    state.askingForKey = askingForKey && Boolean(text);
  }

  function authProblem(err) {
    if (err instanceof ApiError && err.status === 401) {
      notice(err.message, true);
      return true;
    }
    return false;
  }

  // --- API key ----------------------------------------------------------------------

  // The key in the field is the key used: it is applied on Enter (or "Use key"), when
  // the field is left, and before any call a person's action makes (Ask, an image, the
  // PACS); a newly applied key loads the models, the PACS list and the operations panel.
  function applyKey() {
    const value = $("api-key").value.trim();
    if (value === apiKey()) return false;
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
    return true;
  }

  function setupKey() {
    $("api-key").value = apiKey();
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      applyKey();
      notice("");
      loadAll();
    });
    $("api-key").addEventListener("change", () => {
      if (applyKey()) loadAll();
    });
    // A message asking for a key is stale once a key is being typed.
    $("api-key").addEventListener("input", () => {
      if (state.askingForKey) notice("");
    });
    $("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      $("api-key").value = "";
      notice("The key was forgotten.");
    });
  }

  // --- models -----------------------------------------------------------------------

  async function loadModels() {
    const select = $("model");
    try {
      const list = await getJSON("/v1/models");
      const current = select.value;
      select.replaceChildren(...list.data.map((m) => new Option(m.id, m.id)));
      if (current) select.value = current;
      if (!list.data.length) notice("No model is ready yet; the list fills when a worker is up.");
      return true;
    } catch (err) {
      if (!authProblem(err)) notice(err.message);
      return false;
    }
  }

  // --- choosing an image ------------------------------------------------------------

  const RASTER = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };

  // The media type from the bytes (a file's own type is often empty for .dcm).
  function sniff(bytes, name) {
    const b = bytes;
    if (b.length > 132 && b[128] === 0x44 && b[129] === 0x49 && b[130] === 0x43 && b[131] === 0x4d) {
      return "application/dicom";
    }
    if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
    if (b[0] === 0xff && b[1] === 0xd8) return "image/jpeg";
    if (b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57) return "image/webp";
    const ext = (name.split(".").pop() || "").toLowerCase();
    if (ext === "dcm" || ext === "dicom") return "application/dicom";
    return RASTER[ext] || "image/png";
  }

  function toBase64(bytes) {
    let binary = "";
    const step = 0x8000;
    for (let i = 0; i < bytes.length; i += step) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
    }
    return btoa(binary);
  }

  async function useFile(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const mime = sniff(bytes, file.name);
    state.image = {
      kind: "file",
      mime,
      url: "data:" + mime + ";base64," + toBase64(bytes),
      label: file.name + " (" + mime + ", " + Math.round(bytes.length / 1024) + " KB)",
      dicom: mime === "application/dicom",
    };
    imageChosen();
  }

  function usePacsInstance(url, label) {
    state.image = { kind: "pacs", url, label, dicom: true };
    imageChosen();
  }

  function imageChosen() {
    $("source").textContent = state.image.label;
    $("dicom-options").hidden = !state.image.dicom;
    $("frame").value = "";
    $("frame-count").textContent = "";
    renderPreview();
  }

  // The image part as the chat API takes it (the render endpoint takes the same).
  function imagePart() {
    if (!state.image) return null;
    const part = { url: state.image.url };
    if (state.image.dicom) {
      const dicom = {};
      const choice = $("window").value;
      if (choice === "custom") {
        dicom.window = { center: Number($("window-center").value), width: Number($("window-width").value) };
      } else if (choice) {
        dicom.window = choice;
      }
      const frame = parseInt($("frame").value, 10);
      if (frame >= 1) dicom.frames = [frame];
      if (Object.keys(dicom).length) part.dicom = dicom;
    }
    return part;
  }

  function describeWindow(w) {
    if (!w) return "no window (colour image)";
    const name = w.preset ? " preset " + w.preset : " from " + w.source;
    return "window centre " + w.center + " / width " + w.width + " (" + w.function + "," + name + ")";
  }

  async function renderPreview() {
    const part = imagePart();
    if (!part) return;
    const seq = ++state.previewSeq;
    const img = $("preview");
    show($("preview-error"), "");
    $("preview-info").textContent = "Rendering…";
    img.removeAttribute("data-window");
    try {
      const out = await postJSON("/v1/images/render", { image_url: part });
      if (seq !== state.previewSeq) return; // a newer choice superseded this one
      const first = out.images[0];
      img.src = first.png;
      img.hidden = false;
      let info = first.width + " × " + first.height + " px, as the engine receives it";
      if (out.dicom && out.dicom.frames) {
        const frame = out.dicom.frames[0];
        info += " · frame " + frame.number + " of " + out.dicom.frame_count + " · " + describeWindow(frame.window);
        $("frame").max = String(out.dicom.frame_count);
        $("frame-count").textContent = "of " + out.dicom.frame_count;
        if (frame.window) {
          img.dataset.window = frame.window.center + "/" + frame.window.width;
        }
      } else if (out.dicom && out.dicom.rendered_by === "pacs") {
        info += " · rendered by the PACS · " + describeWindow(out.dicom.window);
      }
      $("preview-info").textContent = info;
    } catch (err) {
      if (seq !== state.previewSeq) return;
      img.hidden = true;
      $("preview-info").textContent = "";
      show($("preview-error"), "The image cannot be used: " + err.message);
      authProblem(err);
    }
  }

  function setupImageInput() {
    $("image-file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) useFile(file);
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (file) useFile(file);
    });
    $("window").addEventListener("change", () => {
      $("custom-window").hidden = $("window").value !== "custom";
      renderPreview();
    });
    for (const id of ["window-center", "window-width", "frame"]) {
      $(id).addEventListener("change", renderPreview);
    }
  }

  // --- asking -----------------------------------------------------------------------

  function seconds(value) {
    return value === null || value === undefined ? "–" : value.toFixed(3) + " s";
  }

  // Server-sent events from a fetch body: `data: {...}` lines, blank-line separated.
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data:")) yield line.slice(5).trim();
        }
      }
    }
  }

  async function ask(event) {
    event.preventDefault();
    const question = $("question").value.trim();
    const answer = $("answer");
    show($("ask-error"), "");
    if (!question) {
      show($("ask-error"), "Type a question first.");
      return;
    }
    if (applyKey() && !(await loadAll())) {
      show($("ask-error"), $("notice").textContent);
      return;
    }
    if (!$("model").value && !(await loadModels())) {
      show($("ask-error"), $("notice").textContent);
      return;
    }
    const content = [];
    const part = imagePart();
    if (part) content.push({ type: "image_url", image_url: part });
    content.push({ type: "text", text: question });
    const body = {
      model: $("model").value,
      messages: [{ role: "user", content }],
      max_tokens: parseInt($("max-tokens").value, 10) || 128,
      priority: $("priority").value,
      stream: true,
      stream_options: { include_usage: true },
    };
    answer.textContent = "";
    answer.dataset.state = "waiting";
    for (const id of ["ttft", "tokens", "latency"]) $(id).textContent = "–";
    $("ask-button").disabled = true;
    $("stop-button").disabled = false;
    state.controller = new AbortController();
    const started = performance.now();
    let first = null;
    try {
      const response = await call("POST", "/v1/chat/completions", body, state.controller.signal);
      answer.dataset.state = "streaming";
      for await (const data of events(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(200, chunk.error.message, chunk.error.code, null);
        if (chunk.usage) $("tokens").textContent = chunk.usage.completion_tokens + " generated, " + chunk.usage.prompt_tokens + " in the prompt";
        const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
        if (text) {
          if (first === null) {
            first = (performance.now() - started) / 1000;
            $("ttft").textContent = seconds(first);
          }
          answer.append(text);
        }
      }
      answer.dataset.state = "done";
    } catch (err) {
      answer.dataset.state = "failed";
      if (err.name === "AbortError") {
        show($("ask-error"), "Stopped.");
      } else {
        show($("ask-error"), err.message);
        authProblem(err);
      }
    } finally {
      $("latency").textContent = seconds((performance.now() - started) / 1000);
      $("ask-button").disabled = false;
      $("stop-button").disabled = true;
      state.controller = null;
      refreshOps();
    }
  }

  // --- PACS -------------------------------------------------------------------------

  function compactDate(value) {
    return value ? value.replaceAll("-", "") : "";
  }

  function displayDate(value) {
    return value && value.length === 8 ? value.slice(0, 4) + "-" + value.slice(4, 6) + "-" + value.slice(6) : value || "";
  }

  function pacsQuery() {
    const name = $("pacs-name").value;
    return name ? "pacs=" + encodeURIComponent(name) : "";
  }

  async function loadPacs() {
    try {
      const list = await getJSON("/v1/dicom/pacs");
      state.pacs = list.data;
      $("pacs").hidden = !state.pacs.length;
      $("pacs-name").replaceChildren(...state.pacs.map((p) => new Option(p.name, p.name)));
    } catch (err) {
      $("pacs").hidden = true;
    }
  }

  async function searchStudies(event) {
    event.preventDefault();
    show($("pacs-error"), "");
    const params = new URLSearchParams();
    params.set("pacs", $("pacs-name").value);
    const from = compactDate($("date-from").value), to = compactDate($("date-to").value);
    if (from || to) params.set("StudyDate", from === to ? from : from + "-" + to);
    const modality = $("modality").value.trim().toUpperCase();
    if (modality) params.set("ModalitiesInStudy", modality);
    try {
      const list = await getJSON("/v1/dicom/studies?" + params.toString());
      const rows = list.data.map((study, index) => {
        const tr = document.createElement("tr");
        const cells = [
          displayDate(study.study_date),
          (study.modalities || []).join(", "),
          study.description || "",
          study.series_count === null ? "" : String(study.series_count),
        ];
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        const td = document.createElement("td");
        const open = document.createElement("button");
        open.type = "button";
        open.textContent = "Open";
        open.setAttribute("aria-label", "Open study " + (index + 1) + " " + (study.description || displayDate(study.study_date)));
        open.addEventListener("click", () => openStudy(study));
        td.append(open);
        tr.append(td);
        return tr;
      });
      $("studies").tBodies[0].replaceChildren(...rows);
      $("studies").hidden = false;
      if (!rows.length) show($("pacs-error"), "No study matches.");
    } catch (err) {
      show($("pacs-error"), err.message);
      authProblem(err);
    }
  }

  async function openStudy(study) {
    state.study = study;
    $("study-view").hidden = false;
    $("study-title").textContent = "Study " + displayDate(study.study_date) + " " + (study.description || "");
    $("read-status").textContent = "";
    const list = $("series");
    list.replaceChildren();
    show($("pacs-error"), "");
    const base = "/v1/dicom/studies/" + encodeURIComponent(study.study_instance_uid) + "/series";
    try {
      const series = (await getJSON(base + "?" + pacsQuery())).data;
      for (const s of series) list.append(await seriesItem(base, s));
    } catch (err) {
      show($("pacs-error"), err.message);
      authProblem(err);
    }
  }

  async function seriesItem(base, series) {
    const li = document.createElement("li");
    const title = (series.modality || "?") + " · series " + (series.series_number ?? "") + " " + (series.description || "");
    const heading = document.createElement("div");
    heading.textContent = title;
    const path = base + "/" + encodeURIComponent(series.series_instance_uid) + "/instances?" + pacsQuery();
    const instances = (await getJSON(path)).data.filter((i) => i.url);
    const thumb = document.createElement("div");
    thumb.className = "none";
    thumb.textContent = "no image";
    li.append(thumb, heading);
    if (!instances.length) return li;
    const select = document.createElement("select");
    select.setAttribute("aria-label", "Instance of " + title);
    instances.forEach((instance, i) => {
      const frames = instance.number_of_frames ? ", " + instance.number_of_frames + " frames" : "";
      select.append(new Option("Instance " + (instance.instance_number ?? i + 1) + frames, instance.url));
    });
    const middle = instances[Math.floor((instances.length - 1) / 2)];
    select.value = middle.url;
    const use = document.createElement("button");
    use.type = "button";
    use.textContent = "Ask about this";
    use.setAttribute("aria-label", "Ask about " + title);
    use.addEventListener("click", () => {
      usePacsInstance(select.value, "PACS: " + title + ", " + select.selectedOptions[0].text);
      $("question").focus();
    });
    li.append(select, use);
    // The thumbnail comes from the same pipeline as the model's input.
    postJSON("/v1/images/render", { image_url: { url: middle.url }, max_side: 160 })
      .then((out) => {
        const img = document.createElement("img");
        img.src = out.images[0].png;
        img.alt = "Thumbnail of " + title;
        thumb.replaceWith(img);
      })
      .catch((err) => { thumb.textContent = err.status === 422 ? "not an image" : "no preview"; });
    return li;
  }

  // Reads API: POST /v1/dicom/reads, then GET /v1/dicom/reads/{id} until it ends.
  async function readStudy() {
    const study = state.study;
    if (!study) return;
    const status = $("read-status");
    status.textContent = "Submitting…";
    try {
      let read = await postJSON("/v1/dicom/reads", {
        model: $("model").value,
        study_instance_uid: study.study_instance_uid,
        pacs: $("pacs-name").value || undefined,
        priority: $("priority").value,
        max_tokens: parseInt($("max-tokens").value, 10) || undefined,
        store: true,
      });
      while (read.status === "queued" || read.status === "running") {
        status.textContent = "Read " + read.status + "…";
        await new Promise((resolve) => setTimeout(resolve, 1000));
        read = await getJSON("/v1/dicom/reads/" + encodeURIComponent(read.id));
      }
      status.replaceChildren("Read " + read.status + (read.error ? ": " + read.error.message : ""));
      if (read.answer) {
        $("answer").textContent = read.answer;
        $("answer").dataset.state = "done";
      }
      if (read.usage) {
        $("tokens").textContent = read.usage.completion_tokens + " generated, " + read.usage.prompt_tokens + " in the prompt";
      }
      if (read.sr) {
        const link = document.createElement("a");
        link.href = "#";
        link.textContent = read.sr.stored ? "Structured report (stored in the PACS)" : "Structured report";
        status.append(" · ");
        link.addEventListener("click", (event) => {
          event.preventDefault();
          downloadSr(read.id);
        });
        status.append(link);
      }
    } catch (err) {
      // A route this gateway lacks answers 404/405 without an error code; a study the
      // PACS does not know is a 404 with one, and its message says so.
      status.textContent = err.status === 405 || (err.status === 404 && !err.code)
        ? "Study reads are not available on this gateway."
        : err.message;
      authProblem(err);
    }
  }

  async function downloadSr(id) {
    const response = await call("GET", "/v1/dicom/reads/" + encodeURIComponent(id) + "/sr");
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = "gmai-vl-read-" + id + ".dcm";
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // --- operations -------------------------------------------------------------------

  function percentiles(p) {
    if (!p || p.p50 === null || p.p50 === undefined) return "no requests yet";
    return [p.p50, p.p90, p.p99].map((v) => (v === undefined || v === null ? "–" : v.toFixed(3))).join(" / ") + " s";
  }

  async function refreshOps() {
    try {
      const stats = await getJSON("/v1/ops/stats", true);
      const rows = stats.lanes.map((lane) => {
        const tr = document.createElement("tr");
        for (const [text, cls] of [[lane.lane, ""], [String(lane.depth), "num"], [lane.oldest_age_seconds.toFixed(1) + " s", "num"]]) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.append(td);
        }
        return tr;
      });
      $("lanes").tBodies[0].replaceChildren(...rows);
      $("live-workers").textContent = String(stats.live_workers);
      $("ops-latency").textContent = percentiles(stats.latency_seconds);
      $("ops-ttft").textContent = percentiles(stats.time_to_first_token_seconds);
      $("ops-count").textContent = stats.latency_seconds.count + " in the last " + Math.round(stats.latency_seconds.window_seconds) + " s";
      show($("ops-error"), "");
    } catch (err) {
      show($("ops-error"), err.message);
    }
  }

  // --- start ------------------------------------------------------------------------

  async function loadAll() {
    const ok = await loadModels();
    if (!ok) return false;
    if ($("model").options.length) notice("");
    loadPacs();
    refreshOps();
    if (state.opsTimer === null) state.opsTimer = setInterval(refreshOps, 5000);
    return true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupKey();
    setupImageInput();
    $("ask-form").addEventListener("submit", ask);
    $("stop-button").addEventListener("click", () => state.controller && state.controller.abort());
    $("study-search").addEventListener("submit", searchStudies);
    $("read-button").addEventListener("click", readStudy);
    document.addEventListener("gmaivl:auth", loadAll); // signed in or out (signin.js)
    (window.gmaivlAuth ? window.gmaivlAuth.ready : Promise.resolve()).finally(loadAll);
  });
})();
