// The worker that hosts the wasm core. Everything heavy (model loading, scoring, streaming, fitting) runs here,
// never on the page's thread.
//
// The protocol (requests, answers, progress, cancel) is written down once, in engine.js, which is the only module of
// the page that posts here: it sends the queued requests one at a time, and keeps what a fresh worker needs to take
// over from this one (`session` in the answers that change the model or the bank).
//
// Every change of bank (or of model) gets a new serial number; bank infos and clip results carry the serial they
// were made with, so that the page can tell a result made with the bank in use from a stale one. A worker started
// again after a cancel (`restore`) takes the serial of the one it replaces, as its bank is the same.

import init, { AudioReader, Engine, bankInfoOf, checkModel, simdSupported, windowBatch } from "./pkg/sonomaly.js";
import { MESSAGES, PROGRESS } from "./engine.js";

const MODEL_CACHE = "sonomaly-models-v1";

let engine = null; // Engine: model + bank + stream + fitter
const cancelled = new Set(); // ids of requests the page asked to stop
let modelRef = null; // {kind: "default" | "shipped" | "file", name, source, sha}: the model in use, for `session`
let wasmReady = null;
let bankSerial = 0; // changes whenever the bank (or the model) in use changes
let bankName = null; // what the page calls the bank in use
let defaultModel = null; // {onnx, spec, sha, name}: the model the page started with
// Models shipped with the page besides the default ({name, modelUrl, specUrl, label}), for banks fitted with them;
// their bytes once fetched, by name; the build stamps that version the model cache, by model name.
let shippedModels = [];
const shippedBytes = new Map();
let modelStamps = {};
let offlineStart = false; // build.json could not be read: models come from the cache as they are
let liveFrames = 0; // frames of the live stream whose log-mel the page has been sent
// Banks dropped because a later model did not fit them, newest last: a model they fit brings them back.
const droppedBanks = [];
// The engine and fit settings that fitAnalyse last set up (its fitStart), so that a run of clips sets up once.
let analysing = {};

function progress(id, stage, done, total, text) {
  postMessage({ type: PROGRESS, id, stage, done, total, text });
}

// What a fresh worker needs to be in this one's state (see engine.js): sent with every answer that changes the
// model or the bank.
function session() {
  const m = engine ? engine.modelInfo() : null;
  return {
    // The analysis windows' geometry, for the pool to know whether a clip has more than one batch of them.
    windows: m ? { frames: m.windowFrames, hop: m.windowHop, hopS: m.hopS, batch: windowBatch() } : null,
    model: modelRef,
    bank: engine && engine.hasBank() ? engine.bankBytes() : null,
    bankName,
    serial: bankSerial,
    defaultModel: defaultModel ? { name: defaultModel.name, sha: defaultModel.sha } : null,
  };
}

class Cancelled extends Error {
  constructor() {
    super("Fitting was cancelled.");
  }
}

// Plain-words message for anything thrown: wasm errors arrive as Error with the core's sentence.
function plain(err) {
  if (err == null) return "unknown error";
  if (err instanceof RangeError || /out of memory|memory access out of bounds|Cannot allocate/i.test(String(err.message))) {
    return "The browser ran out of memory for this task. Try a shorter clip, close other tabs, or reload the page.";
  }
  if (err instanceof WebAssembly.RuntimeError) {
    return `The analysis engine stopped unexpectedly (${err.message}). Reload the page to start it again.`;
  }
  return err.message || String(err);
}

async function ensureWasm(id) {
  if (!wasmReady) {
    wasmReady = (async () => {
      if (!WebAssembly.validate(SIMD_PROBE)) {
        throw new Error("This browser does not support WebAssembly SIMD, which sonomaly needs. Use a current Chrome, Edge, Firefox or Safari (16.4 or later).");
      }
      progress(id, "wasm", 0, 1, "Starting the analysis engine…");
      await init({ module_or_path: new URL("./pkg/sonomaly_bg.wasm", import.meta.url) });
      if (!simdSupported()) console.warn("sonomaly: wasm built without simd128");
    })();
  }
  return wasmReady;
}

// Smallest module that uses a v128 instruction: validates only where SIMD is supported.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

