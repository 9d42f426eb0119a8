// Measurement cases inside the browser for `run.mjs` (which serves this page and calls `window.bench.*`): the
// CNN14 backbone in sonomaly's wasm (whole clip, pipeline windows, windows over Web Workers) and in
// onnxruntime-web (wasm execution provider), sonomaly's whole pipeline (`Engine.scoreClip`), and a fit
// (`Engine.fitStart`, `fitAdd` per clip, `fitFinish`, as the page's worker runs them).
//
// `prepare(id, kind, args)` loads a case (model, runner or session; not timed), `time(id)` runs it once and
// returns the milliseconds, `finish(id)` frees it and returns what its last run gave for the record (the
// backbone's output for the sameness check, the clip's score). run.mjs interleaves the runs of several cases.
// Paths handed in are relative to the repository root, which the server serves at its root.

import init, { BackboneRunner, Engine, simdSupported, version } from "../../dist/pkg/sonomaly.js";
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { runBatches } from "./batches.js";

const ROOT = new URL("../../", import.meta.url);

const wasm = await init();

async function fetchBytes(path) {
  const res = await fetch(new URL(path, ROOT));
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// 16-bit PCM WAV to mono Float32 (channels averaged).
function readWav(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (o) => String.fromCharCode(...bytes.subarray(o, o + 4));
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let fmt = null;
  for (let o = 12; o + 8 <= bytes.length; ) {
    const id = tag(o);
    const size = dv.getUint32(o + 4, true);
    if (id === "fmt ") {
      fmt = { format: dv.getUint16(o + 8, true), channels: dv.getUint16(o + 10, true), rate: dv.getUint32(o + 12, true), bits: dv.getUint16(o + 22, true) };
    } else if (id === "data") {
      if (!fmt || fmt.format !== 1 || fmt.bits !== 16) throw new Error("only 16-bit PCM WAV is read here");
      const frames = Math.floor(size / (2 * fmt.channels));
      const samples = new Float32Array(frames);
      for (let i = 0; i < frames; i++) {
        let s = 0;
        for (let c = 0; c < fmt.channels; c++) s += dv.getInt16(o + 8 + 2 * (i * fmt.channels + c), true);
        samples[i] = s / fmt.channels / 32768;
      }
      return { samples, sampleRate: fmt.rate };
    }
    o += 8 + size + (size & 1);
  }
  throw new Error("WAV file without a data chunk");
}

const models = new Map();

// A backbone and its input: {onnx, specText, spec, names, logmel: {data, frames, melBins}}.
// `m`: {name, dir, logmel: {shape: [1, 1, frames, melBins], data}} (dir holds model.onnx + spec.json).
async function loadModel(m) {
  if (!models.has(m.name)) {
    const [onnx, specBytes] = await Promise.all([fetchBytes(`${m.dir}/model.onnx`), fetchBytes(`${m.dir}/spec.json`)]);
    const specText = new TextDecoder().decode(specBytes);
    const spec = JSON.parse(specText);
    models.set(m.name, { onnx, specText, spec, names: spec.outputs.map((o) => o.name) });
  }
  const [frames, melBins] = m.logmel.shape.slice(-2);
  return { ...models.get(m.name), logmel: { data: m.logmel.data, frames, melBins } };
}

// Window starts as the pipeline cuts them: every `hop` frames, the last window aligned to the end.
function windowStarts(t, w, hop) {
  if (t <= w) return [0];
  const starts = [];
  for (let s = 0; s + w < t; s += hop) starts.push(s);
  starts.push(t - w);
  return starts;
}

function concat(arrays) {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let o = 0;
  for (const a of arrays) {
    out.set(a, o);
    o += a.length;
  }
  return out;
}

function windowsOf(spec, logmel) {
  const w = spec.window_frames;
  return { w, hop: spec.window_hop, starts: windowStarts(logmel.frames, w, spec.window_hop) };
}

// Posts `msg` to a worker and resolves with its reply (one request at a time per worker).
function request(worker, msg) {
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => (data.error ? reject(new Error(data.error)) : resolve(data));
    worker.onerror = (e) => reject(new Error(`worker: ${e.message}`));
    worker.postMessage(msg);
  });
}

// onnxruntime-web's runtime options apply once per page: the first session fixes them.
function configureOrt(numThreads) {
  ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
  ort.env.wasm.numThreads = numThreads;
  ort.env.wasm.simd = true;
  ort.env.wasm.proxy = false;
}

