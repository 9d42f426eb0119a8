// End-to-end tests of the page with the default of issue 10: EfficientAT mn04 as the model, banks of several
// members in robust z units, banks of earlier versions (fitted with aisfx CNN14) still usable, a fit panel with
// presets and layers, and a live view that shows the sound long before its first 10 s window is judged.

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  DEMO, OUT, V1_BANK, base, bankChange, errorText, fit, normalMaterial, openPage, useServer, waitIdle, waitReady,
  waitScored, waitStatus, withPage,
} from "./helpers.js";

useServer();

const ABNORMAL = path.join(DEMO, "fan-abnormal.wav");
const NORMAL = path.join(DEMO, "fan-normal.wav");

// ---- 1. the default model, and banks fitted with the aisfx model ------------------------------------------------

test("the default model is EfficientAT mn04; build.json versions both shipped models' cache", async () => {
  const build = await (await fetch(`${base()}/build.json`)).json();
  assert.match(build.models["efficientat-mn04"], /^[0-9a-f]{16}$/);
  assert.match(build.models["aisfx-cnn14"], /^[0-9a-f]{16}$/);
  assert.notEqual(build.models["efficientat-mn04"], build.models["aisfx-cnn14"]);
  await withPage(async ({ page }) => {
    const models = [];
    page.on("request", (r) => /\/models\/.*\.onnx/.test(r.url()) && models.push(new URL(r.url()).pathname));
    await waitReady(page);
    const m = await page.evaluate(() => sonomaly.model);
    assert.equal(m.name, "efficientat-mn04");
    assert.equal(m.melBins, 128);
    assert.equal(m.sampleRate, 32000);
    assert.deepEqual([m.windowFrames, m.windowHop], [1000, 500]);
    assert.deepEqual(m.patchLayers, ["features.12", "features.15"]);
    // Only the default model is downloaded at start; the aisfx model waits for a bank that needs it.
    assert.deepEqual(models, ["/models/efficientat-mn04/model.onnx"]);
    const about = await page.locator("section.about").textContent();
    assert.match(about, /Model \(models\/efficientat-mn04\/, the default\): EfficientAT mn04_as/);
    assert.match(about, /Second model \(models\/aisfx-cnn14\/, used for banks fitted with it/);
    assert.ok(await page.getByTestId("default-model").isHidden());
  });
});

test("a bank fitted with aisfx-cnn14 switches the page to the shipped aisfx model and is used; the demo bank brings the default back", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("demo-abnormal").click();
    const z = await waitScored(page, "fan-abnormal.wav");
    await bankChange(page, () => page.getByTestId("bank-input").setInputFiles(V1_BANK));
    await waitIdle(page);
    assert.match(await page.getByTestId("status").textContent(), /^(Loaded the bank fan-demo-v1\.bank with the model aisfx-cnn14\.|Rescored 1 clip)/);
    assert.match(await page.locator("#model-info").textContent(), /^aisfx-cnn14 \(shipped with this page for banks fitted with it\) \(conv_block1–4; CC BY 4\.0\)/);
    assert.match(await page.locator("#frontend-info").textContent(), /^44100 Hz, 96 mel bins/);
    assert.match(await page.locator("#bank-info").textContent(), /^fan-demo-v1\.bank: patchcore, memory bank 3796 x 10, threshold 0\.1138$/);
    const notice = await page.getByTestId("notice").textContent();
    assert.match(notice, /The bank fan-demo-v1\.bank was fitted with the model aisfx-cnn14, not with efficientat-mn04: the page switched to the aisfx-cnn14 model it ships for such banks/);
    assert.match(notice, /Its scores are distances/);
    assert.match(notice, /The demo bank \(fan-demo\.bank\) comes back with Use default model/);
    assert.equal(await errorText(page), null);
    assert.ok(await page.getByTestId("default-model").isVisible());
    // The clip on screen was rescored with it: the score of that version's README, a distance (no "z").
    await page.waitForFunction(() => sonomaly.current.result.bankSerial === sonomaly.bankSerial);
    assert.equal(Number(await page.getByTestId("clip-score").textContent()), 0.1153);
    assert.equal(await page.locator("#score-units").textContent(), "");
    assert.equal((await page.getByTestId("verdict").textContent()).trim(), "anomalous");
    await page.screenshot({ path: path.join(OUT, "default-v1-bank.png"), fullPage: true });

    // The demo bank needs the default model: loading it switches back, and the clip gets its z-score again.
    await bankChange(page, () => page.locator("#demo-bank").click());
    await waitIdle(page);
    assert.match(await page.locator("#model-info").textContent(), /^efficientat-mn04 \(/);
    assert.match(await page.getByTestId("notice").textContent(), /the page switched to its default model/);
    await page.waitForFunction(() => sonomaly.current.result.bankSerial === sonomaly.bankSerial);
    assert.equal(Number(await page.getByTestId("clip-score").textContent()), z.score);
    assert.equal(await page.locator("#score-units").textContent(), "z");
  });
});

