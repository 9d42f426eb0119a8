// The page: wires the controls to the worker that hosts the wasm core (through engine.js, the only module that
// talks to it), and draws what comes back. Nothing heavy happens here: decoding (decode.js: the core's decoder in
// the worker) and everything else is the worker's, segments included (the core's rule, as on the command line).
//
// What the page shows must be true of the bank in use: every result remembers the bank it was scored with (the
// worker's bank serial), a result made with another bank is marked stale and rescored in the background, and a
// verdict is only ever given for a result of the bank in use.

import { Figure, Series, COLOUR_MAPS, HEAT_HIGH, HEAT_LOW, heatLegendCss, judgedBins } from "./render.js";
import { encodeWav, Player } from "./audio.js";
import { openAudio } from "./decode.js";
import { loadLastBank, saveLastBank } from "./store.js";
import { Engine } from "./engine.js";
import { state } from "./state.js";
import { UserError, asUserError, bankFileError, fitError, mismatch, modelError, scoreError, sentence } from "./messages.js";

const $ = (id) => document.getElementById(id);
// The default model, and the models shipped beside it for banks fitted with them (a bank names its model; loading
// one of another shipped model switches to it, see worker.js).
const MODEL_NAME = "efficientat-mn04";
const MODEL_URL = "models/efficientat-mn04/model.onnx";
const SPEC_URL = "models/efficientat-mn04/spec.json";
const MODEL_LABEL = "the model (EfficientAT mn04_as)";
const SHIPPED_MODELS = [
  {
    name: "aisfx-cnn14",
    modelUrl: "models/aisfx-cnn14/model.onnx",
    specUrl: "models/aisfx-cnn14/spec.json",
    label: "aisfx-cnn14",
    source: "the page's aisfx-cnn14 (for banks fitted with it)",
  },
];
const DEMO_BANK_URL = "demo/fan-demo.bank";
const DEMO_BANK_NAME = "demo bank (fan-demo.bank)";
const DEMOS = { normal: "demo/fan-normal.wav", abnormal: "demo/fan-abnormal.wav" };
// Seconds the live view spans: at least this, and twice the wait for a judgement, so that the judged part shows.
const LIVE_SPAN_S = 12;
// Seconds dropped at the start of each recording take while the microphone settles (see recorder-worklet.js).
const SETTLE_S = 0.3;
// What counts as audio in a folder (single files are tried whatever their name).
const AUDIO_NAME = /\.(wav|wave|mp3|ogg|oga|opus|flac|m4a|aac|webm)$/i;

// ---- state and worker ---------------------------------------------------------------------------------------

window.sonomaly = state; // for the curious and for the end-to-end tests

// One worker per core (navigator.hardwareConcurrency) shares the scoring of a clip's windows; `?workers=N` in the
// page's address sets another number (1: one worker).
const WORKERS = Number(new URLSearchParams(location.search).get("workers")) || undefined;
const engine = new Engine(new URL("./worker.js", import.meta.url), {
  onFatal(e) {
    const text = "The analysis engine could not start in this browser. Use a current Chrome, Edge, Firefox or " +
      "Safari, and open the page over http://localhost or https.";
    state.initFailed = true;
    fail(new UserError(text, e.message || null));
  },
  onRestart(phase, info) {
    if (phase === "start") {
      state.restarting = true;
      setStatus("Restarting the analysis engine with the same model and bank…");
    } else if (phase === "progress") {
      if (!state.running) progressHandler(info);
    } else if (phase === "done") {
      state.restarting = false;
      if (state.lastCancel) state.lastCancel.restoredAt = performance.now();
      if (!state.running) {
        setStatus(`The analysis engine is running again, with ${state.bank ? theBank(state.bankName) : "no bank"}: ` +
          "ready.");
        showProgress(null);
      }
    } else {
      state.restarting = false;
      state.initFailed = true;
      fail(new UserError("The analysis engine could not be started again after the cancel. Reload the page: the " +
        "last fitted bank is kept in this browser.", info && info.message));
    }
    updateButtons();
  },
}, { workers: WORKERS });
window.sonomalyEngine = engine; // for the end-to-end tests (restarts, session)

// ---- status, errors, notices --------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

// Where things stand, for the status line when nothing is going on.
function idleStatus() {
  if (state.initFailed) return "Not ready: the analysis engine or the model did not load.";
  if (!state.ready) return "Loading the analysis engine…";
  if (!state.bank) return "No bank is loaded: open a bank file, or fit one from normal sound below.";
  return "Ready: open a file, try a demo clip, or record.";
}

