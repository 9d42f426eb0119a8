// End-to-end tests of reading audio files in the page: the core's decoder in the worker (the command line's), the
// decoding fixtures of tests/fixtures/decode/ (tests/reference/decode_fixtures.py), the browser only as the
// fallback for Opus, warnings in the status line, the same scores as `sonomaly score`, and a file longer than 10
// minutes streamed. Needs dist/ (./build.sh build) and the native CLI (cargo build --release), as ./build.sh test
// provides.
//
//   cd tests/e2e && node --test decode.test.js

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { sniffSampleRate } from "../../www/audio.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const FIX = path.join(ROOT, "tests/fixtures/decode");
const CLI = path.join(ROOT, "target/release/sonomaly");
const DEMO_BANK = path.join(ROOT, "www/demo/fan-demo.bank");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const LOAD_TIMEOUT = 240_000;
const SCORE_TIMEOUT = 180_000;
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

let baseUrl = process.env.BASE_URL;
let server = null;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

before(async () => {
  if (!baseUrl) {
    assert.ok(fs.existsSync(path.join(ROOT, "dist/index.html")), "dist/ is not built: run ./build.sh build first");
    const port = await freePort();
    server = spawn(path.join(ROOT, "build.sh"), ["serve", "--no-build"], {
      env: { ...process.env, PORT: String(port), QUIET: "1" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    baseUrl = `http://localhost:${port}`;
  }
  baseUrl = baseUrl.replace(/\/$/, "");
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(`${baseUrl}/`)).ok) break;
    } catch (e) {
      // not yet
    }
    if (Date.now() > end) throw new Error(`the page server at ${baseUrl} did not start`);
    await new Promise((r) => setTimeout(r, 200));
  }
});

after(() => {
  if (server) server.kill();
});

async function openPage() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const page = await (await browser.newContext()).newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(`${baseUrl}/`);
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return s.startsWith("Ready") || s.startsWith("Error");
  }, null, { timeout: LOAD_TIMEOUT });
  assert.match(await page.getByTestId("status").textContent(), /^Ready/);
  return { browser, page, logs };
}

// Opens one file in the page; returns the status line (or the error text) and the last clip's fields.
async function open(page, file) {
  const before = await page.evaluate(() => sonomaly.clips.length);
  await page.evaluate(() => {
    document.getElementById("error").hidden = true;
  });
  await page.getByTestId("file-input").setInputFiles(file);
  const name = typeof file === "string" ? path.basename(file) : file.name;
  await page.waitForFunction(([n, k]) => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return (s.startsWith(`Scored ${n}`) && sonomaly.clips.length > k) || !document.getElementById("error").hidden;
  }, [name, before], { timeout: SCORE_TIMEOUT });
  const status = await page.getByTestId("status").textContent();
  const error = await page.evaluate(() => (document.getElementById("error").hidden ? null : document.getElementById("error-text").textContent));
  const clip = await page.evaluate(() => {
    const c = sonomaly.clips[sonomaly.clips.length - 1];
    return c && { name: c.name, duration: c.duration, sampleRate: c.sampleRate, decodedBy: c.decodedBy, score: c.result.score, hasSamples: !!c.samples, segments: c.result.segments };
  });
  return { status, error, clip: error ? null : clip };
}

// Segments from the page and from the CLI: the same runs (up to a frame where the wasm and native curves differ
// in their last bits at the threshold), the same peaks.
function sameSegments(page, cli, what) {
  assert.equal(page.length, cli.length, `${what}: ${page.length} segments in the page, ${cli.length} from the CLI`);
  for (const [i, c] of cli.entries()) {
    const p = page[i];
    assert.ok(Math.abs(p.startS - c.start_s) <= 0.011 && Math.abs(p.endS - c.end_s) <= 0.011,
      `${what}: segment ${i}: page ${p.startS}–${p.endS} s, CLI ${c.start_s}–${c.end_s} s`);
    assert.ok(Math.abs(p.peak - c.peak) <= 1e-4 * Math.max(1, Math.abs(c.peak)), `${what}: segment ${i}: peaks ${p.peak}, ${c.peak}`);
  }
}

function cliScore(file, args = []) {
  const out = execFileSync(CLI, ["score", "--bank", DEMO_BANK, ...args, file], { stdio: ["ignore", "pipe", "ignore"] });
  return JSON.parse(out.toString().trim().split("\n")[0]);
}

test("sniffSampleRate reads FLAC behind an ID3v2 tag (the browser fallback's rate)", () => {
  const buf = fs.readFileSync(path.join(FIX, "id3-flac.flac"));
  assert.equal(sniffSampleRate(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)), 44100);
  for (const [f, rate] of [["tone.flac", 44100], ["tone.wav", 22050], ["tone.ogg", 32000], ["tone.mp3", 44100], ["opus.ogg", 48000]]) {
    const b = fs.readFileSync(path.join(FIX, f));
    assert.equal(sniffSampleRate(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)), rate, f);
  }
});