// Fetches a URL with progress; caches it with the Cache API under `version` so that the next visit (and an
// offline one) reads it from the cache.
async function fetchCached(id, url, version, label) {
  const key = new URL(url, self.location.href);
  key.searchParams.set("v", version);
  let cache = null;
  try {
    cache = await caches.open(MODEL_CACHE);
    const hit = await cache.match(key.href);
    if (hit) {
      const buf = await hit.arrayBuffer();
      progress(id, "download", buf.byteLength, buf.byteLength, `${label}: from the browser cache`);
      return { bytes: new Uint8Array(buf), cached: true };
    }
  } catch (e) {
    cache = null; // Cache API unavailable (e.g. private mode): download every time
  }
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`Could not download ${label} (${url}): the network is unreachable and it is not in the browser cache yet.`);
  }
  if (!res.ok) throw new Error(`Could not download ${label} (${url}): the server answered ${res.status} ${res.statusText}.`);
  const total = Number(res.headers.get("content-length")) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let done = 0;
  let lastPost = 0;
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    chunks.push(value);
    done += value.byteLength;
    const now = performance.now();
    if (now - lastPost > 100) {
      lastPost = now;
      progress(id, "download", done, total, `Downloading ${label}…`);
    }
  }
  const bytes = new Uint8Array(done);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.byteLength;
  }
  progress(id, "download", done, done, `Downloaded ${label}`);
  if (cache) {
    try {
      // Old versions of the same file go first, so the cache holds one copy per file.
      for (const req of await cache.keys()) {
        const u = new URL(req.url);
        if (u.pathname === key.pathname && u.href !== key.href) await cache.delete(req);
      }
      await cache.put(key.href, new Response(bytes.slice(), { headers: { "content-type": "application/octet-stream" } }));
    } catch (e) {
      console.warn("sonomaly: could not cache", url, e);
    }
  }
  return { bytes, cached: false };
}

async function fetchOptional(url) {
  try {
    const res = await fetch(url);
    if (!res.ok) return null;
    return new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    return null;
  }
}

function yieldToEvents() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function transferablesOf(obj, list = []) {
  if (obj == null) return list;
  if (ArrayBuffer.isView(obj)) {
    list.push(obj.buffer);
  } else if (Array.isArray(obj)) {
    for (const v of obj) transferablesOf(v, list);
  } else if (typeof obj === "object") {
    for (const v of Object.values(obj)) transferablesOf(v, list);
  }
  return list;
}