function showProgress(done, total) {
  const bar = $("progress");
  if (done == null) {
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  if (total > 0) bar.value = Math.min(1, done / total);
  else bar.removeAttribute("value");
}

function progressHandler(msg) {
  let text = msg.text;
  if (msg.stage === "download" && msg.total > 0 && msg.done < msg.total) {
    text += ` ${Math.round((100 * msg.done) / msg.total)} % of ${(msg.total / 1e6).toFixed(1)} MB`;
  }
  setStatus(text);
  showProgress(msg.done, msg.total);
}

// Shows what went wrong once, in the red box (the core's words behind "details"); the status line goes back to
// saying where things stand. `reason` lets the box be taken away when its cause is gone (e.g. "no-bank").
function fail(err, reason = null) {
  const e = asUserError(err);
  $("error-text").textContent = e.message;
  $("error-details").textContent = e.details || "";
  $("error-more").hidden = !e.details;
  $("error-more").open = false;
  $("error").dataset.reason = e.reason || reason || "";
  $("error").hidden = false;
  setStatus(idleStatus());
  showProgress(null);
}

// Hides the red box; with a reason, only if it shows an error of that reason.
function clearError(reason = null) {
  if (reason && $("error").dataset.reason !== reason) return;
  $("error").hidden = true;
}

// Shows a notice (null hides it). A `sticky` one (what a cancel did) stays when the next action starts; the others
// go then.
function note(text, sticky = false) {
  if (!text && !sticky && $("notice").dataset.sticky === "1") return;
  $("notice-text").textContent = text || "";
  $("notice").hidden = !text;
  $("notice").dataset.sticky = text && sticky ? "1" : "";
}

$("error-close").onclick = () => clearError();
$("notice-close").onclick = () => note(null, true);

async function busy(fn) {
  clearError();
  note(null);
  state.busy++;
  updateButtons();
  try {
    return await fn();
  } catch (e) {
    console.error(e);
    fail(e);
    return undefined;
  } finally {
    state.busy--;
    showProgress(null);
    updateButtons();
  }
}

// ---- waiting for the model ----------------------------------------------------------------------------------

let markReady;
const readyPromise = new Promise((resolve) => (markReady = resolve));

// The actions waiting, beside the status line: for the model, or for the action running to end.
function showQueued() {
  const q = $("queued");
  q.hidden = state.queued.length === 0;
  const why = state.initFailed ? "· not done, the model did not load: "
    : !state.ready ? "· waiting for the model: "
      : `· waiting for ${state.running || "the analysis engine"} to finish: `;
  q.textContent = state.queued.length ? why + state.queued.join(", ") : "";
}

// Resolves true once the page is ready (at once if it is), false if it never will be. Input given before then
// (a dropped file, an early click) waits here instead of failing.
async function whenReady(label) {
  if (state.ready) return true;
  if (state.initFailed) return false;
  state.queued.push(label);
  showQueued();
  const ok = await readyPromise;
  if (ok) state.queued.splice(state.queued.indexOf(label), 1);
  showQueued();
  return ok;
}

// An action that needs the model: waits for it, then for the action running (one runs at a time, so that a click
// during a long fit is queued where the user sees it, beside the status line, and runs after it), then runs as
// `busy` does.
let lastAction = Promise.resolve();
async function action(label, fn) {
  if (!(await whenReady(label))) return undefined;
  const before = lastAction;
  let done;
  lastAction = new Promise((resolve) => (done = resolve));
  if (state.running) {
    state.queued.push(label);
    showQueued();
    await before;
    state.queued.splice(state.queued.indexOf(label), 1);
  } else await before;
  state.running = label;
  showQueued();
  try {
    return await busy(fn);
  } finally {
    state.running = null;
    showQueued();
    done();
  }
}

// ---- formatting ---------------------------------------------------------------------------------------------

function fmtDate(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toLocaleString();
}

function fmtDuration(s) {
  if (s == null) return "?";
  return s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`;
}

function fmtHz(f) {
  return f >= 1000 ? `${+(f / 1000).toFixed(1)} kHz` : `${Math.round(f)} Hz`;
}

// A score or threshold in the bank's units: robust z-scores with 2 decimals and "z", distances with 4.
function fmtScore(v, units) {
  if (v == null || !Number.isFinite(v)) return "—";
  return units === "z" ? `${v.toFixed(2)} z` : v.toFixed(4);
}

function fmtBytes(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} KB`;
}

// "the demo bank (fan-demo.bank)", "the bank fan.bank": a bank's name in a sentence.
function theBank(name) {
  return /\.(bank|safetensors)$/i.test(name || "") ? `the bank ${name}` : `the ${name}`;
}

function cap(s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// ---- loaded model and bank ----------------------------------------------------------------------------------

// "features.0, features.1, ..., features.16" -> "features.0–16": runs of names that differ by a trailing number.
function compactLayers(names) {
  const out = [];
  for (let i = 0; i < names.length;) {
    const m = /^(.*?)(\d+)$/.exec(names[i]);
    let j = i + 1;
    if (m) {
      while (j < names.length) {
        const n = /^(.*?)(\d+)$/.exec(names[j]);
        if (!n || n[1] !== m[1] || Number(n[2]) !== Number(m[2]) + (j - i)) break;
        j++;
      }
    }
    out.push(j - i > 2 ? `${names[i]}–${/(\d+)$/.exec(names[j - 1])[1]}` : names.slice(i, j).join(", "));
    i = j;
  }
  return out.join(", ");
}

// Seconds of normal sound a fit on a single clip needs: two analysis windows, as the core calibrates the threshold
// on held-out parts of the normal sound (with one clip: its windows).
function minFitSeconds(m = state.model) {
  return m && m.windowHop ? (m.windowFrames + m.windowHop) * m.hopS : 0;
}

// Seconds of sound before a live stream's first judgement (a window is judged once the next one has begun to
// arrive in full: window + hop), and between judgements (the hop).
function liveTiming(m = state.model) {
  if (!m || !m.windowHop) return { first: 0, every: 0 };
  return { first: (m.windowFrames + m.windowHop) * m.hopS, every: m.windowHop * m.hopS };
}

function fmtS(s) {
  return `${+s.toFixed(1)} s`;
}

function showModel(m) {
  state.model = m;
  const from = m.isDefault ? "" : m.shipped ? " (shipped with this page for banks fitted with it)" : ` from ${m.source}`;
  $("model-info").textContent = `${m.name}${from} (${compactLayers(m.layers)}; ` +
    `${m.licence || "licence not stated"})` + (m.cached ? " — from the browser cache" : "");
  $("model-info").title = m.description || "";
  $("frontend-info").textContent = `${m.frontEnd || "—"}; analysis windows of ${fmtS(m.windowS)} every ` +
    `${fmtS(m.windowHop * m.hopS)}`;
  $("default-model").hidden = !!m.isDefault;
  const patch = (m.patchLayers || []).join(" + ");
  for (const el of document.querySelectorAll(".preset-layers")) el.textContent = patch || "none: this model recommends no layers";
  document.querySelector('input[name="fit-preset"][value="environment"]').disabled = !patch;
  document.querySelector('input[name="fit-preset"][value="both"]').disabled = !patch;
  if (!patch) document.querySelector('input[name="fit-preset"][value="machine"]').checked = true;
  $("fit-layer-names").textContent = compactLayers(m.layers);
  $("fit-layers").placeholder = patch ? `logmel;${m.patchLayers.join(",")}` : "logmel";
  $("fit-minimum").textContent = `A fit needs at least ${minFitSeconds(m).toFixed(1)} s of normal sound in one ` +
    `clip (two analysis windows of this model), or two clips or more; ${m.steadyClips} clips or more and ` +
    `${m.steadySeconds} s or more in all give a threshold that holds. The threshold is set from the normal sound alone.`;
  renderFitList();
}

// The file name a bank downloads as: the same for the same bank whichever button saves it.
function bankFileName(name, info) {
  if (/\.(bank|safetensors)$/i.test(name || "")) return name;
  if (name === DEMO_BANK_NAME) return "fan-demo.bank";
  const created = info && info.created ? new Date(info.created) : new Date();
  const d = isNaN(created) ? new Date() : created;
  const pad = (n) => String(n).padStart(2, "0");
  return `sonomaly-fitted-${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}.bank`;
}

// Before a fit: whether the ticked clips are fewer, or shorter in all, than the core's bound for a threshold that
// holds (the model info's steadyClips and steadySeconds; a fitted bank's info says it itself: thresholdNote).
function roughFit(clips, seconds) {
  const m = state.model;
  return !!m && (clips < m.steadyClips || seconds < m.steadySeconds);
}

// What the heat colours mean for the bank in use.
function showLegend(info) {
  let text = `from ${Math.round(HEAT_LOW * 100)} % of the segment threshold to ${Math.round(HEAT_HIGH * 100)} % of it, or the largest value if higher`;
  if (info && info.displayFloor != null && info.displayCeiling != null) {
    const seg = info.segmentThreshold;
    text = info.units === "z"
      ? `from ${+(seg - info.displayFloor).toFixed(2)} z below the segment threshold to ${+(info.displayCeiling - seg).toFixed(2)} z above it, or the largest value if higher`
      : `from ${Math.round((100 * info.displayFloor) / seg)} % of the segment threshold to ${Math.round((100 * info.displayCeiling) / seg)} % of it, or the largest value if higher`;
  }
  $("heat-legend-text").textContent = text;
}

// A new bank (or none) is in use: every result of another bank is now stale and gets rescored.
function setBank(info, name, serial) {
  // "Fitted a bank ... now in use" is true only while that bank is the one in use.
  if (!state.fitted || name !== state.fitted.name) $("fit-result").hidden = true;
  state.bank = info || null;
  state.bankName = info ? name : null;
  state.bankFile = info ? bankFileName(name, info) : null;
  state.bankSerial = serial;
  state.thresholdOverride = null;
  state.levels = null;
  showLegend(info);
  if (!info) {
    $("bank-info").textContent = "none — open a bank file, or fit one below";
    $("bank-fit-info").textContent = "—";
  } else {
    clearError("no-bank");
    $("bank-info").textContent = `${name}: ${info.detector}, memory bank ${info.memoryBank}, threshold ` +
      `${fmtScore(info.threshold, info.units)}${info.units === "z" ? " (robust z-score)" : ""}`;
    const parts = [];
    if (info.clips != null) parts.push(plural(info.clips, "clip"));
    if (info.seconds != null) parts.push(fmtDuration(info.seconds));
    if (info.backbone) parts.push(`backbone ${info.backbone}`);
    if (info.layers) {
      const members = info.layers.split(" + ");
      parts.push(members.length > 1 ? `members: ${members.map((l) => l.replace(/,/g, "+")).join(" and ")}`
        : `patches from ${info.layers.replace(/,/g, " + ")}`);
    }
    if (info.bandLimitHz) parts.push(`judged up to ${fmtHz(info.bandLimitHz)}`);
    if (info.created) parts.push(`on ${fmtDate(info.created)}`);
    let text = parts.join(", ") || "—";
    if (info.thresholdNote) text += ` — ${info.thresholdNote}`;
    $("bank-fit-info").textContent = text;
  }
  updateSlider();
  applyThreshold();
  if (state.current && state.current.result) showClip(state.current);
  renderClipList();
  updateButtons();
  rescoreAll();
}

async function lastBankOffer() {
  const last = await loadLastBank();
  return last ? { bytes: last.bytes, name: `last fitted bank (${fmtDate(last.savedAt)})` } : null;
}

// Banks the worker may fall back on when the bank in use does not fit a new model.
async function offeredBanks() {
  const last = await lastBankOffer();
  return [...(last ? [last] : []), { url: DEMO_BANK_URL, name: DEMO_BANK_NAME }];
}

async function start() {
  $("heat-legend").style.background = heatLegendCss();
  showLegend(null);
  for (const name of COLOUR_MAPS) $("colour-map").add(new Option(name, name));
  fillChannels(8);
  setStatus("Loading the analysis engine…");
  const last = await lastBankOffer();
  if (last) $("last-bank").hidden = false;
  const t0 = performance.now();
  const r = await busy(() =>
    engine.call("init", {
      modelName: MODEL_NAME,
      modelUrl: MODEL_URL,
      specUrl: SPEC_URL,
      modelLabel: MODEL_LABEL,
      shipped: SHIPPED_MODELS,
      buildUrl: "build.json",
      bankUrl: DEMO_BANK_URL,
      preferredBank: last ? last.bytes : null,
      preferredBankName: last ? last.name : null,
    }, [], progressHandler));
  if (!r) {
    state.initFailed = true;
    $("model-info").textContent = "not loaded";
    $("bank-info").textContent = "not loaded";
    setStatus(idleStatus());
    showQueued();
    markReady(false);
    return;
  }
  state.timings.modelReadyMs = performance.now();
  state.ready = true;
  showModel(r.model);
  setBank(r.bank, r.bankSource, r.serial);
  if (r.bankError) {
    const { name, error, modelError } = r.bankError;
    const e = error === "missing"
      ? new UserError("The demo bank (demo/fan-demo.bank) is not on this server. Open a bank file, or fit one from normal sound below.", null, "no-bank")
      : bankFileError(name, error, modelError);
    if (r.bank) note(`${e.message} Using ${theBank(r.bankSource)} instead.`);
    else fail(e, "no-bank");
  }
  if (r.switched) {
    note(`${cap(theBank(r.switched.bank))} was fitted with the model ${r.switched.model}, not with the page's ` +
      `default model (${MODEL_NAME}), so ${r.switched.model} is in use with it. Use default model goes back to ` +
      `${MODEL_NAME}${r.switched.setAside ? ` and ${theBank(r.switched.setAside)}` : ""}.`);
  }
  if (r.bank) setStatus(`Ready (${((performance.now() - t0) / 1000).toFixed(1)} s): open a file, try a demo clip, or record.`);
  else setStatus(idleStatus());
  markReady(true);
}

$("bank-input").onchange = async (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (file) await loadBankFile(file);
};

// Loads a bank. A bank fitted with another model the page has (the default model, or aisfx-cnn14 for banks of
// earlier versions) switches to that model; the bank in use is set aside and comes back with its own model.
async function loadBankBytes(bytes, name, errorName) {
  await stopRecordingIfRunning();
  const r = await engine.call("loadBank", { bytes, name }, [bytes.buffer], progressHandler).catch((e) => {
    throw bankFileError(errorName, e, e.modelError);
  });
  if (r.switched) {
    const from = state.model ? state.model.name : null;
    showModel(r.switched.model);
    setBank(r.info, r.name, r.serial);
    const m = r.switched.model;
    note(`${cap(theBank(r.name))} was fitted with the model ${m.name}${from ? `, not with ${from}` : ""}: the page ` +
      `switched to ${m.isDefault ? "its default model" : `the ${m.name} model it ships for such banks`}, and ` +
      `${theBank(r.name)} is in use.` + (r.info && r.info.units !== "z"
      ? " Its scores are distances, as banks of earlier versions give, not z-scores." : "") +
      (r.switched.previousBank && !m.isDefault
      ? ` ${cap(theBank(r.switched.previousBank))} comes back with Use default model.` : ""));
    return true;
  }
  setBank(r.info, r.name, r.serial);
  return false;
}

async function loadBankFile(file) {
  await action(`the bank ${file.name}`, async () => {
    setStatus(`Loading the bank ${file.name}…`);
    const switched = await loadBankBytes(new Uint8Array(await file.arrayBuffer()), file.name, file.name);
    setStatus(`Loaded the bank ${file.name}${switched ? ` with the model ${state.model.name}` : ""}.`);
  });
}

$("demo-bank").onclick = () =>
  action("Use demo bank", async () => {
    const res = await fetch(DEMO_BANK_URL).catch(() => null);
    if (!res || !res.ok) throw new UserError("The demo bank (demo/fan-demo.bank) is not on this server.");
    const switched = await loadBankBytes(new Uint8Array(await res.arrayBuffer()), DEMO_BANK_NAME, "The demo bank");
    setStatus(`Loaded the demo bank${switched ? ` with the model ${state.model.name}` : ""}.`);
  });

$("last-bank").onclick = () =>
  action("Use last fitted bank", async () => {
    const last = await lastBankOffer();
    if (!last) throw new UserError("No fitted bank is stored in this browser.");
    const switched = await loadBankBytes(new Uint8Array(last.bytes), last.name, "The last fitted bank");
    setStatus(`Loaded the last fitted bank${switched ? ` with the model ${state.model.name}` : ""}.`);
  });

$("download-bank").onclick = () =>
  action("Download bank", async () => {
    const bytes = await engine.call("bankBytes");
    download(new Blob([bytes], { type: "application/octet-stream" }), state.bankFile || "sonomaly.bank");
  });

$("model-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await loadModelFiles(files);
};

async function loadModelFiles(files) {
  const onnx = files.find((f) => /\.onnx$/i.test(f.name));
  const spec = files.find((f) => /\.json$/i.test(f.name));
  if (!onnx || !spec) {
    clearError();
    fail(new UserError("To load a model, choose its .onnx file and its .json spec together."));
    return;
  }
  await action(`the model ${onnx.name}`, async () => {
    setStatus(`Checking the model ${onnx.name} on a test input…`);
    const bytes = await onnx.arrayBuffer();
    const specText = await spec.text();
    const banks = await offeredBanks();
    await stopRecordingIfRunning();
    const r = await engine.call("loadModel", { onnx: bytes, spec: specText, name: onnx.name, banks }, [bytes], progressHandler)
      .catch((e) => {
        throw modelError(onnx.name, spec.name, e);
      });
    afterModelSwitch(r);
    setStatus(`Loaded the model ${onnx.name}${r.bank ? ` with ${theBank(r.bankName)}` : ""}.`);
  });
}

$("default-model").onclick = () =>
  action("Use default model", async () => {
    const banks = await offeredBanks();
    await stopRecordingIfRunning();
    const r = await engine.call("useDefaultModel", { banks }, [], progressHandler);
    afterModelSwitch(r);
    setStatus(`Back to the default model${r.bank ? `, with ${theBank(r.bankName)}` : ""}.`);
  });

// After a model switch: says which bank is in use and why, or why none is.
function afterModelSwitch(r) {
  const back = state.model && state.model.isDefault ? "Use default model" : "loading the earlier model again";
  showModel(r.model);
  setBank(r.bank, r.bankName, r.serial);
  const why = r.previousBankError ? mismatch(theBank(r.previousBank), r.previousBankError) : null;
  const fact = why ? why.fact : r.previousBankError ? sentence(r.previousBankError) : null;
  if (!r.bank) {
    throw new UserError(`No bank fits this model${fact ? `: ${fact}` : "."} Fit a bank below with this model, or ` +
      "open a bank fitted with it" + (r.previousBank ? `; ${back} brings ${theBank(r.previousBank)} back.` : "."),
    r.previousBankError, "no-bank");
  }
  if (fact && r.bankName !== r.previousBank) {
    note(`The bank changed with the model: ${fact} ${cap(theBank(r.bankName))} fits this model and is in use now; ` +
      `${theBank(r.previousBank)} comes back when you load its model again.`);
  }
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- threshold ----------------------------------------------------------------------------------------------

// The clip threshold, the temporal curve's threshold and the heatmap's ramp (`floor`, `ceiling`) for a result of
// the bank in use (or the bank's own, for the live recording): the result's own, or those the core gives for the
// slider's value (Engine.thresholdsFor, as `sonomaly score --threshold` moves them), kept in `state.levels`.
function thresholdsOf(r) {
  if (!r || r.threshold == null) return { thr: null, seg: null, floor: null, ceiling: null, units: null };
  const units = r.units ?? "distance";
  const own = { thr: r.threshold, seg: r.segmentThreshold, floor: r.displayFloor ?? null, ceiling: r.displayCeiling ?? null, units };
  if (state.thresholdOverride == null || !state.levels) return own;
  return { ...state.levels, units };
}

function isFresh(clip) {
  return !!(state.bank && clip && clip.result && clip.result.bankSerial === state.bankSerial);
}

// The slider reaches from 0 (or the lowest score) to well above both the bank's threshold and every score on
// screen, so that any clip shown can be judged normal or anomalous with it.
function updateSlider() {
  const s = $("threshold");
  const thr = state.bank ? state.bank.threshold : null;
  s.disabled = thr == null;
  $("threshold-reset").disabled = thr == null;
  if (thr == null) {
    $("threshold-value").textContent = "";
    return;
  }
  const vals = [thr, ...state.clips.filter(isFresh).map((c) => c.result.score)];
  if (state.rec && state.rec.score != null) vals.push(state.rec.score);
  if (state.thresholdOverride != null) vals.push(state.thresholdOverride);
  const top = Math.max(...vals);
  const bottom = Math.min(...vals);
  const unit = Math.abs(thr) || Math.abs(top) || 1;
  const hi = Math.max(thr + 1.5 * unit, top + 0.15 * Math.abs(top));
  const lo = bottom >= 0 ? 0 : bottom - 0.15 * Math.abs(bottom);
  s.min = String(lo);
  s.max = hi.toPrecision(4);
  s.step = ((hi - lo) / 2000).toPrecision(3);
  s.value = String(state.thresholdOverride ?? thr);
}

function applyThreshold() {
  const c = state.current;
  const r = c && c.result && isFresh(c) ? c.result : state.bank;
  const levels = thresholdsOf(r);
  const { thr, seg } = levels;
  $("threshold-value").textContent = thr == null ? "" : `${fmtScore(thr, levels.units)} (segments above ${fmtScore(seg, levels.units)})`;
  figure.setThreshold(levels);
  if (c && c.result) {
    const segs = isFresh(c) ? segmentsOf(c.result) : [];
    figure.segments = segs || [];
    figure.drawCurve();
    showVerdict(c, segs);
  } else if (!c && state.rec && state.rec.series && state.rec.running) {
    const segs = segmentsOf(state.rec);
    figure.segments = segs || [];
    figure.drawCurve();
    showVerdict(null, segs, { score: state.rec.score });
  }
  renderClipList();
}

// What the segments of a result, or of the live recording, depend on: the bank, the slider's value, and (live)
// how much of the curve is judged.
function segmentsKey(src) {
  return `${state.bankSerial}|${state.thresholdOverride ?? "bank"}|${src.judged ?? 0}`;
}

// The payload of a `levels` request for `src` (a clip's result, or the live recording): the curve the core finds
// segments on, its hop and the clip's length (null while live), and the clip threshold in effect.
function levelsRequest(src) {
  const req = { threshold: state.thresholdOverride ?? state.bank.threshold };
  if (src) {
    req.curve = src.segmentCurve.slice(0, src.judged ?? src.segmentCurve.length);
    req.hopS = src.segmentHopS;
    req.durationS = src.durationS ?? null;
  }
  return req;
}

// The segments of `src` (a result of the bank in use, or the live recording, state.rec) for the threshold in
// effect: always the core's (pipeline::segments_for, as `sonomaly score` gives them, `--threshold` included). At
// the bank's own threshold a result brings them; otherwise they are asked of the core once (worker `levels`) and
// kept on `src`. Null while they are being asked: the figure is redrawn when they come.
function segmentsOf(src) {
  if (!src || !state.bank || !src.segmentCurve) return [];
  if (state.thresholdOverride == null && src.segments && src.bankSerial === state.bankSerial) return src.segments;
  const key = segmentsKey(src);
  if (src.found && src.found.key === key) return src.found.segments;
  if (src.asking !== key) askSegments(src, key);
  return null;
}

async function askSegments(src, key) {
  src.asking = key;
  let t;
  try {
    t = await engine.call("levels", levelsRequest(src));
  } catch (e) {
    if (src.asking === key) src.asking = null;
    if (!e.cancelled) fail(e);
    return;
  }
  if (src.asking === key) src.asking = null;
  if (t.serial !== state.bankSerial) return;
  src.found = { key, segments: t.segments };
  if (segmentsKey(src) !== key) return;
  if (src === state.rec || (state.current && state.current.result === src)) applyThreshold();
}

// The result on screen, as a source of segments (see segmentsOf): the clip shown if its result is the bank in
// use's, else the live recording, else none.
function shownSource() {
  const c = state.current;
  if (c && c.result) return isFresh(c) ? c.result : null;
  return !c && state.rec && state.rec.running ? state.rec : null;
}

// The slider asks the core for the thresholds its value gives and the segments of the result on screen with them
// (the answer comes between the worker's tasks, past any queue of rescoring); the last answer for the bank in use
// wins.
let levelsAsked = 0;
$("threshold").oninput = async (ev) => {
  const v = Number(ev.target.value);
  state.thresholdOverride = v;
  const ask = ++levelsAsked;
  const serial = state.bankSerial;
  const src = shownSource();
  const key = src ? segmentsKey(src) : null;
  if (src) src.asking = key;
  let t;
  try {
    t = await engine.call("levels", levelsRequest(src));
  } catch (e) {
    if (src && src.asking === key) src.asking = null;
    if (!e.cancelled) fail(e);
    return;
  }
  if (src && src.asking === key) src.asking = null;
  if (serial !== state.bankSerial || t.serial !== state.bankSerial) return;
  if (src) src.found = { key, segments: t.segments };
  if (ask !== levelsAsked) return;
  state.levels = { thr: t.threshold, seg: t.segmentThreshold, floor: t.displayFloor, ceiling: t.displayCeiling, value: v };
  applyThreshold();
};
$("threshold-reset").onclick = () => {
  if (!state.bank) return;
  levelsAsked++;
  state.thresholdOverride = null;
  state.levels = null;
  updateSlider();
  applyThreshold();
};

// ---- scoring clips ------------------------------------------------------------------------------------------

const figure = new Figure({
  spec: $("spec"),
  heat: $("heatmap"),
  faxis: $("faxis"),
  taxis: $("taxis"),
  curve: $("curve"),
  cursor: $("cursor"),
});
const player = new Player((t) => figure.setPlayhead(t));
let clipSeq = 0;

// SHA-256 (hex) of a file's size and bytes, to know a file opened twice; null where the browser has no
// WebCrypto. A file larger than 8 MB is known by its size, its first and its last 4 MB, so that an hour of audio is
// never read whole here.
const FINGERPRINT_PART = 4 << 20;
async function fingerprint(blob) {
  try {
    const parts = blob.size <= 2 * FINGERPRINT_PART
      ? [blob]
      : [blob.slice(0, FINGERPRINT_PART), blob.slice(blob.size - FINGERPRINT_PART)];
    const bytes = await new Blob([String(blob.size), ...parts]).arrayBuffer();
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
  } catch (e) {
    return null;
  }
}

// Decodes a File or Blob named `name` with the core's decoder in the worker (the browser's only for formats the
// core lacks, see decode.js), with the channel chosen; the decoder's warnings and the fallback go to the status
// line. A file longer than decode.js LONG_FILE_S comes back without samples (scored as a stream).
async function readAudio(blob, name) {
  const file = blob instanceof File && blob.name === name ? blob : new File([blob], name);
  const channel = state.channel === "mix" ? -1 : state.channel;
  const audio = await openAudio((...a) => engine.call(...a), file, { channel, onProgress: progressHandler });
  audio.channel = state.channel;
  return audio;
}

function allClips() {
  const out = [...state.clips];
  for (const m of state.fitMaterial) if (!out.includes(m.clip)) out.push(m.clip);
  return out;
}

function findTwin(hash) {
  return hash ? allClips().find((c) => c.hash === hash) : undefined;
}

// A clip's label: its path inside a folder the user opened or dropped, else its name; a second, different file
// of the same label gets " (2)" and a hint in its details.
function newClip({ name, path = "", hash = null, blob = null, kind, ...audio }) {
  const base = path || name;
  const twins = allClips().filter((c) => c.baseLabel === base).length;
  return {
    id: ++clipSeq,
    name,
    path,
    baseLabel: base,
    label: twins ? `${base} (${twins + 1})` : base,
    hash,
    blob,
    kind,
    ...audio,
    result: null,
  };
}

function relabel(clip, path) {
  clip.path = path;
  clip.baseLabel = path;
  const twins = allClips().filter((c) => c !== clip && c.baseLabel === path).length;
  clip.label = twins ? `${path} (${twins + 1})` : path;
  renderFitList();
}

// Items to open: {file, path} (path: inside a folder opened or dropped, or "").
async function openFiles(items, fromFolder = false) {
  const audio = fromFolder ? items.filter((it) => AUDIO_NAME.test(it.file.name) || /^audio\//.test(it.file.type)) : items;
  const skipped = items.length - audio.length;
  if (!audio.length) {
    if (items.length) fail(new UserError(`None of the ${plural(items.length, "file")} is audio (WAV, MP3, OGG, FLAC).`));
    return;
  }
  await action(audio.length === 1 ? audio[0].path || audio[0].file.name : plural(audio.length, "file"), async () => {
    const failures = [];
    const twins = [];
    const warnings = [];
    for (const [i, it] of audio.entries()) {
      try {
        if (audio.length > 1) showProgress(i, audio.length);
        await openOne(it, audio.length > 1 ? `${i + 1} of ${audio.length}: ` : "", twins, warnings);
      } catch (e) {
        failures.push(asUserError(e));
      }
    }
    // What a batch would otherwise only have said in passing on the status line: files that are the same as one
    // already open (shown once), and the decoder's warnings.
    const notes = [];
    if (skipped) notes.push(`Skipped ${plural(skipped, "file")} in the folder that ${skipped === 1 ? "is" : "are"} not audio.`);
    if (audio.length > 1 && twins.length) {
      notes.push(`${plural(twins.length, "file")} ${twins.length === 1 ? "is" : "are"} the same as one already open, so listed once: ${twins.join("; ")}.`);
    }
    if (audio.length > 1 && warnings.length) notes.push(warnings.join(" "));
    if (notes.length) note(notes.join(" "));
    if (failures.length === 1 && audio.length === 1) throw failures[0];
    if (failures.length) {
      throw new UserError(`${failures.length} of ${audio.length} files could not be opened:\n` +
        failures.map((f) => f.message).join("\n"), failures.map((f) => f.details).filter(Boolean).join("\n") || null);
    }
  });
}

async function openOne({ file, path }, counter = "", twins = [], warnings = []) {
  const shown = path || file.name;
  setStatus(`Reading ${counter}${shown}…`);
  const hash = await fingerprint(file);
  const twin = findTwin(hash);
  if (twin) {
    twins.push(twin.label !== shown ? `${shown} (as ${twin.label})` : shown);
    // The same file again: no twin in the list; it is shown (and scored, if it was only fit material). Opened
    // from a folder this time, it is named by its path from now on.
    if (path && !twin.path) relabel(twin, path);
    if (!state.clips.includes(twin) || !twin.result) await scoreClip(twin);
    else showClip(twin);
    setStatus(`${shown} is already open${twin.label !== shown ? ` as ${twin.label}` : ""}: showing it.`);
    return twin;
  }
  setStatus(`Decoding ${counter}${shown}…`);
  const audio = await readAudio(file, file.name);
  if (audio.notice) warnings.push(audio.notice);
  noteChannels(audio.channels);
  const clip = newClip({ name: file.name, path, hash, blob: file, kind: "file", ...audio });
  return scoreClip(clip);
}

async function openDemo(which) {
  const url = DEMOS[which];
  await action(url.split("/").pop(), async () => {
    setStatus(`Loading the demo clip ${url}…`);
    const res = await fetch(url).catch(() => null);
    if (!res || !res.ok) throw new UserError(`The demo clip ${url} is not on this server.`);
    const blob = await res.blob();
    const name = url.split("/").pop();
    const hash = await fingerprint(blob);
    const twin = findTwin(hash);
    if (twin && state.clips.includes(twin) && twin.result) {
      showClip(twin);
      setStatus(`${name} is already open${twin.label !== name ? ` as ${twin.label}` : ""}: showing it.`);
      return;
    }
    const audio = await readAudio(blob, name);
    await scoreClip(twin || newClip({ name, hash, blob, kind: "demo", ...audio }));
  });
}

function resultOf(r) {
  return {
    score: r.score,
    threshold: r.threshold,
    segmentThreshold: r.segmentThreshold,
    units: r.units ?? "distance",
    displayFloor: r.displayFloor ?? null,
    displayCeiling: r.displayCeiling ?? null,
    members: r.members ?? [],
    series: Series.fromResult(r),
    // The core's segments at the bank's thresholds, and the curve it found them on (a long file's at full
    // resolution; its `series` is pooled over time for drawing), for those of another threshold.
    segments: r.segments,
    segmentCurve: r.fullCurve ?? r.curve,
    segmentHopS: r.fullHopS ?? r.hopS,
    durationS: r.durationS ?? null,
    bandLimitHz: r.bandLimitHz ?? null,
    outOfDistribution: r.outOfDistribution ?? null,
    bankSerial: r.bankSerial,
  };
}

// Scores a clip with the bank in use. `show`: make it the clip on screen and say so on the status line (a
// background rescore of another clip does neither).
async function scoreClip(clip, { show = true } = {}) {
  if (!state.bank) {
    throw new UserError("No bank is loaded: open a bank file, or fit one from normal sound below.", null, "no-bank");
  }
  const length = clip.duration != null ? `${clip.duration.toFixed(1)} s at ` : "";
  if (show) setStatus(`Scoring ${clip.label} (${length}${clip.sampleRate} Hz)…`);
  // A long file has no samples here: the worker reads it again and scores it as a stream, in bounded memory.
  const samples = clip.samples ? clip.samples.slice() : null;
  let r;
  try {
    const onProgress = show ? progressHandler : null;
    r = await (samples
      ? engine.call("score", { samples, sampleRate: clip.sampleRate }, [samples.buffer], onProgress)
      : engine.call("scoreFile", { file: clip.file, channel: clip.channel === "mix" ? -1 : clip.channel }, [], onProgress));
  } catch (e) {
    throw scoreError(clip.label, e);
  }
  if (!samples) {
    clip.duration = r.durationS;
    if (r.warnings?.length) clip.notice = r.warnings.map((w) => `Warning: ${w}`).join(". ");
  }
  clip.result = resultOf(r);
  clip.elapsedMs = r.elapsedMs; // scoring time in the worker
  clip.rescoreError = null;
  if (!state.clips.includes(clip)) state.clips.push(clip);
  // Offered once as fit material (unticked); a rescore does not bring back what "Clear" took away.
  if (!clip.offered && !state.fitMaterial.some((m) => m.clip === clip)) addFitMaterial(clip, false);
  clip.offered = true;
  updateSlider();
  if (show || state.current === clip) showClip(clip);
  else renderClipList();
  if (show) {
    const streamed = samples ? "" : " (streamed: too long to keep in memory, no playback)";
    setStatus(`Scored ${clip.label} in ${(r.elapsedMs / 1000).toFixed(2)} s${streamed}.${clip.notice ? ` ${clip.notice}` : ""}`);
    if (state.timings.firstHeatmapMs == null) state.timings.firstHeatmapMs = performance.now();
  }
  return clip;
}

// Rescores, one after another, every clip scored with a bank no longer in use (the clip on screen first).
let rescoring = null;
function rescoreAll() {
  if (!rescoring) rescoring = rescoreLoop().finally(() => (rescoring = null));
  return rescoring;
}

async function rescoreLoop() {
  let done = 0;
  state.rescoring = true;
  for (;;) {
    if (!state.bank || !state.ready) break;
    const stale = state.clips.filter((c) => (c.samples || c.file) && !isFresh(c) &&
      !(c.rescoreError && c.rescoreError.serial === state.bankSerial) &&
      !(c.kind === "recording" && state.rec && state.rec.running));
    if (!stale.length) break;
    const c = stale.includes(state.current) ? state.current : stale[0];
    if (!state.busy) setStatus(`Rescoring ${plural(stale.length, "clip")} with ${theBank(state.bankName)}…`);
    try {
      await scoreClip(c, { show: false });
      done++;
    } catch (e) {
      c.rescoreError = { serial: state.bankSerial, text: asUserError(e).message };
      if (state.current === c) showClip(c);
      renderClipList();
    }
  }
  state.rescoring = false;
  if (done && !state.busy) setStatus(`Rescored ${plural(done, "clip")} with ${theBank(state.bankName)}.`);
}

function showClip(clip) {
  state.current = clip;
  $("clip-name").textContent = clip.label;
  $("clip-name").title = clip.path || clip.name || "";
  showDetails(clip);
  const fresh = isFresh(clip);
  const levels = thresholdsOf(fresh ? clip.result : state.bank);
  const segs = fresh ? segmentsOf(clip.result) : [];
  figure.showClip(clip.result.series, levels, segs || [], !fresh);
  showVerdict(clip, segs);
  renderClipList();
}

// One line under the clip's name: length, rate, channels, the band judged, and which file it is.
function showDetails(clip) {
  const parts = [`${fmtDuration(clip.duration)} at ${clip.sampleRate} Hz`];
  if (clip.channels > 1) {
    parts.push(clip.channel === "mix"
      ? `${clip.channels} channels mixed to mono (their average; choose one channel under Listen)`
      : `channel ${clip.channel + 1} of ${clip.channels}`);
  } else if (clip.channels === 1) parts.push("mono");
  const limit = clip.result && (clip.result.bandLimitHz || clip.result.series.bandLimitHz);
  const modelNyquist = state.model ? state.model.sampleRate / 2 : Infinity;
  if (limit && limit < modelNyquist * 0.999) {
    const why = clip.sampleRate / 2 <= limit * 1.001
      ? `the clip is sampled at ${fmtHz(clip.sampleRate)}`
      : "the bank's normal clips had nothing above it";
    parts.push(`judged up to ${fmtHz(limit)} (${why}; higher bands are not shown)`);
  }
  const members = clip.result && clip.result.members;
  if (members && members.length > 1 && isFresh(clip)) {
    const z = clip.result.units === "z" ? " z" : "";
    parts.push(`members: ${members.map((m) => `${m.name} ${m.score.toFixed(2)}${z}`).join(", ")}`);
  }
  if (clip.label !== clip.baseLabel) {
    parts.push(`another file named ${clip.baseLabel} is open too${clip.blob && clip.blob.size ? ` (this one: ${fmtBytes(clip.blob.size)}` +
      (clip.blob.lastModified ? `, modified ${new Date(clip.blob.lastModified).toLocaleString()})` : ")") : ""}; ` +
      "open their folder (Open a folder…) to see where each comes from");
  }
  $("clip-details").textContent = parts.join(" · ");
}

// The verdict for the clip on screen (only for a result of the bank in use), or for the live recording.
function showVerdict(clip, segments, live = null) {
  const v = $("verdict");
  const r = live || (clip && clip.result);
  const fresh = live ? true : isFresh(clip);
  const { thr } = thresholdsOf(live ? state.bank : r);
  const stale = $("stale-note");
  if (!r || r.score == null || thr == null || !fresh) {
    v.textContent = "";
    v.className = "verdict";
    $("clip-score").textContent = "";
    $("score-units").textContent = "";
  } else {
    const anomalous = r.score > thr;
    v.textContent = anomalous ? "anomalous" : "normal";
    v.className = `verdict ${v.textContent}`;
    const units = live ? state.bank && state.bank.units : r.units;
    $("clip-score").textContent = units === "z" ? r.score.toFixed(2) : r.score.toFixed(4);
    $("score-units").textContent = units === "z" ? "z" : "";
  }
  if (clip && clip.result && !fresh) {
    stale.hidden = false;
    stale.textContent = !state.bank
      ? "Not judged: no bank is loaded."
      : clip.rescoreError && clip.rescoreError.serial === state.bankSerial
        ? `Not judged: it could not be rescored with ${theBank(state.bankName)}: ${clip.rescoreError.text}`
        : `Scored with a bank no longer in use: rescoring it with ${theBank(state.bankName)}…`;
  } else stale.hidden = true;
  const ood = $("ood");
  const oodText = fresh && r && r.outOfDistribution;
  ood.hidden = !oodText;
  ood.textContent = oodText ? sentence(oodText) : "";
  const list = $("segments");
  list.replaceChildren();
  for (const s of segments || []) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `${s.startS.toFixed(2)}–${s.endS.toFixed(2)} s`;
    b.title = "Play this part";
    b.onclick = () => playCurrent(s.startS, s.endS);
    const units = (live ? state.bank && state.bank.units : r && r.units) || "distance";
    li.append(b, ` peak ${units === "z" ? `${s.peak.toFixed(2)} z` : s.peak.toFixed(3)}`);
    list.append(li);
  }
  $("no-segments").hidden = (segments || []).length > 0;
  // A clip not judged by the bank in use (stale, rescoring, or no bank) has no segments to speak of.
  $("no-segments").textContent = !(fresh || live) ? "Not judged with the bank in use yet."
    : segments == null ? "Finding the segments above the threshold…" : "None above the threshold.";
}

function renderClipList() {
  const ul = $("clips");
  ul.replaceChildren();
  for (const c of state.clips) {
    if (!c.result) continue;
    const li = document.createElement("li");
    li.dataset.testid = "clip-item";
    li.dataset.label = c.label;
    if (c === state.current) li.className = "current";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c.label;
    b.title = [c.path || c.name, c.blob && c.blob.size ? fmtBytes(c.blob.size) : ""].filter(Boolean).join(", ");
    b.onclick = () => showClip(c);
    const tag = document.createElement("span");
    if (isFresh(c)) {
      const anomalous = c.result.score > thresholdsOf(c.result).thr;
      tag.className = `tag ${anomalous ? "anomalous" : "normal"}`;
      tag.textContent = `${fmtScore(c.result.score, c.result.units)} ${anomalous ? "anomalous" : "normal"}`;
      li.dataset.fresh = "1";
      li.dataset.score = String(c.result.score);
      li.dataset.verdict = anomalous ? "anomalous" : "normal";
      li.append(b, tag);
      if (c.result.outOfDistribution) {
        const o = document.createElement("span");
        o.className = "tag ood";
        o.textContent = "other sound?";
        o.title = c.result.outOfDistribution;
        li.append(o);
      }
    } else {
      tag.className = "tag stale";
      tag.textContent = !state.bank ? "not judged: no bank"
        : c.rescoreError && c.rescoreError.serial === state.bankSerial ? "could not be rescored" : "rescoring…";
      li.dataset.fresh = "0";
      li.append(b, tag);
    }
    ul.append(li);
  }
}

$("opacity").oninput = (ev) => {
  $("heatmap").style.opacity = ev.target.value;
};
$("colour-map").onchange = (ev) => figure.setColourMap(ev.target.value);
$("file-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await openFiles(files.map((file) => ({ file, path: "" })));
};
$("folder-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  const items = files.map((file) => ({ file, path: file.webkitRelativePath || "" }));
  items.sort((a, b) => a.path.localeCompare(b.path));
  await openFiles(items, true);
};
$("demo-normal").onclick = () => openDemo("normal");
$("demo-abnormal").onclick = () => openDemo("abnormal");

// ---- channels -----------------------------------------------------------------------------------------------

function fillChannels(n) {
  const sel = $("channel");
  for (let c = sel.options.length - 1; c < n; c++) sel.add(new Option(`channel ${c + 1} only`, String(c)));
}

function noteChannels(n) {
  if (n > 1) fillChannels(n);
}

// A new choice applies to files opened next, and to the clip shown if it has several channels (decoded again
// from its file and rescored).
$("channel").onchange = async (ev) => {
  state.channel = ev.target.value === "mix" ? "mix" : Number(ev.target.value);
  const c = state.current;
  if (!c || !(c.channels > 1) || !c.blob || c.channel === state.channel) return;
  await action(c.label, async () => {
    setStatus(`Decoding ${c.label} again (${state.channel === "mix" ? "all channels mixed" : `channel ${state.channel + 1}`})…`);
    const audio = await readAudio(c.blob, c.name);
    const before = { samples: c.samples, channel: c.channel, result: c.result };
    Object.assign(c, audio);
    try {
      await scoreClip(c);
    } catch (e) {
      Object.assign(c, before);
      showClip(c);
      throw e;
    }
  });
};

function playCurrent(fromS, toS) {
  const c = state.current;
  if (!c || !c.samples) return;
  player.play(c.samples, c.sampleRate, fromS, toS);
}

$("plot").onclick = (ev) => {
  if (!state.current || state.rec?.running) return;
  if (player.playing) {
    player.stop();
    return;
  }
  playCurrent(figure.timeAt(ev.clientX));
};

window.addEventListener("resize", () => figure.draw());

// ---- drag and drop ------------------------------------------------------------------------------------------

let dragDepth = 0;
document.addEventListener("dragenter", (ev) => {
  if (!ev.dataTransfer?.types?.includes("Files")) return;
  dragDepth++;
  $("drop-overlay").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) $("drop-overlay").hidden = true;
});
document.addEventListener("dragover", (ev) => ev.preventDefault());

// Dropped files, with their paths when a folder was dropped ({file, path}); folders are walked.
function droppedItems(dt) {
  // Entries must be taken while the event runs; their contents are read afterwards.
  const entries = [...(dt.items || [])].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean);
  const files = [...(dt.files || [])];
  if (!entries.some((e) => e.isDirectory)) return Promise.resolve({ items: files.map((file) => ({ file, path: "" })), folder: false });
  return (async () => {
    const items = [];
    for (const e of entries) await walk(e, items);
    items.sort((a, b) => a.path.localeCompare(b.path));
    return { items, folder: true };
  })();
}

async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, path: entry.fullPath.replace(/^\//, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const e of batch) await walk(e, out);
    }
  }
}