test("a kept bank fitted with aisfx-cnn14 is used at start with its model; when that model cannot be loaded the page says so and keeps the demo bank", async () => {
  const v1 = fs.readFileSync(V1_BANK).toString("base64");
  const keep = (page) => page.evaluate(async (b64) => {
    const store = await import("./store.js");
    await store.saveLastBank(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)), "fitted bank (an earlier version)");
  }, v1);
  const s = await openPage();
  try {
    await waitReady(s.page);
    await keep(s.page);
    await s.page.reload();
    await waitReady(s.page);
    await waitIdle(s.page);
    assert.match(await s.page.locator("#model-info").textContent(), /^aisfx-cnn14 \(shipped/);
    assert.match(await s.page.locator("#bank-info").textContent(), /^last fitted bank \(.*\): patchcore, memory bank 3796 x 10/);
    assert.match(await s.page.getByTestId("notice").textContent(), /was fitted with the model aisfx-cnn14, not with the page's default model \(efficientat-mn04\), so aisfx-cnn14 is in use with it\. Use default model goes back to efficientat-mn04 and the demo bank/);
    await s.page.getByTestId("demo-abnormal").click();
    assert.equal((await waitScored(s.page, "fan-abnormal.wav")).score, 0.1153);
    await bankChange(s.page, () => s.page.getByTestId("default-model").click());
    assert.match(await s.page.locator("#bank-info").textContent(), /^demo bank/);
  } finally {
    await s.close();
  }
  // A new browser that cannot fetch the aisfx model (a dropped connection): the bank is not lost, the error says
  // which model it needs and why it is not there, and the default model and demo bank stay in use.
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("bank-input").setInputFiles(V1_BANK);
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 60_000 });
    const text = await errorText(page);
    assert.match(text, /^fan-demo-v1\.bank was fitted with the model aisfx-cnn14, but the model in use is efficientat-mn04\. The page has the model aisfx-cnn14, but it could not be loaded: Could not download/, text);
    assert.match(await page.locator("#model-info").textContent(), /^efficientat-mn04/);
    assert.match(await page.locator("#bank-info").textContent(), /^demo bank/);
  }, [], (context) => context.route("**/models/aisfx-cnn14/**", (route) => route.abort()));
});

// ---- 2. the fit panel ---------------------------------------------------------------------------------------------

test("the fit panel offers the presets with what each is for, layers under advanced, and states the minimum", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    const presets = await page.locator('input[name="fit-preset"]').evaluateAll((els) => els.map((e) => [e.value, e.checked]));
    assert.deepEqual(presets, [["machine", false], ["environment", false], ["both", true]]);
    const panel = (await page.getByTestId("fit-preset").textContent()).replace(/\s+/g, " ");
    assert.match(panel, /machine — steady machines/);
    assert.match(panel, /environment — places and events .*\(features\.12 \+ features\.15\)/);
    assert.match(panel, /both \(default\) — when unsure/);
    assert.match(await page.getByTestId("fit-minimum").textContent(),
      /^A fit needs at least 15\.0 s of normal sound in one clip \(two analysis windows of this model\), or two clips or more/);
    assert.ok(!(await page.getByTestId("fit-layers").isVisible()), "the layers field is under advanced");
    await page.locator("#fit-advanced summary").click();
    assert.equal(await page.getByTestId("fit-layers").getAttribute("placeholder"), "logmel;features.12,features.15");
    assert.match(await page.locator("#fit-layer-names").textContent(), /^features\.0–16$/);
    await page.screenshot({ path: path.join(OUT, "default-fit-panel.png"), fullPage: true });
  });
});

test("a fit with each preset, and with layers, makes the bank it says; a layer the model lacks is refused in plain words", async () => {
  const files = normalMaterial(3, "default-fit");
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("fit-input").setInputFiles(files);
    await waitIdle(page);
    await page.locator("#fit-advanced summary").click();
    const cases = [
      ["machine", "", /patches from logmel,/],
      ["environment", "", /patches from features\.12 \+ features\.15,/],
      ["both", "", /members: logmel and features\.12\+features\.15,/],
      ["environment", "logmel;features.15", /members: logmel and features\.15,/],
    ];
    for (const [preset, layers, members] of cases) {
      await page.locator(`input[name="fit-preset"][value="${preset}"]`).check();
      await page.getByTestId("fit-layers").fill(layers);
      await fit(page);
      assert.match(await page.getByTestId("fit-result").textContent(),
        new RegExp(`^Fitted a bank \\(${layers ? `layers ${layers}` : `preset ${preset}`}\\) on 3 clips`));
      const info = await page.locator("#bank-fit-info").textContent();
      assert.match(info, members, `${preset} ${layers}: ${info}`);
      assert.match(await page.locator("#bank-info").textContent(), /threshold 2\.00 z/);
      await page.getByTestId("demo-abnormal").click();
      const r = await waitScored(page, "fan-abnormal.wav");
      assert.ok(Number.isFinite(r.score), `${preset} ${layers}: score ${r.score}`);
    }
    const before = await page.locator("#bank-info").textContent();
    await page.getByTestId("fit-layers").fill("logmel;features.99");
    await page.getByTestId("fit-button").click();
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 60_000 });
    assert.match(await errorText(page), /^The layers field names 'features\.99', which is not a layer of the model efficientat-mn04/);
    assert.equal(await page.locator("#bank-info").textContent(), before, "the bank in use is unchanged");
  });
});