// Each kind makes {info, run, summary(last), dispose} from its args.
const KINDS = {
  // sonomaly on the whole clip in one run.
  // `runtime`: "auto" (the direct CNN14 path, as the pipeline runs) or "tract".
  async "sonomaly-whole"({ m, runtime = "auto" }) {
    const { onnx, specText, names, logmel } = await loadModel(m);
    const runner = new BackboneRunner(onnx, specText, names.join(","), logmel.frames, runtime);
    return {
      info: { frames: logmel.frames, melBins: logmel.melBins, outputs: names, runtime: runner.runtime },
      run: () => runner.run(logmel.data),
      summary: (last) => ({ output: last }),
      dispose: () => runner.free(),
    };
  },

  // sonomaly on the pipeline's windows, in batches of 4 as the pipeline runs them, on this thread.
  async "sonomaly-windows"({ m }) {
    const { onnx, specText, spec, names, logmel } = await loadModel(m);
    const { w, hop, starts } = windowsOf(spec, logmel);
    const runner = new BackboneRunner(onnx, specText, names.join(","), w);
    return {
      info: { windowFrames: w, windowHop: hop, windows: starts.length },
      run: () => runBatches(runner, logmel.data, starts, w, logmel.melBins),
      summary: () => ({}),
      dispose: () => runner.free(),
    };
  },

  // sonomaly on the pipeline's windows spread round-robin over `workers` Web Workers, each with its own module and
  // BackboneRunner; a run includes posting the log-mel and getting the feature maps back.
  async "sonomaly-workers"({ m, workers: n }) {
    const { onnx, specText, spec, names, logmel } = await loadModel(m);
    const { w, hop, starts } = windowsOf(spec, logmel);
    const workers = Array.from({ length: n }, () => new Worker(new URL("backbone-worker.js", import.meta.url), { type: "module" }));
    const dispose = () => workers.forEach((wk) => wk.terminate());
    try {
      await Promise.all(workers.map((wk) => request(wk, { type: "init", onnx, specText, outputs: names.join(","), frames: w, melBins: logmel.melBins })));
    } catch (e) {
      dispose();
      throw e;
    }
    const shares = workers.map((_, k) => starts.filter((_, i) => i % n === k));
    return {
      info: { windowFrames: w, windowHop: hop, windows: starts.length, workers: n },
      run: () => Promise.all(workers.map((wk, k) => request(wk, { type: "run", logmel: logmel.data, starts: shares[k] }))),
      summary: () => ({}),
      dispose,
    };
  },

  // onnxruntime-web (wasm execution provider) on the whole clip with `numThreads` and `session` options.
  async "ort-web"({ m, numThreads, session: sessionOptions }) {
    const { onnx, spec, names, logmel } = await loadModel(m);
    configureOrt(numThreads);
    const options = { ...sessionOptions, executionProviders: ["wasm"] };
    const session = await ort.InferenceSession.create(onnx, { ...options });
    const feeds = { [spec.input_name]: new ort.Tensor("float32", logmel.data, [1, 1, logmel.frames, logmel.melBins]) };
    return {
      info: { numThreads: ort.env.wasm.numThreads, sessionOptions: options },
      run: async () => {
        const r = await session.run(feeds, names);
        return names.map((k) => r[k].data);
      },
      summary: (last) => ({ output: concat(last) }),
      dispose: () => session.release(),
    };
  },

  // sonomaly's whole pipeline (front end, backbone windows, PatchCore, anomaly map) on a clip, on this thread.
  async pipeline({ model, bank, wav }) {
    const [onnx, specBytes, bankBytes, wavBytes] = await Promise.all(
      [`${model}/model.onnx`, `${model}/spec.json`, bank, wav].map(fetchBytes),
    );
    const { samples, sampleRate } = readWav(wavBytes);
    const engine = new Engine(onnx, new TextDecoder().decode(specBytes));
    try {
      engine.loadBank(bankBytes);
    } catch (e) {
      engine.free();
      throw e;
    }
    const { layers, memoryBank } = engine.bankInfo();
    return {
      info: { seconds: samples.length / sampleRate, sampleRate, layers, memoryBank },
      run: () => engine.scoreClip(samples, sampleRate),
      summary: (last) => ({ score: last.score, isAnomaly: last.isAnomaly }),
      dispose: () => engine.free(),
    };
  },
};

KINDS.fit = async ({ model, wavs }) => {
  const [onnx, specBytes] = await Promise.all([`${model}/model.onnx`, `${model}/spec.json`].map(fetchBytes));
  const clips = [];
  for (const w of wavs) clips.push(readWav(await fetchBytes(w)));
  const engine = new Engine(onnx, new TextDecoder().decode(specBytes));
  const seconds = clips.reduce((a, c) => a + c.samples.length / c.sampleRate, 0);
  return {
    info: { clips: clips.length, seconds },
    run: () => {
      const t0 = performance.now();
      engine.fitStart(null, null);
      for (const c of clips) engine.fitAdd(c.samples, c.sampleRate);
      const t1 = performance.now();
      const info = engine.fitFinish();
      return {
        info,
        analysisMs: t1 - t0,
        finishMs: performance.now() - t1,
        wasmMemoryBytes: wasm.memory.buffer.byteLength,
        jsHeapBytes: performance.memory?.usedJSHeapSize ?? null,
      };
    },
    summary: (last) => ({
      memoryBank: last.info.memoryBank,
      threshold: last.info.threshold,
      analysisMs: last.analysisMs,
      finishMs: last.finishMs,
      wasmMemoryBytes: last.wasmMemoryBytes,
      jsHeapBytes: last.jsHeapBytes,
    }),
    dispose: () => engine.free(),
  };
};

const cases = new Map();

async function prepare(id, kind, args) {
  const c = await KINDS[kind](args);
  cases.set(id, c);
  return c.info;
}

async function time(id) {
  const c = cases.get(id);
  const t = performance.now();
  c.last = await c.run();
  return performance.now() - t;
}

async function finish(id) {
  const c = cases.get(id);
  cases.delete(id);
  try {
    return c.summary(c.last);
  } finally {
    await c.dispose();
  }
}

function info() {
  return {
    userAgent: navigator.userAgent,
    hardwareConcurrency: navigator.hardwareConcurrency,
    crossOriginIsolated: self.crossOriginIsolated,
    ortVersion: ort.env.versions.web,
    sonomalyVersion: version(),
    sonomalySimd: simdSupported(),
  };
}

window.bench = { info, prepare, time, finish };
document.getElementById("status").textContent = "ready";