for (const el of document.querySelectorAll('input[name="fit-preset"]')) el.onchange = () => renderFitList();

document.addEventListener("drop", async (ev) => {
  ev.preventDefault();
  dragDepth = 0;
  $("drop-overlay").hidden = true;
  if (!ev.dataTransfer) return;
  const { items, folder } = await droppedItems(ev.dataTransfer);
  if (!items.length) return;
  const isBank = (it) => /\.(bank|safetensors)$/i.test(it.file.name);
  const hasOnnx = items.some((it) => /\.onnx$/i.test(it.file.name));
  const isModel = (it) => hasOnnx && /\.(onnx|json)$/i.test(it.file.name);
  const banks = items.filter(isBank);
  const model = items.filter(isModel);
  const audio = items.filter((it) => !isBank(it) && !isModel(it));
  if (model.length) await loadModelFiles(model.map((it) => it.file));
  if (banks.length) await loadBankFile(banks[0].file);
  if (audio.length) await openFiles(audio, folder);
});

// ---- recording ----------------------------------------------------------------------------------------------

function micError(e) {
  if (!window.isSecureContext) return "The microphone only works on https:// or http://localhost pages.";
  switch (e && e.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow it in the browser's site settings, then press Record again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then press Record again.";
    case "NotReadableError":
      return "The microphone is busy or could not be opened (another program may be using it).";
    default:
      return "The microphone could not be started.";
  }
}

