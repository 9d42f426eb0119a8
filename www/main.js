// The page: wires the controls to the worker that hosts the wasm core, and draws what comes back.
// Nothing heavy happens here: decoding (decode.js: the core's decoder in the worker) and everything else is the
// worker's.

import { Figure, Series, COLOUR_MAPS, HEAT_HIGH, HEAT_LOW, heatLegendCss } from "./render.js";
import { encodeWav, Player } from "./audio.js";
import { openAudio } from "./decode.js";
import { loadLastBank, saveLastBank } from "./store.js";

const $ = (id) => document.getElementById(id);
const MODEL_URL = "models/aisfx-cnn14/model.onnx";
const SPEC_URL = "models/aisfx-cnn14/spec.json";
const DEMO_BANK_URL = "demo/fan-demo.bank";
const DEMOS = { normal: "demo/fan-normal.wav", abnormal: "demo/fan-abnormal.wav" };
const LIVE_SPAN_S = 12;
// Seconds dropped at the start of each recording take while the microphone settles (see recorder-worklet.js).
const SETTLE_S = 0.3;

// ---- state ------------------------------------------------------------------------------------------------

const state = {
  model: null, // model info from the core
  bank: null, // bank info from the core
  bankName: null,
  defaultThreshold: null,
  threshold: null,
  clips: [], // {id, name, samples, sampleRate, kind, result: {score, segments, series}}
  current: null,
  fitMaterial: [], // {id, name, samples, sampleRate, use}
  fittedBytes: null,
  busy: 0,
  rec: null,
  timings: { pageStart: performance.timeOrigin, firstHeatmapMs: null, modelReadyMs: null },
};
window.sonomaly = state; // for the curious and for the end-to-end tests

// ---- worker -----------------------------------------------------------------------------------------------

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
let nextId = 1;
const pending = new Map();

function call(type, payload = {}, transfer = [], onProgress = null) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ id, type, ...payload }, transfer);
  });
}

worker.onmessage = (ev) => {
  const msg = ev.data;
  const p = pending.get(msg.id);
  if (msg.type === "progress") {
    if (p && p.onProgress) p.onProgress(msg);
    return;
  }
  if (!p) return;
  pending.delete(msg.id);
  if (msg.ok) p.resolve(msg.result);
  else p.reject(new Error(msg.error));
};

worker.onerror = (ev) => {
  ev.preventDefault();
  const text = "The analysis engine could not start in this browser" + (ev.message ? ` (${ev.message})` : "") +
    ". Use a current Chrome, Edge, Firefox or Safari, and open the page over http://localhost or https.";
  fail(text);
  for (const p of pending.values()) p.reject(new Error(text));
  pending.clear();
};

// ---- status and errors --------------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
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

function fail(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  setStatus(`Error: ${message}`);
  showProgress(null);
}

function clearError() {
  $("error").hidden = true;
}

$("error-close").onclick = clearError;

async function busy(label, fn) {
  clearError();
  state.busy++;
  updateButtons();
  try {
    return await fn();
  } catch (e) {
    console.error(e);
    fail(e.message || String(e));
    return undefined;
  } finally {
    state.busy--;
    showProgress(null);
    updateButtons();
  }
}

// ---- loaded model and bank ----------------------------------------------------------------------------------

function fmtDate(s) {
  if (!s) return "";
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toLocaleString();
}

