// End-to-end tests of the web page: playwright-core drives Debian's Chromium (never a downloaded browser)
// against the built site (dist/), served by `./build.sh serve --no-build` unless BASE_URL is given.
//
//   cd tests/e2e && npm test                 (serves ../../dist on a free port itself)
//   BASE_URL=http://localhost:8080 npm test  (uses a server you run)
//
// Real clips come from ../shared/data (beside the repository); tests that need them skip with a reason when it
// is absent. Screenshots go to tests/e2e/out/. This file: the main paths (first load, demo clips, offline, a
// fit, recording); truth.test.js: that what the page shows is true of the bank in use (issue 11); default.test.js:
// the page with the default of issue 10 (EfficientAT mn04, fused z-scored banks, aisfx banks, presets, live view).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  DEMO, OUT, SHARED, normalMaterial, openPage, setThreshold, sharedClips, useServer, waitReady, waitScored, waitStatus, fit,
} from "./helpers.js";

useServer();
const metrics = {};

after(() => {
  fs.writeFileSync(path.join(OUT, "metrics.json"), JSON.stringify(metrics, null, 2));
  console.log("e2e metrics:", JSON.stringify(metrics));
});

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

test("first load shows the model and the demo bank; the demo anomalous clip is scored with a heatmap", async (t) => {
  const s = await openPage();
  try {
    await waitReady(s.page);
    metrics.modelReadyMs = await s.page.evaluate(() => sonomaly.timings.modelReadyMs);
    const model = await s.page.locator("#model-info").textContent();
    const frontEnd = await s.page.locator("#frontend-info").textContent();
    const bank = await s.page.locator("#bank-info").textContent();
    assert.match(model, /^efficientat-mn04 \(features\.0–16; MIT\)/);
    assert.match(frontEnd, /^32000 Hz, 128 mel bins, frame 1024, hop 320; analysis windows of 10 s every 5 s/);
    assert.match(bank, /demo bank/i, "the demo bank should be loaded at start");
    assert.match(bank, /threshold 2\.00 z \(robust z-score\)/);
    await s.page.screenshot({ path: path.join(OUT, "first-load.png"), fullPage: true });

    await s.page.getByTestId("demo-abnormal").click();
    const abnormal = await waitScored(s.page, "fan-abnormal.wav");
    metrics.firstHeatmapMs = await s.page.evaluate(() => sonomaly.timings.firstHeatmapMs);
    metrics.demoAbnormal = { ...abnormal, members: await s.page.evaluate(() => sonomaly.current.result.members) };
    metrics.scoreFirstClipMs = await s.page.evaluate(() => sonomaly.current.elapsedMs);
    assert.ok(Number.isFinite(abnormal.score) && abnormal.score > 0, `score ${abnormal.score}`);
    assert.ok(["normal", "anomalous"].includes(abnormal.verdict));
    assert.equal(abnormal.verdict, "anomalous", "the demo anomalous clip should be judged anomalous by the demo bank");
    // Scores, thresholds and the curve's label say their units: robust z-scores.
    assert.equal(await s.page.locator("#score-units").textContent(), "z");
    assert.match(await s.page.locator("#threshold-value").textContent(), /^2\.00 z \(segments above 2\.00 z\)$/);
    assert.match(await s.page.locator("#clips li").first().textContent(), /^fan-abnormal\.wav\d+\.\d\d z anomalous/);
    const px = await colouredPixels(s.page);
    assert.ok(px.coloured > 0, `the heatmap has no coloured pixel (${px.total} pixels)`);
    await s.page.screenshot({ path: path.join(OUT, "demo-anomalous.png"), fullPage: true });
    await s.page.screenshot({ path: path.join(OUT, "demo-anomalous-top.png") });

    // The threshold slider moves the verdict live.
    await setThreshold(s.page, abnormal.score * 1.5);
    assert.equal((await s.page.getByTestId("verdict").textContent()).trim(), "normal");
    await s.page.locator("#threshold-reset").click();
    assert.equal((await s.page.getByTestId("verdict").textContent()).trim(), "anomalous");

    // normal/00000014.wav: the one normal fan clip the demo bank was not fitted on (www/demo/LICENSE.md).
    const normals = sharedClips("normal", 20)?.slice(14, 15);
    if (!normals) {
      t.diagnostic(`skipped the real normal clip: ${SHARED} is absent`);
    } else {
      await s.page.getByTestId("file-input").setInputFiles(normals[0]);
      const normal = await waitScored(s.page, path.basename(normals[0]));
      metrics.sharedNormal = normal;
      assert.ok(normal.score < abnormal.score, `normal ${normal.score} should score below anomalous ${abnormal.score}`);
      await s.page.screenshot({ path: path.join(OUT, "shared-normal.png"), fullPage: true });
    }

    // The demo normal clip is normal/00000014.wav: the page shows the clip already open rather than a twin.
    await s.page.getByTestId("demo-normal").click();
    const demoNormal = await waitScored(s.page, normals ? path.basename(normals[0]) : "fan-normal.wav");
    metrics.demoNormal = { ...demoNormal, members: await s.page.evaluate(() => sonomaly.current.result.members) };
    if (!normals) metrics.scoreClipMs = await s.page.evaluate(() => sonomaly.current.elapsedMs);
    // A second 10 s clip with the demo bank, the engine warm: the time to score it in the worker.
    await s.page.getByTestId("file-input").setInputFiles({ name: "fan-normal-again.wav", mimeType: "audio/wav",
      buffer: Buffer.concat([fs.readFileSync(path.join(DEMO, "fan-normal.wav")), Buffer.alloc(2)]) });
    await waitScored(s.page, "fan-normal-again.wav");
    metrics.scoreClipMs = await s.page.evaluate(() => sonomaly.current.elapsedMs);
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
    assert.match(text, /is not a sonomaly bank file/);
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
    const files = normalMaterial(4);
    if (!sharedClips("normal", 4)) t.diagnostic(`${SHARED} is absent: fitting on parts of the demo normal clip`);
    await s.page.getByTestId("fit-input").setInputFiles(files);
    await s.page.waitForFunction((n) => document.querySelectorAll("#fit-list input:checked").length === n, files.length);
    const t0 = Date.now();
    await fit(s.page);
    const done = await s.page.getByTestId("fit-result").textContent();
    assert.match(done, /^Fitted a bank \(preset both\) on 4 clips/, done);
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
    await waitStatus(s.page, "Loaded the bank");
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

// Records from Chromium's fake microphone fed from `wav` (looped) until `updates` stretches are judged; returns
// the final score and what the live view showed.
async function recordFrom(wav, updates, shot) {
  const s = await openPage([
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
  ]);
  try {
    await waitReady(s.page);
    await s.page.getByTestId("record-button").click();
    await s.page.waitForFunction(() => /Recording from the microphone/.test(document.querySelector('[data-testid="status"]').textContent) ||
      !document.getElementById("error").hidden, null, { timeout: 30_000 });
    assert.match(await s.page.getByTestId("status").textContent(), /Recording from the microphone/);
    const t0 = Date.now();
    await s.page.waitForFunction((n) => Number(document.querySelector('[data-testid="live-updates"]').dataset.count) >= n ||
      !document.getElementById("error").hidden, updates, { timeout: 120_000 });
    const liveMs = Date.now() - t0;
    const liveUpdates = Number(await s.page.getByTestId("live-updates").getAttribute("data-count"));
    const firstJudgedS = await s.page.evaluate(() => sonomaly.rec.firstJudgedS);
    await s.page.screenshot({ path: path.join(OUT, `${shot}-live.png`), fullPage: true });
    await s.page.getByTestId("record-button").click();
    await s.page.waitForFunction(() => /^Recording stopped/.test(document.querySelector('[data-testid="status"]').textContent) ||
      !document.getElementById("error").hidden, null, { timeout: 60_000 });
    const status = await s.page.getByTestId("status").textContent();
    assert.match(status, /^Recording stopped/, status);
    const score = Number(await s.page.getByTestId("clip-score").textContent());
    const rtf = Number(await s.page.locator("#rec-info").getAttribute("data-rtf"));
    const maxPushMs = Number(await s.page.locator("#rec-info").getAttribute("data-max-push-ms"));
    const rate = await s.page.evaluate(() => sonomaly.rec.sampleRate);
    const seconds = await s.page.evaluate(() => sonomaly.rec.clip.duration);
    await s.page.screenshot({ path: path.join(OUT, `${shot}-stopped.png`), fullPage: true });
    // Save WAV gives a WAV file.
    const [dl] = await Promise.all([s.page.waitForEvent("download"), s.page.locator("#save-wav").click()]);
    const wavPath = path.join(OUT, `${shot}.wav`);
    await dl.saveAs(wavPath);
    const head = fs.readFileSync(wavPath).subarray(0, 12).toString("latin1");
    assert.equal(head.slice(0, 4) + head.slice(8, 12), "RIFFWAVE");
    return { score, liveUpdates, liveMs, firstJudgedS, seconds, rtf, maxPushMs, contextRate: rate };
  } catch (e) {
    console.log(s.logs.join("\n"));
    throw e;
  } finally {
    await s.close();
  }
}

test("recording from the (fake) microphone gives live scores; an anomalous recording scores above a normal one", async () => {
  const normal = await recordFrom(path.join(DEMO, "fan-normal.wav"), 2, "record-normal");
  const abnormal = await recordFrom(path.join(DEMO, "fan-abnormal.wav"), 2, "record-abnormal");
  metrics.recordNormal = normal;
  metrics.recordAbnormal = abnormal;
  for (const r of [normal, abnormal]) {
    assert.ok(r.liveUpdates >= 2, `only ${r.liveUpdates} live updates arrived`);
    assert.ok(Number.isFinite(r.score) && r.score > 0);
    assert.ok(r.rtf > 0 && r.rtf < 1, `real-time factor ${r.rtf}: the analysis does not keep up`);
  }
  assert.ok(abnormal.score > normal.score, `anomalous recording ${abnormal.score} should score above normal ${normal.score}`);
});