const handlers = {
  // Loads the default model (cached) and a starting bank: the page passes the bank bytes it prefers (the last
  // fitted one from IndexedDB) or the demo bank's URL.
  async init(msg, id) {
    await setup(msg, id);
    const t0 = performance.now();
    const { onnx, spec, cached } = await defaultModelBytes(msg, id);
    progress(id, "model", 0, 1, "Preparing the model…");
    await yieldToEvents();
    engine = new Engine(onnx, spec);
    const model = engine.modelInfo();
    defaultModel = { onnx, spec, sha: model.backboneSha256, name: model.name };
    modelRef = { kind: "default", name: model.name, source: msg.modelUrl, sha: model.backboneSha256 };
    model.source = msg.modelUrl;
    model.cached = cached;
    model.isDefault = true;
    const result = { model, bank: null, bankError: null, bankSource: null, switched: null, loadMs: 0 };

    // The last fitted bank if there is one and it fits (with the default model, or with the shipped model it was
    // fitted with), else the demo bank.
    let preferred = null;
    if (msg.preferredBank) {
      preferred = { bytes: new Uint8Array(msg.preferredBank), name: msg.preferredBankName || "last fitted bank" };
      try {
        result.bank = engine.loadBank(preferred.bytes);
        result.bankSource = bankName = preferred.name;
        preferred = null;
      } catch (e) {
        // Said even if another bank loads: a kept bank that no longer fits must not vanish unnoticed.
        result.bankError = { name: preferred.name, error: plain(e) };
      }
    }
    if (!result.bank) {
      progress(id, "bank", 0, 1, "Loading the demo bank…");
      const bytes = await fetchOptional(msg.bankUrl);
      if (!bytes) {
        result.bankError = result.bankError || { name: "demo bank (fan-demo.bank)", error: "missing" };
      } else {
        try {
          result.bank = engine.loadBank(new Uint8Array(bytes));
          result.bankSource = bankName = "demo bank (fan-demo.bank)";
        } catch (e) {
          result.bankError = result.bankError || { name: "demo bank (fan-demo.bank)", error: plain(e) };
        }
      }
    }
    if (preferred) {
      try {
        const other = await modelForBank(id, preferred.bytes);
        if (other) {
          const r = await switchModel(id, other.onnx, other.spec, other.ref, [], preferred);
          result.switched = { bank: preferred.name, model: r.model.name, setAside: r.previousBank };
          result.model = r.model;
          result.bank = r.bank;
          result.bankSource = r.bankName;
          result.bankError = null;
        }
      } catch (e) {
        result.bankError.modelError = plain(e);
      }
    }
    result.loadMs = performance.now() - t0;
    result.serial = ++bankSerial;
    result.session = session();
    return result;
  },

  // Takes over from a worker that was terminated (see engine.js), or makes a helper of the pool hold what the main
  // worker holds: the same model, the same bank (its bytes), the same bank serial, so that every result the page
  // shows stays the bank in use's. `msg` is init's, with
  // `session` (the last one the old worker sent) and `modelFiles` ({onnx, spec, name}: a model opened from files).
  async restore(msg, id) {
    const s = msg.session;
    if (engine && s && s.bank && modelRef && s.model.sha === modelRef.sha) {
      // The same model (a worker of the pool following a bank change): only the bank changes.
      engine.loadBank(new Uint8Array(s.bank));
      bankName = s.bankName;
      bankSerial = s.serial;
      return { model: null, bank: engine.bankInfo(), bankName, serial: bankSerial, session: session() };
    }
    await setup(msg, id);
    const def = await defaultModelBytes(msg, id);
    defaultModel = { onnx: def.onnx, spec: def.spec, sha: s?.defaultModel?.sha ?? null, name: s?.defaultModel?.name ?? null };
    let onnx = def.onnx;
    let spec = def.spec;
    const ref = s ? s.model : { kind: "default", source: msg.modelUrl };
    if (ref.kind === "shipped") {
      const b = await shippedModelBytes(id, shippedModels.find((m) => m.name === ref.name));
      onnx = b.onnx;
      spec = b.spec;
    } else if (ref.kind === "file") {
      if (!msg.modelFiles) throw new Error("The model opened from files is no longer at hand: open it again.");
      onnx = new Uint8Array(msg.modelFiles.onnx);
      spec = msg.modelFiles.spec;
    }
    progress(id, "model", 0, 1, "Restarting the analysis engine: preparing the model…");
    await yieldToEvents();
    const next = new Engine(onnx, spec);
    if (engine) engine.free();
    engine = next;
    const model = engine.modelInfo();
    if (defaultModel.sha == null && ref.kind === "default") {
      defaultModel.sha = model.backboneSha256;
      defaultModel.name = model.name;
    }
    modelRef = { ...ref, sha: model.backboneSha256 };
    Object.assign(model, modelFlags(model, ref.source));
    let bank = null;
    if (s && s.bank) {
      progress(id, "bank", 0, 1, "Restarting the analysis engine: loading the bank in use…");
      bank = engine.loadBank(new Uint8Array(s.bank));
    }
    bankName = s ? s.bankName : null;
    bankSerial = s ? s.serial : bankSerial;
    return { model, bank, bankName, serial: bankSerial, session: session() };
  },

  // Checks a model on a test input, then switches to it, keeping a bank that fits it: the bank in use, else a
  // bank an earlier model switch dropped, else one the page offers (the last fitted bank, the demo bank). A model
  // that fails the check changes nothing.
  async loadModel(msg, id) {
    await ensureWasm(id);
    progress(id, "model", 0, 1, "Checking the model on a test input…");
    await yieldToEvents();
    const onnx = new Uint8Array(msg.onnx);
    checkModel(onnx, msg.spec);
    return switchModel(id, onnx, msg.spec, { kind: "file", name: msg.name, source: msg.name }, msg.banks || []);
  },

  // Back to the model the page started with (and a bank that fits it).
  async useDefaultModel(msg, id) {
    if (!defaultModel) throw new Error("The default model was never loaded: reload the page.");
    return switchModel(id, defaultModel.onnx, defaultModel.spec, { kind: "default", source: "the default model" }, msg.banks || []);
  },

  // Loads a bank; a bank fitted with another model shipped with the page (or the default model) brings that
  // model in, and the bank in use is set aside to come back with its own model.
  async loadBank(msg, id) {
    requireEngine();
    const bytes = new Uint8Array(msg.bytes);
    try {
      const info = engine.loadBank(bytes);
      bankName = msg.name;
      return { info, name: bankName, serial: ++bankSerial, session: session() };
    } catch (e) {
      const other = await modelForBank(id, bytes).catch((e2) => {
        const err = new Error(plain(e));
        err.modelError = plain(e2);
        throw err;
      });
      if (!other) throw e;
      const r = await switchModel(id, other.onnx, other.spec, other.ref, [], { bytes, name: msg.name });
      return { info: r.bank, name: r.bankName, serial: r.serial, switched: { model: r.model, previousBank: r.previousBank }, session: r.session };
    }
  },

  async bankBytes() {
    requireEngine();
    if (!engine.hasBank()) throw new Error("No bank is loaded.");
    return engine.bankBytes();
  },

  async score(msg, id) {
    requireBank();
    progress(id, "score", 0, 1, "Scoring…");
    const t0 = performance.now();
    const r = engine.scoreClip(msg.samples, msg.sampleRate);
    r.elapsedMs = performance.now() - t0;
    r.bankSerial = bankSerial;
    return r;
  },

  // Decodes a File with the core's decoder (the command line's), reading it in slices: mono samples at the file's
  // own rate. A file longer than msg.maxSeconds is not decoded here ({long: true}: score it with scoreFile, which
  // streams it). A format the core does not read gives {fallback: true, reason}: the page lets the browser try.
  async decodeFile(msg, id) {
    await ensureWasm(id);
    const { reader, reason } = openReader(msg);
    if (!reader) return { fallback: true, reason };
    try {
      const head = reader.info();
      const long = { samples: null, long: true, sampleRate: reader.sampleRate, channels: head.channels, duration: head.durationS, warnings: [], links: head.links, decodedBy: "sonomaly" };
      if (msg.maxSeconds != null && head.durationS > msg.maxSeconds) return long;
      progress(id, "decode", 0, head.durationS || 0, `Decoding ${msg.file.name}…`);
      const samples = reader.readAll(msg.maxSeconds);
      if (!samples) return long;
      const info = reader.info();
      return {
        samples,
        sampleRate: reader.sampleRate,
        channels: info.channels,
        duration: samples.length / reader.sampleRate,
        warnings: info.warnings,
        links: info.links,
        decodedBy: "sonomaly",
      };
    } finally {
      reader.free();
    }
  },

  // The pool (engine.js): a clip's windows dealt out in whole batches to workers with the same model and bank
  // (share msg.share of msg.shares), the parts merged by one of them; the result is scoreClip's, bit for bit.
  async scoreWindowShare(msg) {
    requireBank();
    const r = engine.scoreWindowShare(msg.samples, msg.sampleRate, msg.share, msg.shares);
    r.serial = bankSerial;
    return r;
  },

  async scoreFromParts(msg) {
    requireBank();
    const t0 = performance.now();
    const r = engine.scoreFromParts(msg.samples, msg.sampleRate, msg.rows, msg.scores, msg.lengths);
    r.elapsedMs = performance.now() - t0;
    r.bankSerial = bankSerial;
    return r;
  },

  // Decodes and scores a File in one go, streamed with bounded memory when it is long (Engine.scoreReader).
  async scoreFile(msg, id) {
    requireBank();
    const { reader, reason } = openReader(msg);
    if (!reader) return { fallback: true, reason };
    const name = msg.file.name;
    const t0 = performance.now();
    let last = 0;
    try {
      const serial = bankSerial;
      const r = engine.scoreReader(reader, (done, total) => {
        const now = performance.now();
        if (now - last < 200) return;
        last = now;
        const of = total ? ` of ${total.toFixed(0)} s` : "";
        progress(id, "score", done, total || 0, `Reading and scoring ${name}: ${done.toFixed(0)} s${of}…`);
      });
      r.elapsedMs = performance.now() - t0;
      r.bankSerial = serial;
      return r;
    } finally {
      reader.free();
    }
  },

  async streamStart(msg) {
    requireBank();
    engine.streamStart(msg.sampleRate);
    liveFrames = 0;
    return { serial: bankSerial };
  },

  // Feeds a block of the live stream: returns the stretches judged (often none) and the log-mel of the frames
  // that arrived since the last block, so that the spectrogram is drawn long before its first window is judged.
  async streamPush(msg) {
    requireEngine();
    const t0 = performance.now();
    const updates = engine.streamPush(msg.samples);
    const logmel = engine.streamLogmel(liveFrames);
    liveFrames = logmel.startFrame + logmel.frames;
    return { updates, logmel, elapsedMs: performance.now() - t0 };
  },

  // The thresholds and heatmap range that a clip threshold of msg.threshold gives with the bank in use, and the
  // segments of msg.curve (one value per frame, msg.hopS s apart; a clip of msg.durationS s, or null while live)
  // with them: the core's rules (Bank::override_threshold, pipeline::segments_for), which `sonomaly score
  // --threshold` follows too.
  async levels(msg) {
    requireBank();
    const t = engine.thresholdsFor(msg.threshold);
    const segments = msg.curve ? engine.segments(msg.curve, msg.hopS, t.segmentThreshold, msg.durationS ?? undefined) : null;
    return { ...t, segments, value: msg.threshold, serial: bankSerial };
  },

  async streamFinish() {
    requireEngine();
    return { updates: engine.streamFinish() };
  },

  // One clip's patches for a fit with msg.preset, msg.layers and msg.detector, as bytes (engine.js's pool: the
  // fit's worker adds them with the others'). The fit's settings are set up once for a run of such clips.
  async fitAnalyse(msg) {
    requireEngine();
    const key = JSON.stringify([msg.preset || null, msg.layers || null, msg.detector || null]);
    if (analysing.engine !== engine || analysing.key !== key) {
      engine.fitStart(msg.preset || null, msg.layers || null, msg.detector || null);
      analysing = { engine, key };
    }
    return { bytes: engine.fitAnalyse(msg.samples, msg.sampleRate) };
  },

  // The pool's fit (engine.js): starts the fit that fitAddAnalysed adds the clips' patches to, in their order.
  async fitBegin(msg) {
    requireEngine();
    engine.fitStart(msg.preset || null, msg.layers || null, msg.detector || null);
    analysing = { engine, key: JSON.stringify([msg.preset || null, msg.layers || null, msg.detector || null]) };
    return {};
  },

  async fitAddAnalysed(msg) {
    requireEngine();
    engine.fitAddAnalysed(msg.bytes);
    return {};
  },

  async fitDrop() {
    if (engine) engine.fitCancel();
    analysing = {};
    return {};
  },

  // Fits a bank from normal clips, one clip at a time so that a cancel gets through between clips (within a
  // clip, and in the last step, only terminating the worker stops it: engine.js does that). A clip is given as
  // samples or, from the pool, as its patches (`analysed`, from fitAnalyse); with `added`, the pool has already
  // added every clip to the fit begun by fitBegin, and only the last step is left.
  async fit(msg, id) {
    requireEngine();
    const clips = msg.clips;
    const t0 = performance.now();
    analysing = {};
    if (!msg.added) {
      try {
        engine.fitStart(msg.preset || null, msg.layers || null, msg.detector || null);
      } catch (e) {
        const err = new Error(plain(e));
        err.layers = true;
        throw err;
      }
    }
    try {
      for (let i = msg.added ? clips.length : 0; i < clips.length; i++) {
        progress(id, "fit", i, clips.length + 1, `Fitting: clip ${i + 1} of ${clips.length} (${clips[i].name})…`);
        await yieldToEvents();
        if (cancelled.has(id)) throw new Cancelled();
        try {
          if (clips[i].analysed) {
            engine.fitAddAnalysed(clips[i].analysed);
            clips[i].analysed = null; // now in the fitter: the bytes can go
          } else engine.fitAdd(clips[i].samples, clips[i].sampleRate);
        } catch (e) {
          const err = new Error(plain(e));
          err.clip = clips[i].name;
          throw err;
        }
      }
      const finishing = "Fitting: calibrating the threshold and building the memory bank";
      progress(id, "fit", clips.length, clips.length + 1, `${finishing}…`);
      await yieldToEvents();
      if (cancelled.has(id)) throw new Cancelled();
      // The last step runs in one piece (a cancel terminates the worker); its own steps (a trained detector such as
      // CFA is trained once per calibration fold, then on every clip) are posted as they end.
      const info = engine.fitFinish((stage, done, total) => {
        const what = stage === "fitting" ? "training the final detector" : "calibrating";
        progress(id, "fit", clips.length + done / total, clips.length + 1, `${finishing} (${what}, step ${done} of ${total})…`);
      });
      const bytes = engine.bankBytes();
      bankName = msg.name;
      return { info, bytes, name: bankName, serial: ++bankSerial, elapsedMs: performance.now() - t0, session: session() };
    } catch (e) {
      engine.fitCancel();
      throw e;
    }
  },
};

