// End-to-end tests of the web page: playwright-core drives Debian's Chromium (never a downloaded browser)
// against the built site (dist/), served by `./build.sh serve --no-build` unless BASE_URL is given.
//
//   cd tests/e2e && npm test                 (serves ../../dist on a free port itself)
//   BASE_URL=http://localhost:8080 npm test  (uses a server you run)
//
// Real clips come from ../shared/data (beside the repository); tests that need them skip with a reason when it
// is absent. Screenshots go to tests/e2e/out/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const OUT = path.join(HERE, "out");
const SHARED = path.resolve(ROOT, "../shared/data/industrial/mimii_fan_id00");
const DEMO = path.join(ROOT, "www/demo");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Loading and compiling the model in wasm on a busy 2-core machine can take a while.
const LOAD_TIMEOUT = 240_000;
const SCORE_TIMEOUT = 180_000;

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

let baseUrl = process.env.BASE_URL;
let server = null;
const metrics = {};

fs.mkdirSync(OUT, { recursive: true });

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
  fs.writeFileSync(path.join(OUT, "metrics.json"), JSON.stringify(metrics, null, 2));
  console.log("e2e metrics:", JSON.stringify(metrics));
});

// A browser + page that records every request and fails the test on one outside the page's origin.
async function openPage(extraArgs = []) {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...BASE_ARGS, ...extraArgs] });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 1100 } });
  const foreign = [];
  const origin = new URL(baseUrl).origin;
  context.on("request", (req) => {
    const u = req.url();
    if (u.startsWith("data:") || u.startsWith("blob:")) return;
    if (new URL(u).origin !== origin) foreign.push(u);
  });
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => logs.push(`worker ${m.type()}: ${m.text()}`)));
  const t0 = Date.now();
  await page.goto(`${baseUrl}/`);
  return {
    browser,
    page,
    logs,
    t0,
    async close() {
      await browser.close();
      assert.deepEqual(foreign, [], "the page made requests outside its own origin");
    },
  };
}

async function waitReady(page) {
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return s.startsWith("Ready") || s.startsWith("Error");
  }, null, { timeout: LOAD_TIMEOUT });
  const status = await page.getByTestId("status").textContent();
  assert.ok(status.startsWith("Ready"), `the page did not get ready: ${status}`);
}

// Waits until the status line says a scoring finished (or an error), returns the score and verdict.
async function waitScored(page, name) {
  await page.waitForFunction((n) => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return s.startsWith(`Scored ${n}`) || s.startsWith("Error");
  }, name, { timeout: SCORE_TIMEOUT });
  const status = await page.getByTestId("status").textContent();
  assert.ok(status.startsWith(`Scored ${name}`), `scoring ${name} failed: ${status}`);
  const score = Number(await page.getByTestId("clip-score").textContent());
  const verdict = (await page.getByTestId("verdict").textContent()).trim();
  return { score, verdict };
}

// Counts heatmap pixels that are painted and coloured (not grey, not transparent).
function colouredPixels(page) {
  return page.evaluate(() => {
    const c = document.querySelector('[data-testid="heatmap"]');
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      const max = Math.max(d[i], d[i + 1], d[i + 2]);
      const min = Math.min(d[i], d[i + 1], d[i + 2]);
      if (d[i + 3] > 0 && max - min > 40) n++;
    }
    return { coloured: n, total: c.width * c.height };
  });
}

function sharedClips(kind, n) {
  const dir = path.join(SHARED, kind);
  if (!fs.existsSync(dir)) return null;
  return fs.readdirSync(dir).filter((f) => f.endsWith(".wav")).sort().slice(0, n).map((f) => path.join(dir, f));
}

