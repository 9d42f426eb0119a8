#!/usr/bin/env node
// Browser half of the speed benchmark: sonomaly's wasm against onnxruntime-web in Debian's headless Chromium.
//
//   (cd benches/web && npm ci)                  once: onnxruntime-web and playwright-core
//   node benches/web/run.mjs --out target/bench/browser.json [--reps N] [--quick] [--only pipeline|fit|fit-page]
//
// Needs dist/ (./build.sh build), target/bench/inputs.safetensors (`cargo bench --bench speed`) and
// target/bench/cnn14-panns (benches/run.sh makes both). Serves dist/, models/, target/bench/ and benches/web/ at
// their repository paths on two local origins: a plain one (no COOP/COEP, as a plain static host: not
// cross-origin isolated) and an isolated one (COOP same-origin + COEP require-corp: SharedArrayBuffer, so
// onnxruntime-web can use threads). Measures, with 2 warm-up runs then --reps runs (default 10, --quick 3),
// median and minimum in milliseconds:
//
// - browser.backbone.<model>.*: CNN14 conv_block1..4 on the clip's log-mel (models aisfx and cnn14-panns):
//   sonomaly whole clip in one run (its direct CNN14 path, and tract for comparison), the pipeline's windows on
//   the page's thread and over 2 Web Workers (plain page); onnxruntime-web's wasm backend on the whole clip,
//   1 thread on the plain page and 2 threads on the isolated one, with the largest absolute difference from
//   sonomaly's output.
// - browser.pipeline.*: Engine.scoreClip on the 10 s demo clip (dist/demo/fan-abnormal.wav) on one thread (as in
//   the page's worker), each bank with the model it was fitted with: the demo bank (the default: EfficientAT mn04_as, a log-mel
//   member and a features.12,15 member, fused), target/bench/fan-demo-v1.bank (the previous default: log-mel
//   patches on the aisfx front end) and target/bench/fan-cnn.bank (aisfx CNN14 conv_block2,3,4: the CNN runs) if
//   present; rtf = clip seconds / median time.
// - browser.page.*: the app (dist/index.html, isolated origin, fresh browser profile each time): from setting the
//   file input to the painted heatmap once the page is ready, and from navigation to the demo button's heatmap.
// - browser.wasm.size, browser.ortweb.size: the wasm modules loaded, bytes and gzip -9 bytes.
// - browser.fit.* (only with --only fit): a fit of 15, 90 and 360 clips of benches/fit_scaling.sh's clips, one run
//   each in a fresh tab, with the renderer's peak resident memory: `default` on one thread (Engine.fitStart /
//   fitAdd / fitFinish), `page` by the app's engine on its pool of workers, as the fit panel fits (`--only
//   fit-page`: these rows alone); and browser.score.page.1-hour-file: the app scoring one hour in one WAV file
//   (target/bench/hour.wav, the 360 clips one after the other), opened with its file input, with the renderer's
//   peak resident memory.
//
// Writes the records as JSON to --out and prints a table. A measurement that fails is recorded with its "error"
// and the others still run; the exit code is then 1, as when something needed is missing (the message says what
// makes it). CHROMIUM=/path overrides /usr/bin/chromium.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WARMUP = 2;
const PAGE_TIMEOUT = 300_000;
const ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
];
// Paths the server gives out, relative to the repository root.
const SERVED = ["dist/", "models/", "target/bench/", "benches/web/"];
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css",
  ".wav": "audio/wav",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};
const MODELS = [
  { name: "aisfx", dir: "models/aisfx-cnn14", input: "logmel_aisfx" },
  { name: "cnn14-panns", dir: "target/bench/cnn14-panns", input: "logmel_panns" },
];
// onnxruntime-web's session options: level "all" (its default); "extended", "basic", the clip's frames as
// freeDimensionOverrides or enableMemPattern false were no faster (onnxruntime-web 1.30, 2-core x86-64).
const ORT_SESSION = { graphOptimizationLevel: "all" };
const INPUTS = "target/bench/inputs.safetensors";
const DEMO_WAV = "dist/demo/fan-abnormal.wav";
const ORT_DIST = "benches/web/node_modules/onnxruntime-web/dist";