// Makes a new engine for the model and moves a bank that fits it over; see loadModel. `ref` ({kind, name, source})
// says where the model comes from (see session). With `required` ({bytes, name}), that bank must fit the new model
// (else nothing changes and its error is thrown), and it is used.
async function switchModel(id, onnx, spec, ref, offered, required = null) {
  progress(id, "model", 0, 1, "Preparing the model…");
  await yieldToEvents();
  const next = new Engine(onnx, spec);
  const model = next.modelInfo();
  Object.assign(model, modelFlags(model, ref.source));
  let bank = null;
  let chosen = null;
  if (required) {
    try {
      bank = next.loadBank(required.bytes);
      chosen = required;
    } catch (e) {
      next.free();
      throw e;
    }
  }
  const candidates = [];
  let current = null;
  if (engine && engine.hasBank()) {
    current = { bytes: engine.bankBytes(), name: bankName };
    candidates.push(current);
  }
  for (const b of [...droppedBanks].reverse()) candidates.push(b);
  for (const b of offered) {
    let bytes = b.bytes;
    if (!bytes && b.url) bytes = await fetchOptional(b.url);
    if (bytes) candidates.push({ bytes: new Uint8Array(bytes), name: b.name });
  }
  let currentError = null;
  for (const c of required ? [] : candidates) {
    try {
      bank = next.loadBank(c.bytes);
      chosen = c;
      break;
    } catch (e) {
      if (c === current) currentError = plain(e);
    }
  }
  if (current && chosen !== current) {
    const i = droppedBanks.findIndex((b) => b.name === current.name);
    if (i >= 0) droppedBanks.splice(i, 1);
    droppedBanks.push(current);
    if (droppedBanks.length > 4) droppedBanks.shift();
  }
  if (chosen) {
    const i = droppedBanks.indexOf(chosen);
    if (i >= 0) droppedBanks.splice(i, 1);
  }
  if (engine) engine.free();
  engine = next;
  modelRef = { ...ref, name: model.name, sha: model.backboneSha256 };
  bankName = chosen ? chosen.name : null;
  return {
    model,
    bank,
    bankName,
    serial: ++bankSerial,
    previousBank: current ? current.name : null,
    previousBankError: currentError,
    session: session(),
  };
}

