// Shared by the end-to-end tests: the page server, a browser per test, and waits on the page's state.
//
// playwright-core drives Debian's Chromium (never a downloaded browser) against the built site (dist/), served
// by `./build.sh serve --no-build` on a free port unless BASE_URL is given.

import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "../..");
export const OUT = path.join(HERE, "out");
export const DATA = path.resolve(ROOT, "../shared/data/industrial");
export const SHARED = path.join(DATA, "mimii_fan_id00");
export const DEMO = path.join(ROOT, "www/demo");
// The page's default model, and the model it ships for banks fitted with it (banks of format version 1).
export const MODEL_DIR = path.join(ROOT, "models/efficientat-mn04");
export const AISFX_DIR = path.join(ROOT, "models/aisfx-cnn14");
/** A bank of format version 1 (the demo bank of that version, fitted with aisfx-cnn14). */
export const V1_BANK = path.join(ROOT, "tests/fixtures/fan-demo-v1.bank");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Loading and compiling the model in wasm on a busy 2-core machine can take a while.
export const LOAD_TIMEOUT = 240_000;
export const SCORE_TIMEOUT = 180_000;

const BASE_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
  "--autoplay-policy=no-user-gesture-required",
];

fs.mkdirSync(OUT, { recursive: true });

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

async function waitForServer(url, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch (e) {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the page server at ${url} did not start`);
}

let baseUrl = process.env.BASE_URL;
let server = null;

/** Starts (or finds) the page server before the file's tests and stops it after them. */
export function useServer() {
  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
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
    await waitForServer(`${baseUrl}/`, 20_000);
  });
  after(() => {
    if (server) server.kill();
  });
}

export function base() {
  return baseUrl;
}

/** A browser + page that records every request and fails the test on one outside the page's origin. `setup`
 * runs on the context before the page loads (e.g. to delay a request). */
export async function openPage(extraArgs = [], setup = null) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...BASE_ARGS, ...extraArgs] });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 1100 } });
  const foreign = [];
  const origin = new URL(baseUrl).origin;
  context.on("request", (req) => {
    const u = req.url();
    if (u.startsWith("data:") || u.startsWith("blob:")) return;
    if (new URL(u).origin !== origin) foreign.push(u);
  });
  if (setup) await setup(context);
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => logs.push(`worker ${m.type()}: ${m.text()}`)));
  const t0 = Date.now();
  await page.goto(`${baseUrl}/`);
  return {
    browser,
    context,
    page,
    logs,
    t0,
    async close() {
      await browser.close();
      assert.deepEqual(foreign, [], "the page made requests outside its own origin");
    },
  };
}

/** Runs `fn(session)` on a fresh page; prints the page's console if it throws. */
export async function withPage(fn, extraArgs = [], setup = null) {
  const s = await openPage(extraArgs, setup);
  try {
    return await fn(s);
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
}

export async function errorText(page) {
  return (await page.locator("#error").isVisible()) ? (await page.locator("#error-text").textContent()).trim() : null;
}

/** Waits until the page is ready (or has shown an error) and asserts that it is ready. */
export async function waitReady(page) {
  // `sonomaly.ready`: input queued before then may already be running (and changing the status line).
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return (window.sonomaly && sonomaly.ready === true) || s.startsWith("Ready") || s.startsWith("Error") ||
      !document.getElementById("error").hidden;
  }, null, { timeout: LOAD_TIMEOUT });
  const status = await page.getByTestId("status").textContent();
  const ok = await page.evaluate(() => window.sonomaly.ready === true) || status.startsWith("Ready");
  assert.ok(ok, `the page did not get ready: ${status} ${await errorText(page)}`);
}

/** Dismisses the error box if it shows (so that the next wait does not see an earlier error). */
export async function dismiss(page) {
  if (await page.locator("#error").isVisible()) await page.locator("#error-close").click();
}

/** Waits until nothing is going on: no action, no background rescoring. */
export async function waitIdle(page, timeout = SCORE_TIMEOUT) {
  await page.waitForFunction(() => sonomaly.busy === 0 && !sonomaly.rescoring, null, { timeout });
}

/** Waits until the clip `label` is on screen, scored with the bank in use (or an error shows); returns its score
 * and verdict. */
export async function waitScored(page, label) {
  await page.waitForFunction((n) => {
    if (!document.getElementById("error").hidden) return true;
    const c = sonomaly.current;
    if (!c || (c.label ?? c.name) !== n || !c.result || sonomaly.busy !== 0) return false;
    return sonomaly.bankSerial === undefined || c.result.bankSerial === sonomaly.bankSerial;
  }, label, { timeout: SCORE_TIMEOUT });
  const err = await errorText(page);
  assert.equal(err, null, `scoring ${label} failed: ${err}`);
  const score = Number(await page.getByTestId("clip-score").textContent());
  const verdict = (await page.getByTestId("verdict").textContent()).trim();
  return { score, verdict };
}

/** Waits for the status line to start with `prefix`, or for an error; asserts the former. */
export async function waitStatus(page, prefix, timeout = SCORE_TIMEOUT) {
  await page.waitForFunction((p) => document.querySelector('[data-testid="status"]').textContent.startsWith(p) ||
    !document.getElementById("error").hidden, prefix, { timeout });
  const err = await errorText(page);
  assert.equal(err, null, `waiting for "${prefix}…": ${err}`);
}

/** The scored clips list: [{label, text, score, fresh}] (score: the number shown, fresh: not marked stale). */
export function clipList(page) {
  return page.evaluate(() => [...document.querySelectorAll("#clips li")].map((li) => {
    const b = li.querySelector("button");
    const tag = li.querySelector(".tag");
    const m = /(-?\d+\.\d+)/.exec(tag ? tag.textContent : "");
    return {
      label: b.textContent,
      text: tag ? tag.textContent : "",
      score: m ? Number(m[1]) : null,
      fresh: li.dataset.fresh !== "0",
    };
  }));
}

/** Waits until no clip in the list is marked stale (and nothing is being done). */
export async function waitAllFresh(page) {
  await page.waitForFunction(() => sonomaly.busy === 0 && !sonomaly.rescoring &&
    ![...document.querySelectorAll("#clips li")].some((li) => li.dataset.fresh === "0"), null, { timeout: SCORE_TIMEOUT });
}

/** Runs `act` (e.g. a click that loads a bank) and waits until the bank in use changed and nothing is going on. */
export async function bankChange(page, act) {
  await page.evaluate(() => (window.bankBefore = sonomaly.bank));
  await act();
  await page.waitForFunction(() => (sonomaly.bank !== window.bankBefore && sonomaly.busy === 0) ||
    !document.getElementById("error").hidden, null, { timeout: SCORE_TIMEOUT });
  const err = await errorText(page);
  assert.equal(err, null, `changing the bank: ${err}`);
}

/** Fits a bank from the ticked material and waits for the result. */
export async function fit(page) {
  await page.evaluate(() => (window.bankBeforeFit = sonomaly.bank));
  await page.getByTestId("fit-button").click();
  await page.waitForFunction(() => (sonomaly.bank !== window.bankBeforeFit && sonomaly.busy === 0) ||
    !document.getElementById("error").hidden, null, { timeout: SCORE_TIMEOUT * 2 });
  const err = await errorText(page);
  assert.equal(err, null, `fitting: ${err}`);
  assert.match(await page.locator("#bank-info").textContent(), /fitted bank/);
}

/** Drops files on the page as a user would (a DataTransfer with File objects). */
export async function dropFiles(page, files) {
  const payload = files.map((f) => ({ name: path.basename(f), b64: fs.readFileSync(f).toString("base64") }));
  await page.evaluate((list) => {
    const dt = new DataTransfer();
    for (const { name, b64 } of list) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], name));
    }
    document.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, payload);
}

export function sharedClips(kind, n) {
  const dir = path.join(SHARED, kind);
  if (!fs.existsSync(dir)) return null;
  return fs.readdirSync(dir).filter((f) => f.endsWith(".wav")).sort().slice(0, n).map((f) => path.join(dir, f));
}

/** Writes a 16-bit PCM WAV: `channels` is an array of Float32Array (one per channel, same length). */
export function writeWav(file, channels, sampleRate) {
  const n = channels[0].length;
  const c = channels.length;
  const buf = Buffer.alloc(44 + n * c * 2);
  buf.write("RIFF", 0, "latin1");
  buf.writeUInt32LE(36 + n * c * 2, 4);
  buf.write("WAVEfmt ", 8, "latin1");
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20);
  buf.writeUInt16LE(c, 22);
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * c * 2, 28);
  buf.writeUInt16LE(c * 2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write("data", 36, "latin1");
  buf.writeUInt32LE(n * c * 2, 40);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < c; k++) {
      const v = Math.max(-1, Math.min(1, channels[k][i]));
      buf.writeInt16LE(Math.round(v < 0 ? v * 0x8000 : v * 0x7fff), 44 + (i * c + k) * 2);
    }
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, buf);
  return file;
}

/** Seeded white noise in [-amp, amp]. */
export function noise(n, amp, seed = 1) {
  let s = seed >>> 0 || 1;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    x[i] = ((s / 0xffffffff) * 2 - 1) * amp;
  }
  return x;
}

/** The first channel of a 16-bit PCM WAV file (a plain RIFF with fmt and data chunks): {samples, rate}. */
export function readWavMono(file) {
  const b = fs.readFileSync(file);
  let o = 12;
  let rate = 0;
  let channels = 1;
  while (o + 8 <= b.length) {
    const id = b.toString("latin1", o, o + 4);
    const size = b.readUInt32LE(o + 4);
    if (id === "fmt ") {
      channels = b.readUInt16LE(o + 10);
      rate = b.readUInt32LE(o + 12);
    }
    if (id === "data") {
      const n = Math.floor(size / 2 / channels);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = b.readInt16LE(o + 8 + i * channels * 2) / 32768;
      return { samples: x, rate };
    }
    o += 8 + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

/** A fresh scratch folder under out/. */
export function scratch(name) {
  const dir = path.join(OUT, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Moves the threshold slider to `to` (a number, "min" or "max") as a user would and waits until the page has the
 * core's thresholds for it. */
export async function setThreshold(page, to) {
  await page.getByTestId("threshold").evaluate((el, v) => {
    el.value = String(v === "min" ? el.min : v === "max" ? el.max : v);
    el.dispatchEvent(new Event("input"));
  }, to);
  await page.waitForFunction(() => sonomaly.levels &&
    sonomaly.levels.value === Number(document.querySelector('[data-testid="threshold"]').value), null, { timeout: 30_000 });
}

/** `n` clips of normal fan sound to fit on: MIMII fan normal clips from ../shared, else the demo normal clip cut
 * into `n` parts (written under out/). */
export function normalMaterial(n, name = "normal-parts") {
  const real = sharedClips("normal", n);
  if (real && real.length === n) return real;
  const dir = scratch(name);
  const { samples, rate } = readWavMono(path.join(DEMO, "fan-normal.wav"));
  const len = Math.floor(samples.length / n);
  return Array.from({ length: n }, (_, k) =>
    writeWav(path.join(dir, `fan-normal-part${k + 1}.wav`), [samples.slice(k * len, (k + 1) * len)], rate));
}
