// The worker that hosts the wasm core. Everything heavy (model loading, scoring, streaming, fitting) runs here,
// never on the page's thread.
//
// Protocol: the page posts {id, type, ...}; the worker answers {id, ok: true, result} or {id, ok: false, error}
// and, while it works, {type: "progress", id, stage, done, total, text}.

import init, { AudioReader, Engine, simdSupported } from "./pkg/sonomaly.js";

const MODEL_CACHE = "sonomaly-models-v1";

let engine = null; // Engine: model + bank + stream + fitter
let fitCancelled = false;
let wasmReady = null;

function progress(id, stage, done, total, text) {
  postMessage({ type: "progress", id, stage, done, total, text });
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
    await ensureWasm(id);
    const t0 = performance.now();
    let stamp = "0";
    try {
      const res = await fetch(msg.buildUrl, { cache: "no-cache" });
      if (res.ok) stamp = (await res.json()).model || "0";
    } catch (e) {
      // offline: use whatever version is cached
      stamp = await latestCachedVersion(msg.modelUrl) || "0";
    }
    const spec = await fetchCached(id, msg.specUrl, stamp, "the model description");
    const onnx = await fetchCached(id, msg.modelUrl, stamp, "the model (CNN14, aisfx weights)");
    progress(id, "model", 0, 1, "Preparing the model…");
    await yieldToEvents();
    engine = new Engine(onnx.bytes, new TextDecoder().decode(spec.bytes));
    const model = engine.modelInfo();
    model.source = msg.modelUrl;
    model.cached = onnx.cached;
    const result = { model, bank: null, bankError: null, bankSource: null, loadMs: 0 };

    const candidates = [];
    if (msg.preferredBank) candidates.push({ bytes: msg.preferredBank, source: msg.preferredBankName || "last fitted bank" });
    candidates.push({ url: msg.bankUrl, source: "demo bank (fan-demo.bank)" });
    for (const c of candidates) {
      let bytes = c.bytes;
      if (!bytes) {
        progress(id, "bank", 0, 1, "Loading the demo bank…");
        bytes = await fetchOptional(c.url);
        if (!bytes) {
          result.bankError = result.bankError || "The demo bank (demo/fan-demo.bank) is not on this server. Open a bank file, or fit one from normal recordings below.";
          continue;
        }
      }
      try {
        result.bank = engine.loadBank(new Uint8Array(bytes));
        result.bankSource = c.source;
        result.bankError = null;
        break;
      } catch (e) {
        result.bankError = `${c.source} could not be used: ${plain(e)}`;
      }
    }
    result.loadMs = performance.now() - t0;
    return result;
  },

  async loadModel(msg, id) {
    await ensureWasm(id);
    progress(id, "model", 0, 1, "Preparing the model…");
    await yieldToEvents();
    const next = new Engine(new Uint8Array(msg.onnx), msg.spec);
    // Keep the current bank if it fits the new model; otherwise say so.
    let bank = null;
    let bankError = null;
    if (engine && engine.hasBank()) {
      const bytes = engine.bankBytes();
      try {
        bank = next.loadBank(bytes);
      } catch (e) {
        bankError = `The loaded bank does not fit this model, so no bank is loaded now: ${plain(e)}`;
      }
    }
    if (engine) engine.free();
    engine = next;
    const model = engine.modelInfo();
    model.source = msg.name;
    model.cached = false;
    return { model, bank, bankError };
  },

  async loadBank(msg) {
    requireEngine();
    return engine.loadBank(new Uint8Array(msg.bytes));
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

  // Decodes and scores a File in one go, streamed with bounded memory when it is long (Engine.scoreReader).
  async scoreFile(msg, id) {
    requireBank();
    const { reader, reason } = openReader(msg);
    if (!reader) return { fallback: true, reason };
    const name = msg.file.name;
    const t0 = performance.now();
    let last = 0;
    try {
      const r = engine.scoreReader(reader, (done, total) => {
        const now = performance.now();
        if (now - last < 200) return;
        last = now;
        const of = total ? ` of ${total.toFixed(0)} s` : "";
        progress(id, "score", done, total || 0, `Reading and scoring ${name}: ${done.toFixed(0)} s${of}…`);
      });
      r.elapsedMs = performance.now() - t0;
      return r;
    } finally {
      reader.free();
    }
  },

  async segments(msg) {
    requireEngine();
    return engine.segments(msg.curve, msg.hopS, msg.threshold);
  },

  async streamStart(msg) {
    requireBank();
    engine.streamStart(msg.sampleRate);
    return true;
  },

  async streamPush(msg) {
    requireEngine();
    const t0 = performance.now();
    const updates = engine.streamPush(msg.samples);
    return { updates, elapsedMs: performance.now() - t0 };
  },

  async streamFinish() {
    requireEngine();
    return { updates: engine.streamFinish() };
  },

  // Fits a bank from normal clips, one clip at a time so that a cancel message gets through between clips.
  async fit(msg, id) {
    requireEngine();
    fitCancelled = false;
    const clips = msg.clips;
    const t0 = performance.now();
    engine.fitStart();
    try {
      for (let i = 0; i < clips.length; i++) {
        progress(id, "fit", i, clips.length + 1, `Fitting: clip ${i + 1} of ${clips.length} (${clips[i].name})…`);
        await yieldToEvents();
        if (fitCancelled) throw new Error("Fitting was cancelled.");
        try {
          engine.fitAdd(clips[i].samples, clips[i].sampleRate);
        } catch (e) {
          throw new Error(`${clips[i].name}: ${plain(e)}`);
        }
      }
      progress(id, "fit", clips.length, clips.length + 1, "Fitting: calibrating the threshold and building the memory bank (this last step cannot be cancelled)…");
      await yieldToEvents();
      if (fitCancelled) throw new Error("Fitting was cancelled.");
      const info = engine.fitFinish();
      const bytes = engine.bankBytes();
      return { info, bytes, elapsedMs: performance.now() - t0 };
    } catch (e) {
      engine.fitCancel();
      throw e;
    }
  },
};

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

self.onmessage = async (ev) => {
  const msg = ev.data;
  if (msg.type === "fitCancel") {
    fitCancelled = true;
    return;
  }
  const handler = handlers[msg.type];
  if (!handler) {
    postMessage({ id: msg.id, ok: false, error: `unknown request ${msg.type}` });
    return;
  }
  try {
    const result = await handler(msg, msg.id);
    postMessage({ id: msg.id, ok: true, result }, transferablesOf(result));
  } catch (e) {
    console.error("sonomaly worker:", e);
    postMessage({ id: msg.id, ok: false, error: plain(e) });
  }
};