// One recording: one or more takes (Record ... Stop, Resume ... Stop), each a stream in the core.
function newRecording(sampleRate) {
  return {
    running: false,
    ctx: null,
    stream: null,
    node: null,
    sampleRate,
    chunks: [],
    length: 0,
    series: null,
    frameOffset: 0,
    score: null,
    updates: 0,
    audioS: 0,
    computeMs: 0,
    maxPushMs: 0,
    inFlight: 0,
    takeUpdates: 0, // stretches judged in the take running
    takeStartFrames: 0,
    firstJudgedS: null, // seconds recorded when the first stretch was judged
    timing: { first: 0, every: 0 },
    clip: null,
    takes: 0,
    serials: new Set(), // the banks its takes were scored with
  };
}

$("record-button").onclick = () => (state.rec?.running ? stopRecording() : startRecording());
$("new-recording").onclick = () => {
  if (state.rec?.running) return;
  state.rec = null;
  $("new-recording").hidden = true;
  $("record-button").textContent = "● Record";
  $("rec-info").textContent = "";
  updateButtons();
};

// The live stream belongs to the bank it was started with: a bank or model change ends the take first.
async function stopRecordingIfRunning() {
  if (state.rec && state.rec.running) await stopRecording();
}

async function startRecording() {
  clearError();
  note(null);
  if (!state.bank) {
    fail(new UserError("No bank is loaded: open a bank file, or fit one from normal sound below, then record.", null, "no-bank"));
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    fail(new UserError(micError(null)));
    return;
  }
  player.stop();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
  } catch (e) {
    fail(new UserError(micError(e), e && e.message));
    return;
  }
  try {
    const ctx = new AudioContext(); // the device's own rate; the core resamples
    if (ctx.state === "suspended") await ctx.resume();
    await ctx.audioWorklet.addModule(new URL("./recorder-worklet.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "sonomaly-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
      processorOptions: { blockSize: 4096, skip: Math.round(SETTLE_S * ctx.sampleRate) },
    });
    const src = ctx.createMediaStreamSource(stream);
    const mute = ctx.createGain();
    mute.gain.value = 0;
    src.connect(node).connect(mute).connect(ctx.destination);

    let rec = state.rec;
    if (!rec || rec.sampleRate !== ctx.sampleRate) {
      rec = newRecording(ctx.sampleRate);
      state.rec = rec;
    }
    rec.ctx = ctx;
    rec.stream = stream;
    rec.node = node;
    rec.running = true;
    rec.takes++;
    rec.takeUpdates = 0;
    rec.frameOffset = rec.series ? rec.series.frames : 0;
    const started = await engine.call("streamStart", { sampleRate: ctx.sampleRate });
    rec.serials.add(started.serial);
    if (!rec.series) {
      const m = state.model;
      const limit = Math.min(state.bank.bandLimitHz || Infinity, ctx.sampleRate / 2);
      rec.series = new Series(m.melBins, m.hopS, m.melHz, limit);
      rec.clip = { id: ++clipSeq, name: "recording", baseLabel: "recording", label: "recording", kind: "recording", samples: null, sampleRate: ctx.sampleRate, channels: 1, channel: "mix", result: null };
    }
    rec.series.durationS = null;
    state.current = null;
    const timing = liveTiming();
    rec.timing = timing;
    rec.takeStartFrames = rec.series.frames;
    $("clip-name").textContent = `Recording at ${ctx.sampleRate} Hz…`;
    $("clip-details").textContent = `The spectrogram shows the sound as it arrives; the model judges it in windows ` +
      `of ${fmtS(state.model.windowS)}: the first judgement needs about ${fmtS(timing.first)} of sound, then one ` +
      `comes every ${fmtS(timing.every)}.`;
    showVerdict(null, [], null);
    showLiveUpdates(rec);
    figure.showLive(rec.series, thresholdsOf(state.bank), Math.max(LIVE_SPAN_S, 2 * timing.first));
    node.port.onmessage = (ev) => onAudio(rec, ev.data);
    $("record-button").textContent = "■ Stop";
    $("record-button").classList.add("on");
    setStatus(`Recording from the microphone at ${ctx.sampleRate} Hz; the first judgement comes after about ` +
      `${fmtS(timing.first)} of sound, then every ${fmtS(timing.every)}.`);
    updateButtons();
  } catch (e) {
    stream.getTracks().forEach((t) => t.stop());
    if (state.rec) state.rec.running = false;
    fail(asUserError(e, "Recording could not start: "));
    updateButtons();
  }
}