// ---- 3. the live view ---------------------------------------------------------------------------------------------

// Counts spectrogram pixels that are drawn (not transparent, not black).
function drawnPixels(page) {
  return page.evaluate(() => {
    const c = document.getElementById("spec");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i] + d[i + 1] + d[i + 2] > 30) n++;
    return n;
  });
}

test("recording shows the spectrogram at once, says the first judgement needs about 15 s, then judges every 5 s, and keeps up", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording from the microphone", 30_000);
    assert.match(await page.getByTestId("status").textContent(), /the first judgement comes after about 15 s of sound, then every 5 s/);
    assert.match(await page.getByTestId("clip-details").textContent(), /the first judgement needs about 15 s of sound/);
    // A few seconds in: the log-mel is drawn, nothing is judged yet, and the page says when it will be.
    await page.waitForFunction(() => sonomaly.rec.series && sonomaly.rec.series.frames > 300, null, { timeout: 30_000 });
    const early = await page.evaluate(() => ({ frames: sonomaly.rec.series.frames, judged: sonomaly.rec.series.judged }));
    assert.equal(early.judged, 0);
    assert.ok((await drawnPixels(page)) > 0.5 * early.frames * 40, "the spectrogram is not drawn before the first judgement");
    assert.match(await page.getByTestId("live-updates").textContent(), /^first judgement in about \d+ s \(it needs 15 s of sound\)$/);
    assert.equal(await page.getByTestId("verdict").textContent(), "");
    await page.screenshot({ path: path.join(OUT, "default-live-early.png"), fullPage: true });
    // The first stretch is judged once about 15 s have arrived (plus the 0.3 s dropped at the start), the next 5 s
    // later; the heatmap and verdict fill in.
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="live-updates"]').dataset.count) >= 2,
      null, { timeout: 90_000 });
    const live = await page.evaluate(() => ({
      first: sonomaly.rec.firstJudgedS,
      judged: sonomaly.rec.series.judged * sonomaly.model.hopS,
      recorded: sonomaly.rec.length / sonomaly.rec.sampleRate,
      rtf: Number(document.getElementById("rec-info").dataset.rtf),
    }));
    assert.ok(live.first >= 14.9 && live.first <= 16.5, `first judgement after ${live.first} s`);
    assert.ok(Math.abs(live.judged - 12.5) < 0.05, `judged up to ${live.judged} s after two updates`);
    assert.ok(live.rtf > 0 && live.rtf < 1, `real-time factor ${live.rtf}`);
    assert.match(await page.getByTestId("live-updates").textContent(), /^2 live updates · judged up to 12\.5 s$/);
    assert.match((await page.getByTestId("verdict").textContent()).trim(), /^(normal|anomalous)$/);
    assert.match(await page.locator("#rec-info").textContent(), /real-time factor \d\.\d\d \(keeps up\)/);
    await page.screenshot({ path: path.join(OUT, "default-live-judged.png"), fullPage: true });
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording stopped", 60_000);
    // Stopped: the whole recording is judged.
    const all = await page.evaluate(() => [sonomaly.current.result.series.judged, sonomaly.current.result.series.frames]);
    assert.equal(all[0], all[1]);
  }, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${NORMAL}`]);
});

test("a recording stopped before its first judgement is judged whole", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording from the microphone", 30_000);
    await page.waitForFunction(() => sonomaly.rec.series && sonomaly.rec.series.frames > 400, null, { timeout: 30_000 });
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording stopped", 60_000);
    const r = await page.evaluate(() => ({ judged: sonomaly.current.result.series.judged, frames: sonomaly.current.result.series.frames }));
    assert.ok(r.judged > 400 && r.judged === r.frames, JSON.stringify(r));
    assert.match((await page.getByTestId("verdict").textContent()).trim(), /^(normal|anomalous)$/);
  }, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${ABNORMAL}`]);
});