// How the page describes a model (`modelInfo` plus these): where it came from, whether it is the default one or one
// shipped with the page.
function modelFlags(model, source) {
  const isDefault = defaultModel != null && model.backboneSha256 === defaultModel.sha;
  return {
    source,
    cached: false,
    isDefault,
    shipped: !isDefault && shippedModels.some((m) => m.name === model.name && m.source === source),
  };
}

// Reads init's fields: the models shipped with the page and the build's stamps (their cache versions).
async function setup(msg, id) {
  await ensureWasm(id);
  shippedModels = msg.shipped || [];
  modelStamps = {};
  offlineStart = false;
  try {
    const res = await fetch(msg.buildUrl, { cache: "no-cache" });
    if (res.ok) {
      const b = await res.json();
      modelStamps = b.models || {};
      modelStamps[""] = b.model || "0";
    }
  } catch (e) {
    offlineStart = true; // offline: use whatever version is cached
  }
}

// The default model's files (from the browser cache when they are there): {onnx, spec (text), cached}.
async function defaultModelBytes(msg, id) {
  const stamp = await stampFor(msg.modelName, msg.modelUrl);
  const spec = await fetchCached(id, msg.specUrl, stamp, "the model description");
  const onnx = await fetchCached(id, msg.modelUrl, stamp, msg.modelLabel || "the model");
  return { onnx: onnx.bytes, spec: new TextDecoder().decode(spec.bytes), cached: onnx.cached };
}