test("first load shows the model and the demo bank; the demo anomalous clip is scored with a heatmap", async (t) => {
  const s = await openPage();
  try {
    await waitReady(s.page);
    metrics.modelReadyMs = await s.page.evaluate(() => sonomaly.timings.modelReadyMs);
    const model = await s.page.locator("#model-info").textContent();
    const frontEnd = await s.page.locator("#frontend-info").textContent();
    const bank = await s.page.locator("#bank-info").textContent();
    assert.match(model, /aisfx-cnn14/);
    assert.match(frontEnd, /44100 Hz/);
    assert.match(bank, /demo bank/i, "the demo bank should be loaded at start");
    await s.page.screenshot({ path: path.join(OUT, "first-load.png"), fullPage: true });

    await s.page.getByTestId("demo-abnormal").click();
    const abnormal = await waitScored(s.page, "fan-abnormal.wav");
    metrics.firstHeatmapMs = await s.page.evaluate(() => sonomaly.timings.firstHeatmapMs);
    metrics.demoAbnormal = abnormal;
    assert.ok(Number.isFinite(abnormal.score) && abnormal.score > 0, `score ${abnormal.score}`);
    assert.ok(["normal", "anomalous"].includes(abnormal.verdict));
    assert.equal(abnormal.verdict, "anomalous", "the demo anomalous clip should be judged anomalous by the demo bank");
    const px = await colouredPixels(s.page);
    assert.ok(px.coloured > 0, `the heatmap has no coloured pixel (${px.total} pixels)`);
    await s.page.screenshot({ path: path.join(OUT, "demo-anomalous.png"), fullPage: true });
    await s.page.screenshot({ path: path.join(OUT, "demo-anomalous-top.png") });

    // The threshold slider moves the verdict live.
    await s.page.getByTestId("threshold").evaluate((el, v) => {
      el.value = String(v);
      el.dispatchEvent(new Event("input"));
    }, abnormal.score * 1.5);
    assert.equal((await s.page.getByTestId("verdict").textContent()).trim(), "normal");
    await s.page.locator("#threshold-reset").click();
    assert.equal((await s.page.getByTestId("verdict").textContent()).trim(), "anomalous");

    // normal/00000019.wav: the one normal fan clip the demo bank was not fitted on (www/demo/LICENSE.md).
    const normals = sharedClips("normal", 20)?.slice(-1);
    if (!normals) {
      t.diagnostic(`skipped the real normal clip: ${SHARED} is absent`);
    } else {
      await s.page.getByTestId("file-input").setInputFiles(normals[0]);
      const normal = await waitScored(s.page, path.basename(normals[0]));
      metrics.sharedNormal = normal;
      assert.ok(normal.score < abnormal.score, `normal ${normal.score} should score below anomalous ${abnormal.score}`);
      await s.page.screenshot({ path: path.join(OUT, "shared-normal.png"), fullPage: true });
    }

    await s.page.getByTestId("demo-normal").click();
    const demoNormal = await waitScored(s.page, "fan-normal.wav");
    metrics.demoNormal = demoNormal;
    assert.ok(demoNormal.score < abnormal.score, `demo normal ${demoNormal.score} should score below ${abnormal.score}`);

    // Second visit: the model comes from the Cache API.
    const t1 = Date.now();
    await s.page.reload();
    await waitReady(s.page);
    metrics.secondVisitReadyMs = Date.now() - t1;
    assert.match(await s.page.locator("#model-info").textContent(), /from the browser cache/);
    await s.page.getByTestId("demo-abnormal").click();
    await waitScored(s.page, "fan-abnormal.wav");
    metrics.secondVisitFirstHeatmapMs = Date.now() - t1;

    // Offline: the service worker has the page, the worker's cache has the model.
    await s.page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    await s.page.context().setOffline(true);
    await s.page.reload();
    await waitReady(s.page);
    await s.page.getByTestId("demo-normal").click();
    await waitScored(s.page, "fan-normal.wav");
    await s.page.context().setOffline(false);
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
});

test("a bad audio file and a bad bank file give plain errors in the page", async () => {
  const s = await openPage();
  try {
    await waitReady(s.page);
    await s.page.getByTestId("file-input").setInputFiles({ name: "broken.wav", mimeType: "audio/wav", buffer: Buffer.from("RIFF....WAVEnot really audio") });
    await s.page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 30_000 });
    assert.match(await s.page.locator("#error-text").textContent(), /broken\.wav/);
    await s.page.getByTestId("bank-input").setInputFiles({ name: "broken.bank", mimeType: "application/octet-stream", buffer: Buffer.from("this is not a bank file at all") });
    await s.page.waitForFunction(() => /broken\.bank/.test(document.getElementById("error-text").textContent), null, { timeout: 30_000 });
    const text = await s.page.locator("#error-text").textContent();
    assert.match(text, /was not loaded/);
    assert.doesNotMatch(text, /panicked|RuntimeError|unreachable/i);
    // The page still works after both errors.
    await s.page.getByTestId("demo-normal").click();
    await waitScored(s.page, "fan-normal.wav");
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
});