function fail(message) {
  console.error(`run.mjs: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const o = { out: null, reps: 10, quick: false, only: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out") o.out = argv[++i];
    else if (a === "--reps") o.reps = Number(argv[++i]);
    else if (a === "--quick") o.quick = true;
    else if (a === "--only") {
      o.only = argv[++i];
      if (o.only !== "pipeline" && o.only !== "fit" && o.only !== "fit-page") {
        fail(`--only: 'pipeline' (the whole pipeline rows alone), 'fit' (the fit-scaling rows alone) or 'fit-page' (the page's fit rows alone) is known`);
      }
    } else fail(`unknown argument '${a}' (known: --out FILE, --reps N, --quick, --only pipeline|fit|fit-page)`);
  }
  if (!o.out) fail("--out FILE is required (e.g. --out target/bench/browser.json)");
  if (o.quick) o.reps = 3;
  if (!Number.isInteger(o.reps) || o.reps < 1) fail("--reps needs a positive whole number");
  return o;
}

function checkPrerequisites(only) {
  const need = [
    [CHROMIUM, "Chromium: apt-get install chromium (or set CHROMIUM=/path/to/chromium)"],
    [path.join(HERE, "node_modules/playwright-core"), "cd benches/web && npm ci"],
    [path.join(ROOT, ORT_DIST, "ort.wasm.min.mjs"), "cd benches/web && npm ci"],
    ...["dist/index.html", "dist/pkg/sonomaly.js", "dist/pkg/sonomaly_bg.wasm", "dist/models/aisfx-cnn14/model.onnx",
      "dist/demo/fan-demo.bank", DEMO_WAV].map((p) => [path.join(ROOT, p), "./build.sh build"]),
    [path.join(ROOT, "models/aisfx-cnn14/model.onnx"), "the default model is part of the repository"],
    [path.join(ROOT, INPUTS), "cargo bench --bench speed (or benches/run.sh)"],
    [path.join(ROOT, "target/bench/cnn14-panns/model.onnx"),
      "python3 models/convert_cnn14.py --synthetic /tmp/ck.pth --variant panns --seed 0 && " +
      "python3 models/convert_cnn14.py /tmp/ck.pth --variant panns --out target/bench/cnn14-panns (or benches/run.sh)"],
  ];
  const missing = need.filter(([p]) => !fs.existsSync(p))
    .filter(([p]) => !(only && (p.endsWith("cnn14-panns/model.onnx") || p.endsWith(INPUTS))));
  if ((only === "fit" || only === "fit-page") && !fs.existsSync(path.join(ROOT, FIT_CLIPS, "done"))) {
    missing.push([path.join(ROOT, FIT_CLIPS), "benches/fit_scaling.sh (it writes the 360 clips)"]);
  }
  if (missing.length) fail(`missing:\n${missing.map(([p, how]) => `  ${p.startsWith(ROOT) ? path.relative(ROOT, p) : p}: ${how}`).join("\n")}`);
}

// Float32 tensors `names` of a safetensors file ({name: {shape, data}}): an 8-byte little-endian header length,
// a JSON header (dtype, shape, data_offsets), then the data; reads only the bytes of those tensors.
function readTensors(rel, names) {
  const fd = fs.openSync(path.join(ROOT, rel), "r");
  const read = (length, position) => {
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, position);
    return buf;
  };
  try {
    const n = Number(read(8, 0).readBigUInt64LE(0));
    const header = JSON.parse(read(n, 8).toString("utf8"));
    const tensors = {};
    for (const name of names) {
      const t = header[name];
      if (!t || t.dtype !== "F32") fail(`${rel} has no float32 tensor ${name} (cargo bench --bench speed writes it)`);
      const [a, b] = t.data_offsets;
      const buf = read(b - a, 8 + n + a);
      tensors[name] = { shape: t.shape, data: new Float32Array(buf.buffer, buf.byteOffset, (b - a) / 4) };
    }
    return tensors;
  } finally {
    fs.closeSync(fd);
  }
}