// A shipped model's files ({name, modelUrl, specUrl, label}), fetched once: {onnx, spec (text)}.
async function shippedModelBytes(id, m) {
  if (!m) throw new Error("The model the bank in use was fitted with is no longer offered by this page: reload it.");
  if (!shippedBytes.has(m.name)) {
    const stamp = await stampFor(m.name, m.modelUrl);
    const spec = await fetchCached(id, m.specUrl, stamp, `the description of the model ${m.name}`);
    const onnx = await fetchCached(id, m.modelUrl, stamp, `the model ${m.label || m.name} that this bank was fitted with`);
    shippedBytes.set(m.name, { onnx: onnx.bytes, spec: new TextDecoder().decode(spec.bytes) });
  }
  return shippedBytes.get(m.name);
}

// The model a bank needs when it is not the one in use: the default model, or a model shipped with the page,
// by the name the bank records (its SHA-256 is checked when the bank is loaded with it). Returns {onnx, spec,
// ref} (see switchModel), or null when the bank names the model in use or one the page does not have.
async function modelForBank(id, bytes) {
  let info;
  try {
    info = bankInfoOf(bytes);
  } catch (e) {
    return null; // not a bank: the load's own error says so
  }
  const current = engine.modelInfo();
  if (info.backbone === current.name) return null;
  if (defaultModel && info.backbone === defaultModel.name) {
    return { onnx: defaultModel.onnx, spec: defaultModel.spec, ref: { kind: "default", source: "the default model" } };
  }
  const m = shippedModels.find((x) => x.name === info.backbone);
  if (!m) return null;
  const b = await shippedModelBytes(id, m);
  return { onnx: b.onnx, spec: b.spec, ref: { kind: "shipped", name: m.name, source: m.source } };
}