test("a bank is fitted from files in the page, downloaded, kept over a reload, and loaded back", async (t) => {
  const s = await openPage();
  try {
    await waitReady(s.page);
    let files = sharedClips("normal", 4);
    if (!files) {
      t.diagnostic(`${SHARED} is absent: fitting on the demo normal clip only`);
      files = [path.join(DEMO, "fan-normal.wav")];
    }
    await s.page.getByTestId("fit-input").setInputFiles(files);
    await s.page.waitForFunction((n) => document.querySelectorAll("#fit-list input:checked").length === n, files.length);
    const t0 = Date.now();
    await s.page.getByTestId("fit-button").click();
    await s.page.waitForFunction(() => {
      const st = document.querySelector('[data-testid="status"]').textContent;
      return st.startsWith("Fitted") || st.startsWith("Error");
    }, null, { timeout: SCORE_TIMEOUT * 2 });
    const status = await s.page.getByTestId("status").textContent();
    assert.match(status, /^Fitted a bank on/, status);
    metrics.fitMs = Date.now() - t0;
    metrics.fitClips = files.length;
    assert.match(await s.page.locator("#bank-info").textContent(), /fitted bank/);

    const [dl] = await Promise.all([s.page.waitForEvent("download"), s.page.getByTestId("fit-download").click()]);
    const saved = path.join(OUT, "fitted.bank");
    await dl.saveAs(saved);
    const size = fs.statSync(saved).size;
    assert.ok(size > 1000, `the downloaded bank is ${size} bytes`);
    metrics.fittedBankBytes = size;

    // A reload keeps the fitted bank (IndexedDB).
    await s.page.reload();
    await waitReady(s.page);
    assert.match(await s.page.locator("#bank-info").textContent(), /last fitted bank/);

    // The downloaded file loads back and scores.
    await s.page.getByTestId("bank-input").setInputFiles(saved);
    await s.page.waitForFunction(() => document.querySelector('[data-testid="status"]').textContent.startsWith("Loaded the bank") ||
      !document.getElementById("error").hidden);
    assert.match(await s.page.getByTestId("status").textContent(), /Loaded the bank fitted\.bank/);
    await s.page.getByTestId("demo-abnormal").click();
    const r = await waitScored(s.page, "fan-abnormal.wav");
    assert.ok(Number.isFinite(r.score));
    await s.page.screenshot({ path: path.join(OUT, "fitted-bank.png"), fullPage: true });
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
});

// Records `seconds` of Chromium's fake microphone fed from `wav`; returns the final score and live stats.
async function recordFrom(wav, seconds, shot) {
  const s = await openPage([
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}%noloop`,
  ]);
  try {
    await waitReady(s.page);
    await s.page.getByTestId("record-button").click();
    await s.page.waitForFunction(() => /Recording from the microphone/.test(document.querySelector('[data-testid="status"]').textContent) ||
      !document.getElementById("error").hidden, null, { timeout: 30_000 });
    assert.match(await s.page.getByTestId("status").textContent(), /Recording from the microphone/);
    const t0 = Date.now();
    await s.page.waitForFunction(() => Number(document.querySelector('[data-testid="live-updates"]').dataset.count) >= 1, null, { timeout: 60_000 });
    const firstLiveMs = Date.now() - t0;
    const wait = seconds * 1000 - (Date.now() - t0);
    if (wait > 0) await s.page.waitForTimeout(wait);
    const liveUpdates = Number(await s.page.getByTestId("live-updates").getAttribute("data-count"));
    await s.page.screenshot({ path: path.join(OUT, `${shot}-live.png`), fullPage: true });
    await s.page.getByTestId("record-button").click();
    await s.page.waitForFunction(() => /^Recording stopped/.test(document.querySelector('[data-testid="status"]').textContent) ||
      !document.getElementById("error").hidden, null, { timeout: 60_000 });
    const status = await s.page.getByTestId("status").textContent();
    assert.match(status, /^Recording stopped/, status);
    const score = Number(await s.page.getByTestId("clip-score").textContent());
    const rtf = Number(await s.page.locator("#rec-info").getAttribute("data-rtf"));
    const rate = await s.page.evaluate(() => sonomaly.rec.sampleRate);
    await s.page.screenshot({ path: path.join(OUT, `${shot}-stopped.png`), fullPage: true });
    // Save WAV gives a WAV file.
    const [dl] = await Promise.all([s.page.waitForEvent("download"), s.page.locator("#save-wav").click()]);
    const wavPath = path.join(OUT, `${shot}.wav`);
    await dl.saveAs(wavPath);
    const head = fs.readFileSync(wavPath).subarray(0, 12).toString("latin1");
    assert.equal(head.slice(0, 4) + head.slice(8, 12), "RIFFWAVE");
    return { score, liveUpdates, firstLiveMs, rtf, contextRate: rate };
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
}

test("recording from the (fake) microphone gives live scores; an anomalous recording scores above a normal one", async () => {
  const normal = await recordFrom(path.join(DEMO, "fan-normal.wav"), 9, "record-normal");
  const abnormal = await recordFrom(path.join(DEMO, "fan-abnormal.wav"), 9, "record-abnormal");
  metrics.recordNormal = normal;
  metrics.recordAbnormal = abnormal;
  for (const r of [normal, abnormal]) {
    assert.ok(r.liveUpdates >= 2, `only ${r.liveUpdates} live updates arrived`);
    assert.ok(Number.isFinite(r.score) && r.score > 0);
  }
  assert.ok(abnormal.score > normal.score, `anomalous recording ${abnormal.score} should score above normal ${normal.score}`);
});