function fmtDuration(s) {
  if (s == null) return "?";
  return s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`;
}

function showModel(m) {
  state.model = m;
  $("model-info").textContent = `${m.name} (${m.layers.join(", ")}; ${m.licence || "licence not stated"})` +
    (m.cached ? " — from the browser cache" : "");
  $("model-info").title = m.description || "";
  $("frontend-info").textContent = m.frontEnd || "—";
}

function showBank(info, name) {
  state.bank = info;
  state.bankName = info ? name : null;
  if (!info) {
    $("bank-info").textContent = "none — open a bank file, or fit one below";
    $("bank-fit-info").textContent = "—";
    state.defaultThreshold = null;
    state.threshold = null;
  } else {
    $("bank-info").textContent = `${name}: ${info.detector}, memory bank ${info.memoryBank}, threshold ${info.threshold.toFixed(4)}`;
    const parts = [];
    if (info.clips != null) parts.push(`${info.clips} clip${info.clips === 1 ? "" : "s"}`);
    if (info.seconds != null) parts.push(fmtDuration(info.seconds));
    if (info.backbone) parts.push(`backbone ${info.backbone}`);
    if (info.layers) parts.push(`patches from ${info.layers.replace(/,/g, " + ")}`);
    if (info.created) parts.push(`on ${fmtDate(info.created)}`);
    $("bank-fit-info").textContent = parts.join(", ") || "—";
    setDefaultThreshold(info.threshold, info.segmentThreshold);
  }
  updateButtons();
}

function setDefaultThreshold(t, seg) {
  state.defaultThreshold = t;
  state.defaultSegThreshold = seg;
  state.threshold = t;
  const s = $("threshold");
  s.min = 0;
  s.max = (t * 2.5).toPrecision(4);
  s.step = (t / 1000).toPrecision(3);
  s.value = t;
  applyThreshold();
}

async function start() {
  $("heat-legend").style.background = heatLegendCss();
  $("heat-legend-text").textContent = `from ${Math.round(HEAT_LOW * 100)} % of the segment threshold to the largest value (at least ${Math.round(HEAT_HIGH * 100)} %)`;
  for (const name of COLOUR_MAPS) $("colour-map").add(new Option(name, name));
  setStatus("Loading the analysis engine…");
  const last = await loadLastBank();
  if (last) $("last-bank").hidden = false;
  const t0 = performance.now();
  const r = await busy("init", () =>
    call("init", {
      modelUrl: MODEL_URL,
      specUrl: SPEC_URL,
      buildUrl: "build.json",
      bankUrl: DEMO_BANK_URL,
      preferredBank: last ? last.bytes : null,
      preferredBankName: last ? `last fitted bank (${fmtDate(last.savedAt)})` : null,
    }, [], progressHandler));
  if (!r) {
    $("model-info").textContent = "not loaded";
    $("bank-info").textContent = "not loaded";
    return;
  }
  state.timings.modelReadyMs = performance.now();
  showModel(r.model);
  showBank(r.bank, r.bankSource);
  if (r.bankError) fail(r.bankError);
  else setStatus(`Ready (${((performance.now() - t0) / 1000).toFixed(1)} s): open a file, try a demo clip, or record.`);
}

$("bank-input").onchange = async (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (file) await loadBankFile(file);
};

async function loadBankFile(file) {
  await busy("bank", async () => {
    setStatus(`Loading the bank ${file.name}…`);
    const bytes = new Uint8Array(await file.arrayBuffer());
    const info = await call("loadBank", { bytes }, [bytes.buffer]).catch((e) => {
      throw new Error(`The bank ${file.name} was not loaded: ${e.message}`);
    });
    showBank(info, file.name);
    setStatus(`Loaded the bank ${file.name}.`);
    await rescoreCurrent();
  });
}

$("demo-bank").onclick = () =>
  busy("bank", async () => {
    const res = await fetch(DEMO_BANK_URL).catch(() => null);
    if (!res || !res.ok) throw new Error("The demo bank (demo/fan-demo.bank) is not on this server.");
    const bytes = new Uint8Array(await res.arrayBuffer());
    showBank(await call("loadBank", { bytes }, [bytes.buffer]), "demo bank (fan-demo.bank)");
    setStatus("Loaded the demo bank.");
    await rescoreCurrent();
  });

$("last-bank").onclick = () =>
  busy("bank", async () => {
    const last = await loadLastBank();
    if (!last) throw new Error("No fitted bank is stored in this browser.");
    showBank(await call("loadBank", { bytes: last.bytes }), `last fitted bank (${fmtDate(last.savedAt)})`);
    setStatus("Loaded the last fitted bank.");
    await rescoreCurrent();
  });

$("download-bank").onclick = () =>
  busy("download", async () => {
    const bytes = await call("bankBytes");
    const base = (state.bankName || "sonomaly").replace(/\.bank$/, "").replace(/[^\w.-]+/g, "-").replace(/^-+|-+$/g, "");
    download(new Blob([bytes], { type: "application/octet-stream" }), `${base || "sonomaly"}.bank`);
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
    fail("To load a model, choose its .onnx file and its .json spec together.");
    return;
  }
  await busy("model", async () => {
    setStatus(`Loading the model ${onnx.name}…`);
    const bytes = await onnx.arrayBuffer();
    const r = await call("loadModel", { onnx: bytes, spec: await spec.text(), name: onnx.name }, [bytes], progressHandler)
      .catch((e) => {
        throw new Error(`The model ${onnx.name} was not loaded: ${e.message}`);
      });
    showModel(r.model);
    showBank(r.bank, r.bank ? state.bankName : null);
    if (r.bankError) fail(r.bankError);
    else setStatus(`Loaded the model ${onnx.name}.`);
  });
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

// Runs of frames whose curve is above the segment threshold, runs closer than 2 frames merged: the core's rule
// (anomaly_map::segments), redone here so that the threshold slider answers at once.
const MIN_GAP_FRAMES = 2;
function segmentsOf(series, thr) {
  const runs = [];
  const c = series.curve;
  let t = 0;
  while (t < series.frames) {
    if (c[t] > thr) {
      const start = t;
      let peak = c[t];
      while (t < series.frames && c[t] > thr) peak = Math.max(peak, c[t++]);
      const last = runs[runs.length - 1];
      if (last && start - last[1] <= MIN_GAP_FRAMES) {
        last[1] = t;
        last[2] = Math.max(last[2], peak);
      } else runs.push([start, t, peak]);
    } else t++;
  }
  return runs.map(([a, b, p]) => ({ startS: a * series.hopS, endS: b * series.hopS, peak: p }));
}

// The temporal curve's threshold moves with the clip threshold, in proportion to the bank's two defaults.
function segThreshold() {
  if (state.threshold == null || state.defaultThreshold == null || state.defaultSegThreshold == null) return null;
  if (!(state.defaultThreshold > 0)) return state.defaultSegThreshold;
  return state.defaultSegThreshold * (state.threshold / state.defaultThreshold);
}

async function openFiles(files) {
  const failures = [];
  for (const file of files) {
    const ok = await busy("open", async () => {
      setStatus(`Decoding ${file.name}…`);
      const audio = await openAudio(call, file, { onProgress: progressHandler });
      const clip = { id: ++clipSeq, name: file.name, kind: "file", ...audio, result: null };
      await scoreClip(clip);
      return true;
    });
    // A bad file is reported and the others are still opened; the errors are listed together at the end.
    if (!ok) failures.push($("error-text").textContent);
  }
  if (failures.length && files.length > 1) {
    fail(`${failures.length} of ${files.length} files could not be opened:\n${failures.join("\n")}`);
  }
}

async function openDemo(which) {
  await busy("demo", async () => {
    const url = DEMOS[which];
    setStatus(`Loading the demo clip ${url}…`);
    const res = await fetch(url).catch(() => null);
    if (!res || !res.ok) throw new Error(`The demo clip ${url} is not on this server.`);
    const name = url.split("/").pop();
    const audio = await openAudio(call, new File([await res.blob()], name));
    await scoreClip({ id: ++clipSeq, name, kind: "demo", ...audio, result: null });
  });
}

async function scoreClip(clip) {
  if (!state.bank) throw new Error("No bank is loaded: open a bank file, or fit one from normal recordings first.");
  const duration = clip.duration != null ? `${clip.duration.toFixed(1)} s at ` : "";
  setStatus(`Scoring ${clip.name} (${duration}${clip.sampleRate} Hz)…`);
  // A long file has no samples here: the worker reads it again and scores it as a stream.
  const samples = clip.samples ? clip.samples.slice() : null;
  const r = await (samples
    ? call("score", { samples, sampleRate: clip.sampleRate }, [samples.buffer], progressHandler)
    : call("scoreFile", { file: clip.file }, [], progressHandler)
  ).catch((e) => {
    throw new Error(`${clip.name} could not be scored: ${e.message}`);
  });
  if (!samples) {
    clip.duration = r.durationS;
    if (r.warnings?.length) clip.notice = r.warnings.map((w) => `Warning: ${w}`).join(". ");
  }
  clip.result = { score: r.score, series: Series.fromResult(r), coreSegments: r.segments, threshold: r.threshold, segmentThreshold: r.segmentThreshold };
  if (!state.clips.includes(clip)) state.clips.push(clip);
  if (!state.fitMaterial.some((m) => m.clip === clip)) addFitMaterial(clip, false);
  showClip(clip);
  const streamed = samples ? "" : " (streamed: too long to keep in memory, no playback)";
  setStatus(`Scored ${clip.name} in ${(r.elapsedMs / 1000).toFixed(2)} s${streamed}.${clip.notice ? ` ${clip.notice}` : ""}`);
  if (state.timings.firstHeatmapMs == null) state.timings.firstHeatmapMs = performance.now();
}

async function rescoreCurrent() {
  const c = state.current;
  if (c && c.kind !== "recording" && state.bank) await scoreClip(c);
}

function showClip(clip) {
  state.current = clip;
  $("clip-name").textContent = clip.name;
  const segs = segmentsOf(clip.result.series, segThreshold());
  figure.showClip(clip.result.series, segThreshold(), segs);
  showVerdict(clip.result.score, segs);
  renderClipList();
}

function showVerdict(score, segments) {
  const thr = state.threshold;
  const v = $("verdict");
  if (score == null || thr == null) {
    v.textContent = "";
    v.className = "verdict";
    $("clip-score").textContent = "";
  } else {
    const anomalous = score > thr;
    v.textContent = anomalous ? "anomalous" : "normal";
    v.className = `verdict ${v.textContent}`;
    $("clip-score").textContent = score.toFixed(4);
  }
  const list = $("segments");
  list.replaceChildren();
  for (const s of segments || []) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `${s.startS.toFixed(2)}–${s.endS.toFixed(2)} s`;
    b.title = "Play this part";
    b.onclick = () => playCurrent(s.startS, s.endS);
    li.append(b, ` peak ${s.peak.toFixed(3)}`);
    list.append(li);
  }
  $("no-segments").hidden = (segments || []).length > 0;
}

function renderClipList() {
  const ul = $("clips");
  ul.replaceChildren();
  for (const c of state.clips) {
    if (!c.result) continue;
    const li = document.createElement("li");
    if (c === state.current) li.className = "current";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c.name;
    b.onclick = () => showClip(c);
    const tag = document.createElement("span");
    const anomalous = c.result.score > state.threshold;
    tag.className = `tag ${anomalous ? "anomalous" : "normal"}`;
    tag.textContent = `${c.result.score.toFixed(3)} ${anomalous ? "anomalous" : "normal"}`;
    li.append(b, tag);
    ul.append(li);
  }
}

function applyThreshold() {
  const thr = state.threshold;
  $("threshold-value").textContent = thr == null ? "" : `${thr.toFixed(4)} (segments above ${segThreshold().toFixed(4)})`;
  figure.setThreshold(segThreshold() ?? 1);
  const c = state.current;
  if (c && c.result) {
    const segs = segmentsOf(c.result.series, segThreshold());
    figure.segments = segs;
    figure.drawCurve();
    showVerdict(c.result.score, segs);
    renderClipList();
  }
}

$("threshold").oninput = (ev) => {
  state.threshold = Number(ev.target.value);
  applyThreshold();
};
$("threshold-reset").onclick = () => {
  if (state.defaultThreshold == null) return;
  state.threshold = state.defaultThreshold;
  $("threshold").value = state.threshold;
  applyThreshold();
};
$("opacity").oninput = (ev) => {
  $("heatmap").style.opacity = ev.target.value;
};
$("colour-map").onchange = (ev) => figure.setColourMap(ev.target.value);
$("file-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await openFiles(files);
};
$("demo-normal").onclick = () => openDemo("normal");
$("demo-abnormal").onclick = () => openDemo("abnormal");

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
document.addEventListener("drop", async (ev) => {
  ev.preventDefault();
  dragDepth = 0;
  $("drop-overlay").hidden = true;
  const files = [...(ev.dataTransfer?.files || [])];
  if (!files.length) return;
  const banks = files.filter((f) => /\.(bank|safetensors)$/i.test(f.name));
  const model = files.filter((f) => /\.(onnx|json)$/i.test(f.name));
  const audio = files.filter((f) => !banks.includes(f) && !model.includes(f));
  if (model.length) await loadModelFiles(model);
  if (banks.length) await loadBankFile(banks[0]);
  if (audio.length) await openFiles(audio);
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
      return `The microphone could not be started: ${e && e.message ? e.message : e}`;
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
    inFlight: 0,
    clip: null,
    takes: 0,
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

async function startRecording() {
  clearError();
  if (!state.bank) {
    fail("No bank is loaded: open a bank file, or fit one from normal recordings first, then record.");
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    fail(micError(null));
    return;
  }
  player.stop();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
  } catch (e) {
    fail(micError(e));
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
    rec.frameOffset = rec.series ? rec.series.frames : 0;
    await call("streamStart", { sampleRate: ctx.sampleRate });
    if (!rec.series) {
      const m = state.model;
      rec.series = new Series(m.melBins, m.hopS, m.melHz);
      rec.clip = { id: ++clipSeq, name: "recording", kind: "recording", samples: null, sampleRate: ctx.sampleRate, result: null };
    }
    state.current = null;
    $("clip-name").textContent = `Recording at ${ctx.sampleRate} Hz…`;
    showVerdict(null, []);
    figure.showLive(rec.series, segThreshold(), LIVE_SPAN_S);
    node.port.onmessage = (ev) => onAudio(rec, ev.data);
    $("record-button").textContent = "■ Stop";
    $("record-button").classList.add("on");
    setStatus(`Recording from the microphone at ${ctx.sampleRate} Hz; scoring as the sound arrives.`);
    updateButtons();
  } catch (e) {
    stream.getTracks().forEach((t) => t.stop());
    fail(`Recording could not start: ${e.message || e}`);
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
  call("streamPush", { samples }, [samples.buffer])
    .then((r) => {
      rec.inFlight--;
      rec.computeMs += r.elapsedMs;
      rec.audioS += audioS;
      applyUpdates(rec, r.updates);
    })
    .catch((e) => {
      rec.inFlight--;
      fail(`Live scoring stopped: ${e.message}`);
      if (rec.running) stopRecording();
    });
  showRecInfo(rec);
}

function applyUpdates(rec, updates) {
  if (!updates || !updates.length) return;
  for (const u of updates) {
    rec.series.write(rec.frameOffset + u.startFrame, u.frames, u.logmel, u.map, u.curve);
    rec.score = rec.score == null ? u.score : Math.max(rec.score, u.score);
    rec.updates++;
  }
  if (state.current == null || state.current === rec.clip) {
    const segs = segmentsOf(rec.series, segThreshold());
    figure.segments = segs;
    figure.follow();
    figure.draw();
    showVerdict(rec.score, segs);
    const lu = $("live-updates");
    lu.dataset.count = String(rec.updates);
    lu.textContent = `${rec.updates} live update${rec.updates === 1 ? "" : "s"}`;
    if (state.timings.firstHeatmapMs == null) state.timings.firstHeatmapMs = performance.now();
  }
  showRecInfo(rec);
}

function showRecInfo(rec) {
  const dur = rec.length / rec.sampleRate;
  const rtf = rec.audioS > 0 ? rec.computeMs / 1000 / rec.audioS : null;
  $("rec-info").textContent = `${dur.toFixed(1)} s recorded` +
    (rtf != null ? ` · real-time factor ${rtf.toFixed(2)}${rtf < 1 ? " (keeps up)" : " (falling behind)"}` : "") +
    (rec.inFlight > 3 ? ` · ${rec.inFlight} blocks waiting` : "");
  $("rec-info").dataset.rtf = rtf == null ? "" : rtf.toFixed(3);
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
    const r = await call("streamFinish");
    applyUpdates(rec, r.updates);
  } catch (e) {
    fail(`The end of the recording could not be scored: ${e.message}`);
  }
  // The whole recording becomes a clip: playable, listed, usable as normal material.
  const all = new Float32Array(rec.length);
  let o = 0;
  for (const c of rec.chunks) {
    all.set(c, o);
    o += c.length;
  }
  const clip = rec.clip;
  clip.name = `recording ${rec.takes > 1 ? `(${rec.takes} takes) ` : ""}${(rec.length / rec.sampleRate).toFixed(1)} s`;
  clip.samples = all;
  clip.sampleRate = rec.sampleRate;
  clip.duration = all.length / rec.sampleRate;
  clip.result = { score: rec.score ?? 0, series: rec.series };
  if (!state.clips.includes(clip)) state.clips.push(clip);
  const mat = state.fitMaterial.find((m) => m.clip === clip);
  if (mat) mat.duration = clip.duration;
  renderFitList();
  if (rec.score != null) showClip(clip);
  $("record-button").textContent = "● Resume";
  $("record-button").classList.remove("on");
  $("record-button").disabled = false;
  $("new-recording").hidden = false;
  const rtf = rec.audioS > 0 ? rec.computeMs / 1000 / rec.audioS : 0;
  setStatus(`Recording stopped: ${clip.duration.toFixed(1)} s, real-time factor ${rtf.toFixed(2)}.`);
  updateButtons();
}

$("save-wav").onclick = () => {
  const rec = state.rec;
  if (!rec || !rec.clip?.samples) return;
  download(encodeWav(rec.clip.samples, rec.sampleRate), `sonomaly-recording-${new Date().toISOString().replace(/[:.]/g, "-")}.wav`);
};

// ---- fitting ------------------------------------------------------------------------------------------------

let matSeq = 0;
function addFitMaterial(clip, use) {
  state.fitMaterial.push({ id: ++matSeq, clip, use });
  renderFitList();
}

function renderFitList() {
  const ul = $("fit-list");
  ul.replaceChildren();
  let n = 0;
  let secs = 0;
  for (const m of state.fitMaterial) {
    if (!m.clip.samples) continue;
    const li = document.createElement("li");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = m.use;
    cb.id = `mat-${m.id}`;
    cb.onchange = () => {
      m.use = cb.checked;
      renderFitList();
    };
    const label = document.createElement("label");
    label.htmlFor = cb.id;
    label.textContent = `${m.clip.name} (${m.clip.duration.toFixed(1)} s)`;
    li.append(cb, label);
    ul.append(li);
    if (m.use) {
      n++;
      secs += m.clip.duration;
    }
  }
  $("fit-summary").textContent = state.fitMaterial.length === 0
    ? "No normal material yet."
    : `${n} clip${n === 1 ? "" : "s"} ticked as normal, ${fmtDuration(secs)}.`;
  updateButtons();
}

$("fit-input").onchange = async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await busy("fit-add", async () => {
    for (const [i, f] of files.entries()) {
      setStatus(`Reading normal material ${i + 1} of ${files.length}: ${f.name}…`);
      showProgress(i, files.length);
      const audio = await openAudio(call, f);
      if (!audio.samples) throw new Error(`${f.name} is longer than 10 minutes: fit on shorter clips (the command line fits on files of any length).`);
      if (audio.notice) setStatus(audio.notice);
      addFitMaterial({ id: ++clipSeq, name: f.name, kind: "file", ...audio, result: null }, true);
    }
    setStatus(`Added ${files.length} normal file${files.length === 1 ? "" : "s"}.`);
  });
};

$("fit-add-recording").onclick = () => {
  const clip = state.rec?.clip;
  if (!clip || !clip.samples) return;
  const m = state.fitMaterial.find((x) => x.clip === clip);
  if (m) m.use = true;
  else addFitMaterial(clip, true);
  renderFitList();
};

$("fit-clear").onclick = () => {
  state.fitMaterial = [];
  renderFitList();
};

$("fit-cancel").onclick = () => {
  worker.postMessage({ type: "fitCancel" });
  setStatus("Cancelling the fit…");
};

$("fit-button").onclick = () =>
  busy("fit", async () => {
    const chosen = state.fitMaterial.filter((m) => m.use && m.clip.samples);
    if (!chosen.length) throw new Error("Tick at least one clip of normal sound to fit a bank.");
    const clips = chosen.map((m) => ({ name: m.clip.name, samples: m.clip.samples.slice(), sampleRate: m.clip.sampleRate }));
    $("fit-cancel").hidden = false;
    const bar = $("fit-progress");
    bar.hidden = false;
    bar.value = 0;
    try {
      const r = await call("fit", { clips }, clips.map((c) => c.samples.buffer), (msg) => {
        setStatus(msg.text);
        bar.value = msg.total ? msg.done / msg.total : 0;
        // The last step (memory bank and threshold) runs in one piece in the worker: it cannot be cancelled.
        if (msg.total && msg.done >= msg.total - 1) $("fit-cancel").hidden = true;
      }).catch((e) => {
        throw new Error(/cancel/i.test(e.message) ? "Fitting was cancelled; the bank in use has not changed." : `Fitting failed: ${e.message}`);
      });
      state.fittedBytes = r.bytes;
      const name = `fitted bank (${new Date().toLocaleString()})`;
      showBank(r.info, name);
      await saveLastBank(r.bytes, name).catch((e) => console.warn("sonomaly: could not keep the bank", e));
      $("last-bank").hidden = false;
      setStatus(`Fitted a bank on ${chosen.length} clip${chosen.length === 1 ? "" : "s"} in ${(r.elapsedMs / 1000).toFixed(1)} s; it is now in use and kept in this browser.`);
      await rescoreCurrent();
    } finally {
      $("fit-cancel").hidden = true;
      bar.hidden = true;
    }
  });

$("fit-download").onclick = () => {
  if (!state.fittedBytes) return;
  download(new Blob([state.fittedBytes], { type: "application/octet-stream" }), "sonomaly-fitted.bank");
};

// ---- buttons ------------------------------------------------------------------------------------------------

function updateButtons() {
  const ready = state.model != null;
  const hasBank = state.bank != null;
  const recording = !!state.rec?.running;
  const idle = state.busy === 0;
  $("download-bank").disabled = !hasBank;
  $("demo-normal").disabled = !ready || recording;
  $("demo-abnormal").disabled = !ready || recording;
  $("file-input").disabled = !ready || recording;
  $("record-button").disabled = !ready || (!recording && !idle);
  $("save-wav").disabled = recording || !state.rec?.clip?.samples;
  $("fit-add-recording").disabled = recording || !state.rec?.clip?.samples;
  const anyMaterial = state.fitMaterial.some((m) => m.use && m.clip.samples);
  $("fit-button").disabled = !ready || !anyMaterial || recording || !idle;
  $("fit-download").disabled = !state.fittedBytes;
}

// The page itself is kept for offline use by a service worker (sw.js; registered once the model is loaded, so
// that its copying does not slow the first start); the model is kept by the analysis worker.
function keepOffline() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.register("sw.js").catch((e) => console.warn("sonomaly: no offline copy of the page:", e));
}

updateButtons();
start().finally(keepOffline);