test("the page reads every decoding fixture with the core's decoder, as the command line does", async () => {
  assert.ok(fs.existsSync(CLI), `the native CLI is not built: cargo build --release (${CLI})`);
  const s = await openPage();
  try {
    const cases = JSON.parse(fs.readFileSync(path.join(FIX, "cases.json"), "utf8")).cases;
    for (const c of cases) {
      const file = path.join(FIX, c.file);
      const r = await open(s.page, file);
      if (c.error && !c.browser_fallback) {
        assert.ok(r.error, `${c.file} should be refused: ${r.status}`);
        assert.ok(r.error.includes(c.error), `${c.file}: ${r.error}`);
        continue;
      }
      assert.equal(r.error, null, `${c.file}: ${r.error}`);
      if (c.browser_fallback) {
        assert.equal(r.clip.decodedBy, "browser", c.file);
        assert.match(r.status, /decoded by the browser, not by sonomaly's decoder/);
        continue;
      }
      assert.equal(r.clip.decodedBy, "sonomaly", c.file);
      assert.equal(r.clip.sampleRate, c.links[0].rate, `${c.file}: sample rate`);
      const seconds = c.present_frames ? c.present_frames / c.links[0].rate : c.links.reduce((t, l) => t + l.frames / l.rate, 0);
      assert.ok(Math.abs(r.clip.duration - seconds) < 1e-3, `${c.file}: ${r.clip.duration} s, want ${seconds}`);
      if (c.warning) assert.ok(r.status.includes(c.warning), `${c.file}: the status should warn (${c.warning}): ${r.status}`);
      else assert.doesNotMatch(r.status, /Warning/, c.file);
      if (c.chained) assert.match(r.status, /holds 2 chained streams/);
      const native = cliScore(file);
      const rel = Math.abs(r.clip.score - native.score) / native.score;
      assert.ok(rel <= 1e-5, `${c.file}: page ${r.clip.score}, CLI ${native.score}`);
    }
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.browser.close();
  }
});

test("a file longer than 10 minutes is scored as a stream in the page, as by the command line", async () => {
  // 11 minutes of 8 kHz mono 16-bit noise with a slow ramp (10.6 MB).
  const rate = 8000;
  const frames = 660 * rate;
  const buf = Buffer.alloc(44 + 2 * frames);
  buf.write("RIFF", 0);
  buf.writeUInt32LE(36 + 2 * frames, 4);
  buf.write("WAVEfmt ", 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(2 * rate, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36);
  buf.writeUInt32LE(2 * frames, 40);
  let x = 0x2545f491n;
  for (let i = 0; i < frames; i++) {
    x = (x * 1103515245n + 12345n) & 0x7fffffffn;
    buf.writeInt16LE(Number(x >> 20n) - 1024 + ((i / 1000) | 0) % 2000, 44 + 2 * i);
  }
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sonomaly-e2e-")), "eleven-minutes.wav");
  fs.writeFileSync(file, buf);
  const s = await openPage();
  try {
    const r = await open(s.page, file);
    assert.equal(r.error, null, r.error);
    assert.match(r.status, /streamed/);
    assert.equal(r.clip.hasSamples, false, "a streamed file keeps no samples in the page");
    assert.ok(Math.abs(r.clip.duration - 660) < 0.01, `duration ${r.clip.duration}`);
    const native = cliScore(file);
    const rel = Math.abs(r.clip.score - native.score) / native.score;
    assert.ok(rel <= 1e-5, `page ${r.clip.score}, CLI ${native.score}`);
    // The segments are the core's, found on the curve at full resolution (the figure's is pooled over time):
    // the CLI's, at the bank's threshold and with the slider at the value given to --threshold.
    sameSegments(r.clip.segments, native.segments, "the bank's threshold");
    const t = Math.round((native.score - 0.5) * 100) / 100;
    const moved = await s.page.evaluate(async (v) => {
      const el = document.querySelector('[data-testid="threshold"]');
      el.value = String(v);
      el.dispatchEvent(new Event("input"));
      for (let i = 0; i < 600 && !(sonomaly.levels && sonomaly.levels.value === Number(el.value)); i++) {
        await new Promise((res) => setTimeout(res, 100));
      }
      return { value: Number(el.value), found: sonomaly.current.result.found };
    }, t);
    assert.ok(moved.found, "no segments came for the slider's value");
    const cliMoved = cliScore(file, ["--threshold", String(moved.value)]).segments;
    assert.ok(cliMoved.length > 0, `no segments above --threshold ${moved.value}: nothing compared`);
    sameSegments(moved.found.segments, cliMoved, `--threshold ${moved.value}`);
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.browser.close();
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
});