function onAudio(rec, data) {
  if (data === "flushed") {
    rec.flushed?.();
    return;
  }
  rec.chunks.push(data);
  rec.length += data.length;
  const audioS = data.length / rec.sampleRate;
  const samples = data.slice();
  rec.inFlight++;
  engine.call("streamPush", { samples }, [samples.buffer])
    .then((r) => {
      rec.inFlight--;
      rec.computeMs += r.elapsedMs;
      rec.maxPushMs = Math.max(rec.maxPushMs, r.elapsedMs);
      rec.audioS += audioS;
      if (r.logmel && r.logmel.frames > 0) {
        rec.series.writeLogmel(rec.frameOffset + r.logmel.startFrame, r.logmel.frames, r.logmel.logmel);
      }
      applyUpdates(rec, r.updates);
    })
    .catch((e) => {
      rec.inFlight--;
      if (!rec.running) return; // pushes that were in flight when the take ended
      fail(asUserError(e, "Live scoring stopped: "));
      stopRecording();
    });
  showRecInfo(rec);
}

// Draws what a block brought (the log-mel of new frames, and the stretches judged, if any): at most once per
// animation frame.
function applyUpdates(rec, updates) {
  for (const u of updates || []) {
    rec.series.write(rec.frameOffset + u.startFrame, u.frames, u.logmel, u.map, u.curve);
    rec.score = rec.score == null ? u.score : Math.max(rec.score, u.score);
    rec.updates++;
    rec.takeUpdates++;
    if (rec.firstJudgedS == null) rec.firstJudgedS = rec.length / rec.sampleRate;
  }
  if (state.current == null || state.current === rec.clip) {
    if (updates && updates.length) {
      rec.judged = rec.series.judged;
      rec.segmentCurve = rec.series.curve;
      rec.segmentHopS = rec.series.hopS;
      // The segments come from the core (segmentsOf asks for them; they are drawn when they come); until then the
      // ones of the stretch judged before stay on screen.
      const segs = segmentsOf(rec);
      if (segs) figure.segments = segs;
      showVerdict(null, segs ?? figure.segments, { score: rec.score });
      if (state.timings.firstHeatmapMs == null) state.timings.firstHeatmapMs = performance.now();
    }
    showLiveUpdates(rec);
    scheduleLiveDraw();
  }
  showRecInfo(rec);
}