// A static server of the repository's SERVED paths on 127.0.0.1; `isolated` adds COOP/COEP.
function serve(isolated) {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
    let file = path.join(ROOT, rel);
    if (file.endsWith(path.sep)) file = path.join(file, "index.html");
    const allowed = SERVED.some((p) => file.startsWith(path.join(ROOT, p)));
    fs.stat(file, (err, st) => {
      if (!allowed || err || !st.isFile()) {
        res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
        return;
      }
      const headers = {
        "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream",
        "Content-Length": st.size,
        "Cache-Control": "no-cache",
      };
      if (isolated) {
        headers["Cross-Origin-Opener-Policy"] = "same-origin";
        headers["Cross-Origin-Embedder-Policy"] = "require-corp";
      }
      res.writeHead(200, headers);
      fs.createReadStream(file).pipe(res);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` })));
}

// Median as the native bench takes it (the upper one for an even count), minimum, all times.
function stats(times) {
  const s = [...times].sort((a, b) => a - b);
  const r3 = (v) => Math.round(v * 1000) / 1000;
  return { median_ms: r3(s[s.length >> 1]), min_ms: r3(s[0]), reps: times.length, times_ms: times.map(r3) };
}

function checksum(a) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s;
}

function maxAbsDiff(a, b) {
  if (a.length !== b.length) return null;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function fileSize(rel) {
  const bytes = fs.readFileSync(path.join(ROOT, rel));
  return { file: rel, bytes: bytes.length, gzip_bytes: zlib.gzipSync(bytes, { level: 9 }).length };
}

const records = [];
let failures = 0;

const errorText = (e) => String(e?.message ?? e).split("\n")[0];

// Runs one measurement of the app page: `fn` returns {times, ...fields}; a throw is recorded as an error.
async function measure(base, fn) {
  process.stderr.write(`${base.id} ...\n`);
  try {
    const { times, ...fields } = await fn();
    records.push({ ...base, ...stats(times), ...fields });
  } catch (e) {
    failures++;
    console.error(`  failed: ${errorText(e)}`);
    records.push({ ...base, error: errorText(e) });
  }
}

// A tab: a fresh browser profile with `url` open; collects the page's console errors and the URLs of wasm fetched.
async function open(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1100 } });
  const page = await context.newPage();
  const logs = [];
  const wasm = [];
  page.on("console", (m) => m.type() === "error" && logs.push(m.text()));
  page.on("pageerror", (e) => logs.push(e.message));
  context.on("request", (r) => r.url().endsWith(".wasm") && wasm.push(new URL(r.url()).pathname.slice(1)));
  await page.goto(url);
  return { page, logs, wasm, close: () => context.close() };
}

async function openBench(browser, origin) {
  const s = await open(browser, `${origin}/benches/web/bench.html`);
  await s.page.waitForFunction(() => window.bench, null, { timeout: PAGE_TIMEOUT }).catch((e) => {
    throw new Error(`the bench page did not load: ${s.logs.join("; ") || e.message}`);
  });
  return s;
}

// Runs measurement cases ({record: {id, ...}, tab, kind, args, fields(info, summary, stats)}) in their bench pages:
// prepares each (bench.js), then WARMUP + `reps` rounds in which every case runs once, in an order rotating every
// round, so that a noisy spell on a shared machine spreads over all cases instead of hitting one; then frees them.
// Pushes a record per case: its statistics and fields, or its error.
async function runCases(cases, reps) {
  const live = [];
  for (const c of cases) {
    process.stderr.write(`${c.record.id} ...\n`);
    try {
      c.info = await c.tab.page.evaluate((a) => bench.prepare(a.id, a.kind, a.args), { id: c.record.id, kind: c.kind, args: c.args });
      c.times = [];
      live.push(c);
    } catch (e) {
      c.error = errorText(e);
    }
  }
  for (let round = 0; round < WARMUP + reps; round++) {
    for (let k = 0; k < live.length; k++) {
      const c = live[(k + round) % live.length];
      if (c.error) continue;
      try {
        const ms = await c.tab.page.evaluate((id) => bench.time(id), c.record.id);
        if (round >= WARMUP) c.times.push(ms);
      } catch (e) {
        c.error = errorText(e);
      }
    }
  }
  for (const c of live) {
    try {
      c.summary = await c.tab.page.evaluate((id) => bench.finish(id), c.record.id);
    } catch (e) {
      c.error ??= errorText(e);
    }
  }
  for (const c of cases) {
    if (c.error) {
      failures++;
      console.error(`  ${c.record.id} failed: ${c.error}`);
      records.push({ ...c.record, error: c.error });
    } else {
      const st = stats(c.times);
      records.push({ ...c.record, ...st, ...c.fields(c.info, c.summary, st) });
    }
  }
}

async function benchBackbones(browser, plain, isolated, reps) {
  const inputs = readTensors(INPUTS, MODELS.map((m) => m.input));
  const tabs = {
    sonomaly: await openBench(browser, plain),
    ortPlain: await openBench(browser, plain),
    ortIsolated: await openBench(browser, isolated),
  };
  const envs = {
    plain: await tabs.ortPlain.page.evaluate(() => bench.info()),
    isolated: await tabs.ortIsolated.page.evaluate(() => bench.info()),
  };
  if (!envs.isolated.crossOriginIsolated) fail("the page served with COOP/COEP is not cross-origin isolated");
  const isolation = (env) => ({ cross_origin_isolated: env.crossOriginIsolated });
  for (const { name, dir, input } of MODELS) {
    const m = { name, dir, logmel: inputs[input] };
    const record = (impl, variant, threads) => ({ id: `browser.backbone.${name}.${impl}.${variant}`, group: "backbone", impl, model: name, threads });
    const windowFields = (i) => ({ window_frames: i.windowFrames, window_hop: i.windowHop, windows: i.windows, ...isolation(envs.plain) });
    const whole = {
      record: record("sonomaly", "whole", 1),
      tab: tabs.sonomaly,
      kind: "sonomaly-whole",
      args: { m },
      fields: (i, sum) => ({ frames: i.frames, mel_bins: i.melBins, outputs: i.outputs, runtime: i.runtime, checksum: checksum(sum.output), ...isolation(envs.plain) }),
    };
    const tract = {
      record: record("sonomaly", "tract-whole", 1),
      tab: tabs.sonomaly,
      kind: "sonomaly-whole",
      args: { m, runtime: "tract" },
      fields: (i, sum) => ({
        frames: i.frames,
        runtime: i.runtime,
        ...isolation(envs.plain),
        max_abs_diff_vs_sonomaly: whole.summary ? maxAbsDiff(whole.summary.output, sum.output) : null,
      }),
    };
    const ortCase = (variant, tab, env, numThreads) => ({
      record: record("ort-web", variant, numThreads),
      tab,
      kind: "ort-web",
      args: { m, numThreads, session: ORT_SESSION },
      fields: (i, sum) => ({
        num_threads: i.numThreads,
        session_options: i.sessionOptions,
        ...isolation(env),
        checksum: checksum(sum.output),
        max_abs_diff_vs_sonomaly: whole.summary ? maxAbsDiff(whole.summary.output, sum.output) : null,
      }),
    });
    await runCases([
      whole,
      tract,
      { record: record("sonomaly", "windows", 1), tab: tabs.sonomaly, kind: "sonomaly-windows", args: { m }, fields: windowFields },
      {
        record: record("sonomaly", "windows-2workers", 2),
        tab: tabs.sonomaly,
        kind: "sonomaly-workers",
        args: { m, workers: 2 },
        fields: (i) => ({ ...windowFields(i), workers: i.workers }),
      },
      ortCase("plain-1t", tabs.ortPlain, envs.plain, 1),
      ortCase("isolated-2t", tabs.ortIsolated, envs.isolated, 2),
    ], reps);
  }
  const ortWasm = new Set();
  for (const s of Object.values(tabs)) {
    s.wasm.filter((p) => p.startsWith(ORT_DIST)).forEach((p) => ortWasm.add(p));
    await s.close();
  }
  return { envs, ortWasm: [...ortWasm] };
}

async function benchPipeline(browser, plain, reps) {
  const s = await openBench(browser, plain);
  const cases = [];
  const skipped = [];
  const banks = [
    ["default", "dist/demo/fan-demo.bank", "efficientat-mn04"],
    ["v1", "target/bench/fan-demo-v1.bank", "aisfx-cnn14"],
    ["cnn", "target/bench/fan-cnn.bank", "aisfx-cnn14"],
  ];
  for (const [name, bank, model] of banks) {
    const record = { id: `browser.pipeline.${name}.score-10s`, group: "pipeline", impl: "sonomaly", model, threads: 1 };
    if (!fs.existsSync(path.join(ROOT, bank))) {
      skipped.push({ ...record, skipped: `${bank} is missing (benches/run.sh fits it with the sonomaly CLI)` });
      continue;
    }
    cases.push({
      record,
      tab: s,
      kind: "pipeline",
      args: { model: `dist/models/${model}`, bank, wav: DEMO_WAV },
      fields: (i, sum, st) => ({
        rtf: i.seconds / (st.median_ms / 1000),
        clip: DEMO_WAV,
        clip_seconds: i.seconds,
        sample_rate: i.sampleRate,
        bank,
        layers: i.layers,
        memory_bank: i.memoryBank,
        score: sum.score,
        is_anomaly: sum.isAnomaly,
      }),
    });
  }
  await runCases(cases, reps);
  records.push(...skipped);
  await s.close();
}

// The clips of benches/fit_scaling.sh: 360 MIMII fan clips of 10 s rotated in time.
const FIT_CLIPS = "target/bench/fit360";

// Largest resident memory of Chromium's renderer processes (the bench tab's), KiB, sampled every 250 ms while
// `fn` runs: {result, peakKib}.
async function withPeakRenderer(fn) {
  const { execFileSync } = await import("node:child_process");
  let peak = 0;
  const sample = () => {
    try {
      const out = execFileSync("ps", ["-eo", "rss=,args="], { encoding: "utf8" });
      for (const line of out.split("\n")) {
        if (!line.includes("--type=renderer")) continue;
        peak = Math.max(peak, Number(line.trim().split(/\s+/)[0]) || 0);
      }
    } catch {
      // ps missing or failed: no memory figure
    }
  };
  const timer = setInterval(sample, 250);
  try {
    const result = await fn();
    sample();
    return { result, peakKib: peak };
  } finally {
    clearInterval(timer);
  }
}

// The fit-scaling rows: Engine.fitStart / fitAdd / fitFinish on 15, 90 and 360 clips (2.5 min, 15 min, 1 hour)
// of FIT_CLIPS on one thread, as the page's worker fits; one run each (no warm-up), each in a fresh tab, with the
// renderer's peak resident memory and the wasm memory at the end.
async function benchFit(browser, plain) {
  const all = fs.readdirSync(path.join(ROOT, FIT_CLIPS)).filter((f) => f.endsWith(".wav")).sort();
  for (const n of [15, 90, 360]) {
    const record = { id: `browser.fit.default.${n}-clips`, group: "fit", impl: "sonomaly", model: "efficientat-mn04", threads: 1 };
    await measure(record, async () => {
      const s = await openBench(browser, plain);
      try {
        const wavs = all.slice(0, n).map((f) => `${FIT_CLIPS}/${f}`);
        const info = await s.page.evaluate((a) => bench.prepare(a.id, "fit", a.args), {
          id: record.id,
          args: { model: "dist/models/efficientat-mn04", wavs },
        });
        const { result: ms, peakKib } = await withPeakRenderer(() => s.page.evaluate((id) => bench.time(id), record.id));
        const sum = await s.page.evaluate((id) => bench.finish(id), record.id);
        return {
          times: [ms],
          clips: info.clips,
          audio_seconds: info.seconds,
          analysis_ms: sum.analysisMs,
          finish_ms: sum.finishMs,
          memory_bank: sum.memoryBank,
          wasm_memory_mib: sum.wasmMemoryBytes / 2 ** 20,
          js_heap_mib: sum.jsHeapBytes == null ? null : sum.jsHeapBytes / 2 ** 20,
          renderer_peak_rss_mib: peakKib / 1024,
        };
      } finally {
        await s.close();
      }
    });
  }
}

// The fit-scaling rows of the page itself: the app's engine (www/engine.js) fits 15, 90 and 360 clips of FIT_CLIPS
// as its fit panel asks it to (`fit` with the clips' samples), on its pool of workers (one per core: every worker
// analyses whole clips, the main worker fits); one run each in a fresh tab once the helpers hold the bank.
// Analysis: until the first "calibrating" progress message; finish: the rest.
async function benchFitPage(browser, origin) {
  const all = fs.readdirSync(path.join(ROOT, FIT_CLIPS)).filter((f) => f.endsWith(".wav")).sort();
  for (const n of [15, 90, 360]) {
    const record = { id: `browser.fit.page.${n}-clips`, group: "fit", impl: "sonomaly", model: "efficientat-mn04" };
    await measure(record, async () => {
      const s = await openApp(browser, origin);
      try {
        const cores = await s.page.evaluate(() => navigator.hardwareConcurrency);
        if (cores >= 2) await s.page.waitForFunction(() => sonomalyEngine.inStep().length >= 1, null, { timeout: PAGE_TIMEOUT });
        const wavs = all.slice(0, n).map((f) => `/${FIT_CLIPS}/${f}`);
        await s.page.evaluate(async (urls) => {
          const read = (bytes) => {
            const dv = new DataView(bytes.buffer);
            const tag = (o) => String.fromCharCode(...bytes.subarray(o, o + 4));
            let fmt = null;
            for (let o = 12; o + 8 <= bytes.length; ) {
              const size = dv.getUint32(o + 4, true);
              if (tag(o) === "fmt ") fmt = { channels: dv.getUint16(o + 10, true), rate: dv.getUint32(o + 12, true), bits: dv.getUint16(o + 22, true) };
              else if (tag(o) === "data") {
                if (!fmt || fmt.bits !== 16) throw new Error("only 16-bit PCM WAV is read here");
                const frames = Math.floor(size / (2 * fmt.channels));
                const x = new Float32Array(frames);
                for (let i = 0; i < frames; i++) x[i] = dv.getInt16(o + 8 + 2 * i * fmt.channels, true) / 32768;
                return { samples: x, sampleRate: fmt.rate };
              }
              o += 8 + size + (size & 1);
            }
            throw new Error("WAV file without a data chunk");
          };
          window.__fitClips = [];
          for (const u of urls) {
            const c = read(new Uint8Array(await (await fetch(u)).arrayBuffer()));
            window.__fitClips.push({ name: u.split("/").pop(), ...c });
          }
        }, wavs);
        const { result: r, peakKib } = await withPeakRenderer(() => s.page.evaluate(async () => {
          const clips = window.__fitClips;
          window.__fitClips = null;
          const seconds = clips.reduce((a, c) => a + c.samples.length / c.sampleRate, 0);
          const t0 = performance.now();
          let t1 = null;
          const out = await sonomalyEngine.call("fit", { clips, name: "bench" }, clips.map((c) => c.samples.buffer), (m) => {
            if (t1 == null && /calibrating/.test(m.text)) t1 = performance.now();
          });
          const ms = performance.now() - t0;
          return { ms, analysisMs: (t1 ?? t0 + ms) - t0, clips: clips.length, seconds, workers: out.workers ?? 1, memoryBank: out.info.memoryBank };
        }));
        record.threads = r.workers;
        return {
          times: [r.ms],
          clips: r.clips,
          audio_seconds: r.seconds,
          analysis_ms: r.analysisMs,
          finish_ms: r.ms - r.analysisMs,
          memory_bank: r.memoryBank,
          workers: r.workers,
          renderer_peak_rss_mib: peakKib / 1024,
        };
      } finally {
        await s.close();
      }
    });
  }
}

// One hour of audio in one WAV file (the 360 clips of FIT_CLIPS one after the other, 16-bit PCM), written once to
// target/bench/hour.wav.
function hourWav() {
  const out = path.join(ROOT, "target/bench/hour.wav");
  if (fs.existsSync(out)) return out;
  const all = fs.readdirSync(path.join(ROOT, FIT_CLIPS)).filter((f) => f.endsWith(".wav")).sort();
  let rate = 0;
  const parts = all.map((f) => {
    const b = fs.readFileSync(path.join(ROOT, FIT_CLIPS, f));
    let fmt = null;
    for (let o = 12; o + 8 <= b.length; ) {
      const id = b.toString("latin1", o, o + 4);
      const size = b.readUInt32LE(o + 4);
      if (id === "fmt ") fmt = { channels: b.readUInt16LE(o + 10), rate: b.readUInt32LE(o + 12), bits: b.readUInt16LE(o + 22) };
      else if (id === "data") {
        if (!fmt || fmt.channels !== 1 || fmt.bits !== 16 || (rate && fmt.rate !== rate)) throw new Error(`${f}: not 16-bit mono PCM at one rate`);
        rate = fmt.rate;
        return b.subarray(o + 8, o + 8 + size);
      }
      o += 8 + size + (size & 1);
    }
    throw new Error(`${f}: no data chunk`);
  });
  const data = parts.reduce((n, p) => n + p.length, 0);
  const h = Buffer.alloc(44);
  h.write("RIFF", 0, "latin1");
  h.writeUInt32LE(36 + data, 4);
  h.write("WAVEfmt ", 8, "latin1");
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write("data", 36, "latin1");
  h.writeUInt32LE(data, 40);
  fs.writeFileSync(out, Buffer.concat([h, ...parts]));
  return out;
}

// The page scoring one hour of audio in one file (opened with the file input, as a user opens it: read and scored
// as a stream, since it is longer than 10 minutes): from setting the file to "Scored", with the renderer's peak
// resident memory and how often progress was said.
async function benchScoreHour(browser, origin) {
  const record = { id: "browser.score.page.1-hour-file", group: "score-hour", impl: "sonomaly", model: "efficientat-mn04" };
  await measure(record, async () => {
    const wav = hourWav();
    const s = await openApp(browser, origin);
    try {
      const { result, peakKib } = await withPeakRenderer(async () => {
        const t0 = Date.now();
        await s.page.evaluate(() => {
          window.__said = [];
          const el = document.querySelector('[data-testid="status"]');
          new MutationObserver(() => window.__said.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
        });
        await s.page.getByTestId("file-input").setInputFiles(wav);
        await waitScored(s.page, "hour.wav");
        const said = await s.page.evaluate(() => window.__said);
        return { ms: Date.now() - t0, progress: said.filter((t) => /scoring hour\.wav: \d+ s/i.test(t)).length };
      });
      return { times: [result.ms], audio_seconds: 3600, progress_messages: result.progress, renderer_peak_rss_mib: peakKib / 1024 };
    } finally {
      await s.close();
    }
  });
}

// A tab with the app page, once its status says "Ready" (throws if it says "Error").
async function openApp(browser, origin) {
  const s = await open(browser, `${origin}/dist/index.html`);
  s.crossOriginIsolated = await s.page.evaluate(() => self.crossOriginIsolated);
  await s.page.waitForFunction(() => /^(Ready|Error)/.test(document.querySelector('[data-testid="status"]').textContent), null, { timeout: PAGE_TIMEOUT });
  const status = await s.page.getByTestId("status").textContent();
  if (!status.startsWith("Ready")) throw new Error(`the app did not get ready: ${status}`);
  return s;
}

// Waits until the app shows a scored clip (status "Scored <name>"); throws if it shows an error instead.
async function waitScored(page, name) {
  await page.waitForFunction(
    (n) => document.querySelector('[data-testid="status"]').textContent.startsWith(`Scored ${n}`) || !document.getElementById("error").hidden,
    name,
    { timeout: PAGE_TIMEOUT },
  );
  const status = await page.getByTestId("status").textContent();
  if (!status.startsWith(`Scored ${name}`)) throw new Error(`${name} was not scored: ${await page.locator("#error-text").textContent()}`);
}

// Heatmap pixels painted in colour (as tests/e2e/page.test.js checks).
function colouredPixels(page) {
  return page.evaluate(() => {
    const c = document.querySelector('[data-testid="heatmap"]');
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) n++;
    }
    return n;
  });
}

async function benchApp(browser, isolated, runs) {
  const name = path.basename(DEMO_WAV);
  await measure({ id: "browser.page.open-to-heatmap", group: "page", impl: "sonomaly", model: "aisfx", threads: 1 }, async () => {
    const times = [];
    let coloured = 0;
    let coi = null;
    for (let i = 0; i < runs; i++) {
      const s = await openApp(browser, isolated);
      coi = s.crossOriginIsolated;
      // From the file input's change event to the frame after the status says "Scored <name>" (heatmap drawn).
      await s.page.evaluate(() => {
        const input = document.querySelector('[data-testid="file-input"]');
        const status = document.querySelector('[data-testid="status"]');
        window.openTiming = {};
        window.addEventListener("change", (e) => e.target === input && (openTiming.t0 = performance.now()), true);
        new MutationObserver(() => {
          if (openTiming.t1 === undefined && status.textContent.startsWith("Scored ")) {
            openTiming.t1 = null;
            requestAnimationFrame(() => setTimeout(() => (openTiming.t1 = performance.now())));
          }
        }).observe(status, { childList: true, characterData: true, subtree: true });
      });
      await s.page.getByTestId("file-input").setInputFiles(path.join(ROOT, DEMO_WAV));
      await waitScored(s.page, name);
      await s.page.waitForFunction(() => openTiming.t1 != null);
      times.push(await s.page.evaluate(() => openTiming.t1 - openTiming.t0));
      coloured = await colouredPixels(s.page);
      await s.close();
      if (coloured === 0) throw new Error("the heatmap has no coloured pixel");
    }
    return { times, clip: DEMO_WAV, coloured_pixels: coloured, cross_origin_isolated: coi };
  });
  await measure({ id: "browser.page.nav-to-demo-heatmap", group: "page", impl: "sonomaly", model: "aisfx", threads: 1 }, async () => {
    const times = [];
    const ready = [];
    let coi = null;
    for (let i = 0; i < runs; i++) {
      const s = await openApp(browser, isolated);
      coi = s.crossOriginIsolated;
      await s.page.getByTestId("demo-abnormal").click();
      await waitScored(s.page, name);
      const t = await s.page.evaluate(() => sonomaly.timings);
      times.push(t.firstHeatmapMs);
      ready.push(t.modelReadyMs);
      await s.close();
    }
    return { times, model_ready_ms: stats(ready).median_ms, model_ready_times_ms: ready, first_visit: true, cross_origin_isolated: coi };
  });
}

// Whether ./build.sh ran wasm-opt on dist's module: its stamp target/wasm-web/.source ends "opt=0" when WASM_OPT=0
// skipped it; null when that build output is not the module in dist/.
function wasmOptApplied() {
  const dir = path.join(ROOT, "target/wasm-web");
  const built = path.join(dir, "sonomaly_bg.wasm");
  if (!fs.existsSync(built) || !fs.existsSync(path.join(dir, ".source"))) return null;
  if (!fs.readFileSync(built).equals(fs.readFileSync(path.join(ROOT, "dist/pkg/sonomaly_bg.wasm")))) return null;
  return !fs.readFileSync(path.join(dir, ".source"), "utf8").trim().endsWith("opt=0");
}

function sizeRecords(ortWasm) {
  const own = fileSize("dist/pkg/sonomaly_bg.wasm");
  records.push({ id: "browser.wasm.size", group: "size", impl: "sonomaly", bytes: own.bytes, gzip_bytes: own.gzip_bytes, file: own.file, wasm_opt: wasmOptApplied() });
  const files = ortWasm.map(fileSize);
  records.push({
    id: "browser.ortweb.size",
    group: "size",
    impl: "ort-web",
    bytes: files.reduce((n, f) => n + f.bytes, 0),
    gzip_bytes: files.reduce((n, f) => n + f.gzip_bytes, 0),
    files,
  });
}

function table(report) {
  const lines = [`Chromium ${report.chromium}, onnxruntime-web ${report.ort_web_version}, ${report.hardware_concurrency} logical CPUs`];
  lines.push(`${"id".padEnd(56)} ${"thr".padStart(3)} ${"median ms".padStart(10)} ${"min ms".padStart(10)}  note`);
  for (const r of report.records) {
    let note = "";
    if (r.error) note = `error: ${r.error}`;
    else if (r.skipped) note = `skipped: ${r.skipped}`;
    else if (r.rtf) note = `rtf ${r.rtf.toFixed(1)}x`;
    else if (r.max_abs_diff_vs_sonomaly != null) note = `max |diff| ${r.max_abs_diff_vs_sonomaly.toExponential(2)}`;
    else if (r.windows) note = `${r.windows} windows`;
    else if (r.model_ready_ms) note = `model ready at ${r.model_ready_ms.toFixed(0)} ms`;
    else if (r.group === "score-hour") {
      note = `1 hour in one file: renderer peak ${r.renderer_peak_rss_mib.toFixed(0)} MiB, ${r.progress_messages} progress messages`;
    } else if (r.group === "fit") {
      note = `${r.clips} clips (${(r.audio_seconds / 60).toFixed(1)} min): analysis ${(r.analysis_ms / 1000).toFixed(1)} s, ` +
        `finish ${(r.finish_ms / 1000).toFixed(1)} s, renderer peak ${r.renderer_peak_rss_mib.toFixed(0)} MiB, ` +
        (r.wasm_memory_mib != null ? `wasm memory ${r.wasm_memory_mib.toFixed(0)} MiB, ` : `${r.workers} workers, `) +
        `bank ${r.memory_bank}`;
    }
    if (r.group === "size") {
      lines.push(`${r.id.padEnd(56)} ${(r.bytes / 1e6).toFixed(2).padStart(8)} MB, gzip -9 ${(r.gzip_bytes / 1e6).toFixed(2)} MB`);
      continue;
    }
    const f = (v) => (v == null ? "-" : v.toFixed(1)).padStart(10);
    lines.push(`${r.id.padEnd(56)} ${String(r.threads ?? "").padStart(3)} ${f(r.median_ms)} ${f(r.min_ms)}  ${note}`);
  }
  return lines.join("\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  checkPrerequisites(opts.only);
  const plain = await serve(false);
  const isolated = await serve(true);
  // Imported here, after checkPrerequisites, so that a missing `npm ci` gives its message rather than a stack.
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  try {
    let envs = { plain: {}, isolated: {} };
    if (opts.only === "fit") {
      await benchFit(browser, plain.origin);
      await benchFitPage(browser, plain.origin);
      await benchScoreHour(browser, plain.origin);
    } else if (opts.only === "fit-page") {
      await benchFitPage(browser, plain.origin);
      await benchScoreHour(browser, plain.origin);
    } else if (opts.only === "pipeline") {
      await benchPipeline(browser, plain.origin, opts.reps);
    } else {
      const b = await benchBackbones(browser, plain.origin, isolated.origin, opts.reps);
      envs = b.envs;
      await benchPipeline(browser, plain.origin, opts.reps);
      await benchApp(browser, isolated.origin, opts.quick ? 1 : 3);
      sizeRecords(b.ortWasm);
    }
    const report = {
      chromium: browser.version(),
      ort_web_version: envs.plain.ortVersion,
      sonomaly_version: envs.plain.sonomalyVersion,
      sonomaly_simd: envs.plain.sonomalySimd,
      user_agent: envs.plain.userAgent,
      hardware_concurrency: envs.plain.hardwareConcurrency,
      cross_origin_isolated: { plain: envs.plain.crossOriginIsolated, isolated: envs.isolated.crossOriginIsolated },
      warmup: WARMUP,
      reps: opts.reps,
      records,
    };
    fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
    fs.writeFileSync(opts.out, JSON.stringify(report, null, 2) + "\n");
    console.log(table(report));
    console.log(`wrote ${opts.out}`);
  } finally {
    await browser.close();
    plain.server.close();
    isolated.server.close();
  }
  if (failures) fail(`${failures} measurement(s) failed (see "error" in the records)`);
}

await main();
