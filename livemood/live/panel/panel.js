"use strict";
// The livemood control panel. It only talks to the server that served it: the HttpOnly cookie set by
// GET /?token=… authorises every request below, so the token never appears in this script.
(() => {
  const SEND_EVERY_MS = 80; // while a slider is dragged, at most one POST per this many milliseconds
  const HOLD_MS = 600; // after the user moves a slider, the server's echoes leave it alone this long
  const RECONNECT_MS = 1000; // a lost WebSocket or preview is retried after this long
  const ERROR_MS = 4000; // an error message stays this long

  const $ = (id) => document.getElementById(id);
  const sliders = {}; // field name → {input, output, touchedAt}
  let keys = null; // the hotkeys' map, from GET /api/keys
  let errorTimer = null;

  async function api(path, body) {
    const init = { credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function showError(error) {
    const box = $("error");
    box.textContent = String(error.message || error);
    box.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { box.hidden = true; }, ERROR_MS);
  }

  const send = (changes) => api("/api/state", changes).then(render).catch(showError);
  const sendKey = (key) => api("/api/key", { key }).then(render).catch(showError);

  function buildEmotions() {
    const byEmotion = Object.fromEntries(Object.entries(keys.emotion_keys).map(([k, name]) => [name, k]));
    const group = $("emotions");
    for (const name of keys.emotions) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.emotion = name;
      button.setAttribute("aria-pressed", "false");
      button.innerHTML = `<span class="name"></span><kbd></kbd>`;
      button.querySelector(".name").textContent = name;
      button.querySelector("kbd").textContent = byEmotion[name] || "";
      // blur: a focused button would also be "clicked" by the Space shortcut
      button.addEventListener("click", () => { button.blur(); send({ emotion: name }); });
      group.appendChild(button);
    }
    // The shortcuts, from the same map: one <kbd> per key ('=' and '_' also work: the same keys without Shift).
    const numbers = Object.keys(keys.emotion_keys);
    const rows = [
      [[`${numbers[0]}–${numbers[numbers.length - 1]}`], "emotion"],
      [[keys.up[0], keys.down[0]], "intensity ± 0.1"],
      [[keys.less[0], keys.more[0]], "expressiveness ± 0.1"],
      [[keys.neutral[0]], "this is my neutral face"],
      [keys.bypass.map((k) => (k === " " ? "Space" : k)), "bypass"],
    ];
    const list = $("keys");
    list.replaceChildren();
    for (const [labels, what] of rows) {
      const item = document.createElement("li");
      for (const label of labels) {
        const kbd = document.createElement("kbd");
        kbd.textContent = label;
        item.append(kbd);
      }
      const text = document.createElement("span");
      text.textContent = what;
      item.append(text);
      list.append(item);
    }
  }

  function bindSlider(name) {
    const input = $(name);
    const output = $(`${name}-value`);
    const slider = { input, output, touchedAt: 0, timer: null, sentAt: 0 };
    const post = () => {
      slider.timer = null;
      slider.sentAt = performance.now();
      send({ [name]: Number(input.value) });
    };
    input.addEventListener("input", () => {
      slider.touchedAt = performance.now();
      output.textContent = Number(input.value).toFixed(2);
      if (slider.timer === null) {
        slider.timer = setTimeout(post, Math.max(0, SEND_EVERY_MS - (performance.now() - slider.sentAt)));
      }
    });
    input.addEventListener("change", () => {
      slider.touchedAt = performance.now();
      clearTimeout(slider.timer);
      post();
    });
    sliders[name] = slider;
  }

  function render(state) {
    for (const button of $("emotions").children) {
      button.setAttribute("aria-pressed", String(button.dataset.emotion === state.emotion));
    }
    for (const [name, slider] of Object.entries(sliders)) {
      if (!(name in state)) continue;
      if (performance.now() - slider.touchedAt > HOLD_MS) {
        slider.input.value = state[name];
        slider.output.textContent = Number(state[name]).toFixed(2);
      }
    }
    $("expressiveness-row").hidden = !("expressiveness" in state);
    $("bypass").checked = state.bypass;
    $("bypass-badge").hidden = !state.bypass;
    document.body.classList.toggle("bypassed", state.bypass);
    $("fps").textContent = state.fps ? state.fps.toFixed(1) : "–";
    const lat = state.latency_ms || {};
    $("latency").textContent = lat.p50 == null ? "–" : `${Math.round(lat.p50)} / ${Math.round(lat.p95)} ms`;
    const reported = state.engine != null; // before the pipeline's first report there is nothing to say
    $("face").textContent = reported ? (state.face ? "found" : "not found") : "–";
    $("face").className = reported ? (state.face ? "good" : "bad") : "";
    $("engine").textContent = state.engine || "–";
  }

  function setConnected(connected) {
    const pill = $("connection");
    pill.textContent = connected ? "live" : "disconnected";
    pill.classList.toggle("on", connected);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/api/events`);
    ws.onopen = () => setConnected(true);
    ws.onmessage = (event) => render(JSON.parse(event.data));
    ws.onclose = () => {
      setConnected(false);
      setTimeout(connect, RECONNECT_MS);
    };
  }

  function startPreview() {
    const img = $("preview");
    img.onload = () => { $("no-preview").hidden = true; };
    img.onerror = () => {
      $("no-preview").hidden = false;
      setTimeout(() => { img.src = `/api/preview.mjpg?retry=${Date.now()}`; }, RECONNECT_MS);
    };
    img.src = "/api/preview.mjpg";
  }

  function onKey(event) {
    if (!keys || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const stepping = [keys.up, keys.down, keys.more, keys.less].some((group) => group.includes(key));
    if (!(key in keys.emotion_keys || stepping || keys.bypass.includes(key) || keys.neutral.includes(key))) return;
    event.preventDefault(); // Space would scroll or press the focused control; +/- would zoom nothing useful
    if (event.repeat && !stepping) return; // holding 0 must not make bypass flicker
    sendKey(key);
  }

  async function main() {
    // The cookie now carries the token: keep it out of the address bar, history and screenshots.
    if (location.search) history.replaceState(null, "", location.pathname);
    bindSlider("intensity");
    bindSlider("expressiveness");
    $("bypass").addEventListener("change", (event) => send({ bypass: event.target.checked }));
    document.addEventListener("keydown", onKey);
    document.addEventListener("keyup", (event) => { if (event.key === " ") event.preventDefault(); });
    try {
      keys = await api("/api/keys");
      buildEmotions();
      render(await api("/api/state"));
    } catch (error) {
      showError(error);
    }
    connect();
  }

  main();
  // The MJPEG never finishes loading; starting it after "load" keeps it from holding the page's load event.
  if (document.readyState === "complete") startPreview();
  else window.addEventListener("load", startPreview);
})();