let liveDrawPending = false;
function scheduleLiveDraw() {
  if (liveDrawPending) return;
  liveDrawPending = true;
  requestAnimationFrame(() => {
    liveDrawPending = false;
    figure.follow();
    figure.draw();
  });
}

// The line beside the verdict while recording: how many stretches are judged, or how long until the first.
function showLiveUpdates(rec) {
  const lu = $("live-updates");
  lu.dataset.count = String(rec.updates);
  const heard = (rec.series ? rec.series.frames - rec.takeStartFrames : 0) * state.model.hopS;
  if (rec.running && rec.takeUpdates === 0) {
    const left = Math.max(0, rec.timing.first - heard);
    lu.textContent = `first judgement in about ${Math.ceil(left)} s (it needs ${fmtS(rec.timing.first)} of sound)`;
    figure.pendingText = `not judged yet: the first judgement needs about ${fmtS(rec.timing.first)} of sound`;
  } else {
    figure.pendingText = `not judged yet: a stretch is judged every ${fmtS(rec.timing.every)}, once the window after it has begun`;
    const judged = rec.series ? rec.series.judged * state.model.hopS : 0;
    lu.textContent = `${rec.updates} live update${rec.updates === 1 ? "" : "s"} · judged up to ${judged.toFixed(1)} s`;
  }
}