// {reader}: an AudioReader on msg.file; {reason}: the core does not read this format (the browser may).
function openReader(msg) {
  try {
    return { reader: AudioReader.fromBlob(msg.file, msg.file.name, msg.channel ?? -1) };
  } catch (e) {
    if (e && e.name === "UnsupportedFormat") return { reason: plain(e) };
    throw e;
  }
}

function requireEngine() {
  if (!engine) throw new Error("The model is not loaded yet.");
}

function requireBank() {
  requireEngine();
  if (!engine.hasBank()) {
    throw new Error("No bank is loaded: open a bank file, or fit one from normal recordings first.");
  }
}

// The version under which a model's files are cached: its build stamp (build.json), or offline the version in
// the cache.
async function stampFor(name, url) {
  if (offlineStart) return (await latestCachedVersion(url)) || "0";
  return modelStamps[name] || modelStamps[""] || "0";
}

async function latestCachedVersion(url) {
  try {
    const cache = await caches.open(MODEL_CACHE);
    const path = new URL(url, self.location.href).pathname;
    for (const req of await cache.keys()) {
      const u = new URL(req.url);
      if (u.pathname === path) return u.searchParams.get("v");
    }
  } catch (e) {
    // no cache
  }
  return null;
}

async function handle(msg) {
  const handler = handlers[msg.type];
  if (!handler) {
    postMessage({ id: msg.id, ok: false, error: `unknown request ${msg.type}` });
    return;
  }
  try {
    const result = await handler(msg, msg.id);
    postMessage({ id: msg.id, ok: true, result }, transferablesOf(result));
  } catch (e) {
    if (!(e instanceof Cancelled)) console.error("sonomaly worker:", e);
    postMessage({ id: msg.id, ok: false, error: plain(e), clip: e && e.clip, modelError: e && e.modelError, layers: e && e.layers });
  } finally {
    cancelled.delete(msg.id);
  }
}

// Every request engine.js may send has a handler here, and every handler is declared there.
for (const [type, how] of Object.entries(MESSAGES)) {
  if (how !== "control" && !handlers[type]) throw new Error(`worker.js: no handler for ${type}, declared in engine.js`);
}
for (const type of Object.keys(handlers)) {
  if (!MESSAGES[type]) throw new Error(`worker.js: the request ${type} is not declared in engine.js`);
}

// engine.js posts the queued requests one at a time; they are chained here all the same. Immediate ones (they
// only read the bank in use; the answer carries the bank's serial, so a late one is recognised) go past them.
let queue = Promise.resolve();
self.onmessage = (ev) => {
  const msg = ev.data;
  const how = MESSAGES[msg.type];
  if (how === "control") {
    if (msg.type === "cancel") cancelled.add(msg.id);
    return;
  }
  if (how === "immediate") {
    handle(msg);
    return;
  }
  // Queued and internal requests (restore, the pool's parts) run one at a time, in order.
  queue = queue.then(() => handle(msg));
};