function showRecInfo(rec) {
  const dur = rec.length / rec.sampleRate;
  const rtf = rec.audioS > 0 ? rec.computeMs / 1000 / rec.audioS : null;
  $("rec-info").textContent = `${dur.toFixed(1)} s recorded` +
    (rtf != null ? ` · real-time factor ${rtf.toFixed(2)}${rtf < 1 ? " (keeps up)" : " (falling behind)"}` : "") +
    (rec.inFlight > 3 ? ` · ${rec.inFlight} blocks waiting` : "");
  $("rec-info").title = "real-time factor: the analysis's compute time over the audio's length (below 1 keeps up); " +
    `the longest block took ${(rec.maxPushMs / 1000).toFixed(2)} s (a block that completes a window judges it)`;
  $("rec-info").dataset.rtf = rtf == null ? "" : rtf.toFixed(3);
  $("rec-info").dataset.maxPushMs = rec.maxPushMs.toFixed(1);
}

async function stopRecording() {
  const rec = state.rec;
  if (!rec || !rec.running) return;
  rec.running = false;
  $("record-button").disabled = true;
  // Take the last samples out of the worklet before closing.
  await new Promise((resolve) => {
    rec.flushed = resolve;
    rec.node.port.postMessage("flush");
    setTimeout(resolve, 500);
  });
  rec.stream.getTracks().forEach((t) => t.stop());
  await rec.ctx.close().catch(() => {});
  try {
    const r = await engine.call("streamFinish");
    applyUpdates(rec, r.updates);
  } catch (e) {
    fail(asUserError(e, "The end of the recording could not be scored: "));
  }
  // The whole recording becomes a clip: playable, listed, usable as normal material, rescored like any clip
  // when the bank changes.
  const all = new Float32Array(rec.length);
  let o = 0;
  for (const c of rec.chunks) {
    all.set(c, o);
    o += c.length;
  }
  const clip = rec.clip;
  clip.name = `recording ${rec.takes > 1 ? `(${rec.takes} takes) ` : ""}${(rec.length / rec.sampleRate).toFixed(1)} s`;
  clip.label = clip.name;
  clip.baseLabel = clip.name;
  clip.samples = all;
  clip.sampleRate = rec.sampleRate;
  clip.duration = all.length / rec.sampleRate;
  rec.series.durationS = clip.duration;
  // One bank for every take: the live result stands; takes with different banks: rescored as a whole.
  const serial = rec.serials.size === 1 ? [...rec.serials][0] : -1;
  const b = state.bank || {};
  clip.result = rec.score == null ? null : {
    score: rec.score,
    threshold: b.threshold ?? null,
    segmentThreshold: b.segmentThreshold ?? null,
    units: b.units ?? "distance",
    displayFloor: b.displayFloor ?? null,
    displayCeiling: b.displayCeiling ?? null,
    members: [],
    series: rec.series,
    segments: null, // asked of the core (segmentsOf) for the whole recording
    segmentCurve: rec.series.curve.slice(0, rec.series.judged),
    segmentHopS: rec.series.hopS,
    durationS: clip.duration,
    bandLimitHz: rec.series.bandLimitHz,
    outOfDistribution: null,
    bankSerial: serial,
  };
  if (clip.result && !state.clips.includes(clip)) state.clips.push(clip);
  const mat = state.fitMaterial.find((m) => m.clip === clip);
  if (mat) mat.duration = clip.duration;
  renderFitList();
  updateSlider();
  if (clip.result) showClip(clip);
  $("record-button").textContent = "● Resume";
  $("record-button").classList.remove("on");
  $("record-button").disabled = false;
  $("new-recording").hidden = false;
  const rtf = rec.audioS > 0 ? rec.computeMs / 1000 / rec.audioS : 0;
  setStatus(`Recording stopped: ${clip.duration.toFixed(1)} s, real-time factor ${rtf.toFixed(2)}.`);
  updateButtons();
  rescoreAll();
}

$("save-wav").onclick = () => {
  const rec = state.rec;
  if (!rec || !rec.clip?.samples) return;
  download(encodeWav(rec.clip.samples, rec.sampleRate), `sonomaly-recording-${new Date().toISOString().replace(/[:.]/g, "-")}.wav`);
};

// ---- fitting ------------------------------------------------------------------------------------------------

let matSeq = 0;
function addFitMaterial(clip, use) {
  state.fitMaterial.push({ id: ++matSeq, clip, use: use && !tooShort(clip) });
  renderFitList();
}

// Shorter than the core can score or learn from.
function tooShort(clip) {
  return !!(state.model && clip.duration != null && clip.duration < state.model.minSeconds);
}

function chosenMaterial() {
  return state.fitMaterial.filter((m) => m.use && m.clip.samples && !tooShort(m.clip));
}

function renderFitList() {
  const ul = $("fit-list");
  ul.replaceChildren();
  for (const m of state.fitMaterial) {
    if (!m.clip.samples) continue;
    const short = tooShort(m.clip);
    const li = document.createElement("li");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = m.use && !short;
    cb.disabled = short;
    cb.id = `mat-${m.id}`;
    cb.onchange = () => {
      m.use = cb.checked;
      renderFitList();
    };
    const label = document.createElement("label");
    label.htmlFor = cb.id;
    label.textContent = `${m.clip.label} (${m.clip.duration.toFixed(1)} s)`;
    li.append(cb, label);
    if (short) {
      const n = document.createElement("span");
      n.className = "note";
      n.textContent = `too short to learn from: at least ${state.model.minSeconds.toFixed(2)} s is needed`;
      li.append(n);
    }
    ul.append(li);
  }
  const chosen = chosenMaterial();
  const n = chosen.length;
  const secs = chosen.reduce((s, m) => s + m.clip.duration, 0);
  $("fit-summary").textContent = state.fitMaterial.length === 0
    ? "No normal material yet."
    : `${plural(n, "clip")} ticked as normal, ${fmtDuration(secs)}.`;
  const w = $("fit-warning");
  w.hidden = !(n > 0 && roughFit(n, secs));
  w.dataset.reason = tooLittle() ? "too-little" : w.hidden ? "" : "rough";
  w.textContent = w.hidden ? "" : tooLittle()
    ? `One clip of ${fmtDuration(secs)} is too little to set a threshold: a fit needs at least ` +
      `${minFitSeconds().toFixed(1)} s in one clip, or two clips or more. Tick another clip of normal sound.`
    : `With ${plural(n, "clip")} and ${fmtDuration(secs)} of normal sound the threshold ` +
      `will be rough: the share of normal clips flagged at it varies widely with the clips chosen. ` +
      `${state.model.steadyClips} or more clips, ${state.model.steadySeconds} s or more in all, give a threshold ` +
      "that holds.";
  updateButtons();
}

// One ticked clip shorter than two analysis windows: the core cannot hold out a part of it to set the threshold.
function tooLittle() {
  const chosen = chosenMaterial();
  return chosen.length === 1 && chosen[0].clip.duration < minFitSeconds() - 1e-6;
}

function fitPreset() {
  const el = document.querySelector('input[name="fit-preset"]:checked');
  return el ? el.value : "both";
}

// The detector chosen in the fit panel (a name of DetectorConfig::KINDS).
function fitDetector() {
  const el = document.querySelector('input[name="fit-detector"]:checked');
  return el ? el.value : "patchcore";
}

// Normal material from files: decoded, ticked; a file already open is ticked rather than added twice.
async function addNormalFiles(items) {
  await action(items.length === 1 ? `normal material ${items[0].path || items[0].file.name}` : plural(items.length, "normal file"), async () => {
    const failures = [];
    const warnings = [];
    for (const [i, { file, path }] of items.entries()) {
      const shown = path || file.name;
      setStatus(`Reading normal material ${i + 1} of ${items.length}: ${shown}…`);
      showProgress(i, items.length);
      try {
        const hash = await fingerprint(file);
        const twin = findTwin(hash);
        if (twin) {
          const m = state.fitMaterial.find((x) => x.clip === twin);
          if (m) m.use = !tooShort(twin);
          else addFitMaterial(twin, true);
          continue;
        }
        const audio = await readAudio(file, file.name);
        if (audio.notice) warnings.push(audio.notice);
        if (!audio.samples) {
          throw new UserError(`${shown} is longer than 10 minutes: fit on shorter clips (the command line fits on files of any length).`);
        }
        noteChannels(audio.channels);
        addFitMaterial(newClip({ name: file.name, path, hash, blob: file, kind: "file", ...audio }), true);
      } catch (e) {
        failures.push(asUserError(e));
      }
    }
    renderFitList();
    setStatus(`Added ${plural(items.length - failures.length, "normal file")}.`);
    if (warnings.length) note(warnings.join(" "));
    if (failures.length) {
      throw new UserError(`${failures.length} of ${items.length} files could not be added:\n` +
        failures.map((f) => f.message).join("\n"), failures.map((f) => f.details).filter(Boolean).join("\n") || null);
    }
  });
}

$("fit-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await addNormalFiles(files.map((file) => ({ file, path: file.webkitRelativePath || "" })));
};

$("fit-add-recording").onclick = () => {
  const clip = state.rec?.clip;
  if (!clip || !clip.samples) return;
  const m = state.fitMaterial.find((x) => x.clip === clip);
  if (m) m.use = !tooShort(clip);
  else addFitMaterial(clip, true);
  renderFitList();
};

$("fit-clear").onclick = () => {
  state.fitMaterial = [];
  renderFitList();
};

// Cancel stops the fit at any step within a second: between clips the worker stops by itself; inside a step (a
// clip's patches, the memory bank and the threshold) engine.js terminates it and starts a fresh one with the same
// model and bank, and the page says so.
let fitStep = null; // the fit's last progress text
$("fit-cancel").onclick = async () => {
  const id = state.fitJob;
  if (id == null) return;
  state.lastCancel = { step: fitStep, askedAt: performance.now(), stoppedAt: null, restarted: null, restoredAt: null };
  $("fit-cancel").disabled = true;
  setStatus("Cancelling the fit…");
  const r = await engine.cancel(id);
  if (r) state.lastCancel.restarted = r.restarted;
};

$("fit-button").onclick = () =>
  action("the fit", async () => {
    await stopRecordingIfRunning();
    const chosen = chosenMaterial();
    if (!chosen.length) throw new UserError("Tick at least one clip of normal sound to fit a bank.");
    const secs = chosen.reduce((s, m) => s + m.clip.duration, 0);
    if (tooLittle()) throw new UserError($("fit-warning").textContent);
    $("fit-result").hidden = true;
    // The samples are the clips' own, neither copied here nor transferred (they stay the user's material): the
    // pool copies each clip as a worker takes it, and a fit on one worker is sent a copy by postMessage.
    const clips = chosen.map((m) => ({ name: m.clip.label, samples: m.clip.samples, sampleRate: m.clip.sampleRate }));
    const name = `fitted bank (${new Date().toLocaleString()})`;
    const layers = $("fit-layers").value.trim();
    const preset = fitPreset();
    const detector = fitDetector();
    $("fit-cancel").hidden = false;
    $("fit-cancel").disabled = false;
    const bar = $("fit-progress");
    bar.hidden = false;
    bar.value = 0;
    fitStep = null;
    try {
      const job = engine.call("fit", { clips, name, preset, layers, detector }, [], (msg) => {
        fitStep = msg.text;
        if (!$("fit-cancel").disabled) setStatus(msg.text);
        bar.value = msg.total ? msg.done / msg.total : 0;
      });
      state.fitJob = job.id;
      const r = await job.catch((e) => {
        // Cancel is what the user asked for, not an error: said on the status line and in a notice, not in the
        // red box.
        if (e.cancelled) {
          if (state.lastCancel) {
            state.lastCancel.stoppedAt = performance.now();
            state.lastCancel.restarted = e.restarted;
          }
          const kept = state.bank ? `${theBank(state.bankName)} is still in use` : "no bank is loaded, as before";
          const text = e.restarted
            ? `Fitting was cancelled: the step it was in (${stepName(fitStep)}) runs in one piece, so the analysis ` +
              `engine was stopped and is being started again with the same model and bank. The bank in use has not ` +
              `changed: ${kept}. Anything asked for meanwhile runs once it is ready.`
            : `Fitting was cancelled; the bank in use has not changed: ${kept}.`;
          setStatus(e.restarted ? "Fitting was cancelled: restarting the analysis engine with the same model and bank…"
            : "Fitting was cancelled; the bank in use has not changed.");
          note(text, true);
          return null;
        }
        throw fitError(e, e.clip);
      });
      if (!r) return;
      state.fitted = { bytes: r.bytes, name: r.name, fileName: bankFileName(r.name, r.info) };
      setBank(r.info, r.name, r.serial);
      await saveLastBank(r.bytes, r.name).catch((e) => console.warn("sonomaly: could not keep the bank", e));
      $("last-bank").hidden = false;
      const what = `${layers ? `layers ${layers}` : `preset ${preset}`}${detector === "patchcore" ? "" : `, detector ${detector}`}`;
      const done = `Fitted a bank (${what}) on ` +
        `${plural(chosen.length, "clip")} (${fmtDuration(secs)}) in ${(r.elapsedMs / 1000).toFixed(1)} s; it is now in ` +
        "use and kept in this browser.";
      setStatus(done);
      $("fit-result").textContent = done;
      $("fit-result").hidden = false;
      if (r.info.thresholdNote) note(`The new bank's ${sentence(r.info.thresholdNote).replace(/^The /, "")}`);
    } finally {
      state.fitJob = null;
      $("fit-cancel").hidden = true;
      bar.hidden = true;
    }
  });

// "clip 2 of 5 (fan.wav)", "calibrating the threshold and building the memory bank": the step a fit progress
// message names.
function stepName(text) {
  const m = /^Fitting: (.*?)…?$/.exec(text || "");
  return m ? m[1] : "starting";
}

$("fit-download").onclick = () => {
  if (!state.fitted) return;
  download(new Blob([state.fitted.bytes], { type: "application/octet-stream" }), state.fitted.fileName);
};

// ---- buttons ------------------------------------------------------------------------------------------------

function updateButtons() {
  const ready = state.ready && state.model != null;
  const hasBank = state.bank != null;
  const recording = !!state.rec?.running;
  const idle = state.busy === 0;
  $("download-bank").disabled = !hasBank;
  // Before the model is ready these still take input: it waits for the model (see whenReady).
  $("demo-normal").disabled = recording;
  $("demo-abnormal").disabled = recording;
  $("file-input").disabled = recording;
  $("folder-input").disabled = recording;
  $("record-button").disabled = !ready || (!recording && (!idle || state.restarting));
  $("save-wav").disabled = recording || !state.rec?.clip?.samples;
  $("fit-add-recording").disabled = recording || !state.rec?.clip?.samples;
  $("fit-button").disabled = !ready || chosenMaterial().length === 0 || tooLittle() || recording || !idle;
  $("fit-download").disabled = !state.fitted;
}

// The page itself is kept for offline use by a service worker (sw.js; registered once the model is loaded, so
// that its copying does not slow the first start); the model is kept by the analysis worker.
function keepOffline() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("sw.js").catch((e) => console.warn("sonomaly: no offline copy of the page:", e));
}

updateButtons();
start().finally(keepOffline);
