// End-to-end tests that what the page shows is true of the bank and model in use, one test (or more) per item of
// issue 11 ("The page tells the truth"): no stale, lost or misleading result in a maintenance engineer's session.
// Each failed on the page before the fix. Real clips come from ../shared/data when it is present; otherwise the
// tests use the demo clips and WAVs they write themselves.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  AISFX_DIR, DATA, DEMO, MODEL_DIR, OUT, ROOT, SHARED, bankChange, clipList, dropFiles, errorText, fit, freePort, noise,
  normalMaterial, readWavMono, scratch, setThreshold, sharedClips, useServer, waitAllFresh, dismiss, waitIdle, waitReady,
  waitScored, waitStatus, withPage, writeWav,
} from "./helpers.js";

useServer();

const ABNORMAL = path.join(DEMO, "fan-abnormal.wav");
const NORMAL = path.join(DEMO, "fan-normal.wav");
const MODEL = [path.join(MODEL_DIR, "model.onnx"), path.join(MODEL_DIR, "spec.json")];

// Opens files with the file input and waits until the last one is scored.
async function open(page, files) {
  await page.getByTestId("file-input").setInputFiles(files);
  await waitIdle(page);
  const err = await errorText(page);
  assert.equal(err, null, `opening ${files.map((f) => path.basename(f)).join(", ")}: ${err}`);
}

// The scores the list shows, by label.
async function scoresByLabel(page) {
  return Object.fromEntries((await clipList(page)).map((c) => [c.label, c.score]));
}

function close(a, b, what) {
  // The list shows 4 decimals for distances, 2 for z-scores.
  assert.ok(a != null && b != null && Math.abs(a - b) <= 6e-3, `${what}: ${a} vs ${b}`);
}

// ---- 1. stale scores after the bank changes ----------------------------------------------------------------

test("1: after a fit or a bank switch every scored clip is rescored with the bank in use", async (t) => {
  let files = [ABNORMAL, NORMAL];
  const real = sharedClips("abnormal", 2);
  if (real) files = [...files, ...real];
  else t.diagnostic(`${SHARED} is absent: the demo clips only`);
  const fitOn = sharedClips("normal", 4)?.slice(1) || normalMaterial(3);
  const bankFile = path.join(OUT, "truth-1.bank");
  let demoScores;
  let fittedScores;
  await withPage(async ({ page }) => {
    await waitReady(page);
    await open(page, files);
    demoScores = await scoresByLabel(page);
    assert.equal(Object.keys(demoScores).length, files.length);
    await page.getByTestId("fit-input").setInputFiles(fitOn);
    await page.waitForFunction((n) => document.querySelectorAll("#fit-list input:checked").length === n, fitOn.length);
    await fit(page);
    await waitAllFresh(page);
    fittedScores = await scoresByLabel(page);
    // Every clip shown again gives the score its list entry shows (no old map behind a new score).
    for (const c of await clipList(page)) {
      await page.locator("#clips li button", { hasText: c.label }).first().click();
      close(Number(await page.getByTestId("clip-score").textContent()), c.score, `${c.label} shown vs listed`);
    }
    const [dl] = await Promise.all([page.waitForEvent("download"), page.getByTestId("fit-download").click()]);
    await dl.saveAs(bankFile);
    // Back to the demo bank: the scores of the demo bank again.
    await bankChange(page, () => page.locator("#demo-bank").click());
    await waitAllFresh(page);
    const again = await scoresByLabel(page);
    for (const [label, score] of Object.entries(demoScores)) close(again[label], score, `${label} with the demo bank again`);
  });
  // A fresh page with the fitted bank scores the same files as the list said after the fit.
  await withPage(async ({ page }) => {
    await waitReady(page);
    await bankChange(page, () => page.getByTestId("bank-input").setInputFiles(bankFile));
    await open(page, files);
    const fresh = await scoresByLabel(page);
    for (const [label, score] of Object.entries(fresh)) close(fittedScores[label], score, `${label} after the fit vs with the bank loaded fresh`);
  });
});

test("1: a recording used to fit a bank is rescored with it, not judged anomalous throughout", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording from the microphone", 30_000);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="live-updates"]').dataset.count) >= 1, null, { timeout: 60_000 });
    await page.waitForTimeout(8000);
    await page.getByTestId("record-button").click();
    await waitStatus(page, "Recording stopped", 60_000);
    await page.locator("#fit-add-recording").click();
    await fit(page);
    await waitAllFresh(page);
    const rec = (await clipList(page)).find((c) => c.label.startsWith("recording"));
    assert.ok(rec, "the recording is in the list");
    await page.locator("#clips li button", { hasText: "recording" }).click();
    const verdict = (await page.getByTestId("verdict").textContent()).trim();
    const duration = await page.evaluate(() => sonomaly.current.duration);
    const covered = await page.evaluate(() => [...document.querySelectorAll("#segments li button")]
      .map((b) => b.textContent.match(/([\d.]+)–([\d.]+)/)).reduce((s, m) => s + Number(m[2]) - Number(m[1]), 0));
    await page.screenshot({ path: path.join(OUT, "truth-recording-fitted.png"), fullPage: true });
    assert.equal(verdict, "normal", "the recording the bank was fitted on is judged normal by it");
    assert.ok(covered < 0.5 * duration, `segments cover ${covered.toFixed(2)} s of ${duration.toFixed(2)} s`);
  }, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", `--use-file-for-fake-audio-capture=${NORMAL}%noloop`]);
});

// ---- 2. input before "Ready" ---------------------------------------------------------------------------------

test("2: a file dropped and a bank chosen while the page loads wait for the model, and no error stays", async () => {
  const delay = async (context) => {
    await context.route("**/models/efficientat-mn04/model.onnx*", async (route) => {
      await new Promise((r) => setTimeout(r, 4000));
      await route.continue();
    });
  };
  await withPage(async ({ page }) => {
    await page.waitForFunction(() => document.querySelector("#status").textContent.length > 0);
    assert.equal(await page.evaluate(() => sonomaly.model), null, "the model is still loading");
    await dropFiles(page, [ABNORMAL]);
    await page.locator("#demo-bank").click();
    await waitReady(page);
    await waitIdle(page);
    await page.waitForFunction(() => document.querySelectorAll("#clips li").length > 0 || !document.getElementById("error").hidden, null, { timeout: 60_000 });
    assert.equal(await errorText(page), null);
    const list = await clipList(page);
    assert.equal(list.length, 1);
    assert.equal(list[0].label, "fan-abnormal.wav");
    assert.match(list[0].text, /anomalous/);
    assert.ok(await page.getByTestId("queued").isHidden(), "nothing waits any more");
  }, [], delay);
});

// ---- 3. models -----------------------------------------------------------------------------------------------

test("3: a junk model is refused, a bank is kept or brought back with the model it fits, and what differs is named", async () => {
  const specBytes = fs.readFileSync(MODEL[1]);
  const onnx = fs.readFileSync(MODEL[0]);
  // Another version of the same model: one weight changed by its last bit (the graph is still valid).
  const other = Buffer.from(onnx);
  other[other.length >> 1] ^= 1;
  await withPage(async ({ page }) => {
    await waitReady(page);
    const modelBefore = await page.locator("#model-info").textContent();
    // An 18-byte text file as the .onnx, with the real spec.
    await page.getByTestId("model-input").setInputFiles([
      { name: "junk.onnx", mimeType: "application/octet-stream", buffer: Buffer.from("this is not a mod\n") },
      { name: "spec.json", mimeType: "application/json", buffer: specBytes },
    ]);
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 60_000 });
    assert.match(await errorText(page), /junk\.onnx is not an ONNX model/);
    assert.equal(await page.locator("#model-info").textContent(), modelBefore, "the model in use is unchanged");
    assert.match(await page.locator("#bank-info").textContent(), /demo bank/, "the bank in use is unchanged");
    await dismiss(page);
    await page.getByTestId("demo-abnormal").click();
    assert.equal((await waitScored(page, "fan-abnormal.wav")).verdict, "anomalous");

    // The right model again: the bank stays.
    await page.getByTestId("model-input").setInputFiles(MODEL);
    await waitStatus(page, "Loaded the model model.onnx", 120_000);
    assert.match(await page.locator("#bank-info").textContent(), /demo bank/);

    // Another version of the model: no bank fits, and the message says the model files differ.
    await page.getByTestId("model-input").setInputFiles([
      { name: "model-retrained.onnx", mimeType: "application/octet-stream", buffer: other },
      { name: "spec.json", mimeType: "application/json", buffer: specBytes },
    ]);
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 120_000 });
    const text = await errorText(page);
    assert.match(text, /another version of the model efficientat-mn04: the model files differ/, text);
    assert.match(text, /^No bank fits this model/, text);
    assert.match(await page.locator("#bank-info").textContent(), /^none/);
    assert.match(await page.locator("#model-info").textContent(), /from model-retrained\.onnx/);
    await page.screenshot({ path: path.join(OUT, "truth-other-model.png"), fullPage: true });

    // The default model brings the demo bank back, and the error about there being no bank goes.
    await page.evaluate(() => document.getElementById("default-model").click());
    await page.waitForFunction(() => /^Back to the default model/.test(document.getElementById("status").textContent), null, { timeout: 120_000 });
    assert.match(await page.locator("#bank-info").textContent(), /demo bank/);
    assert.equal(await errorText(page), null);
    await waitIdle(page);
    assert.equal((await clipList(page))[0].fresh, true);

    // The same through the files: other version, then the right files again.
    await page.getByTestId("model-input").setInputFiles([
      { name: "model-retrained.onnx", mimeType: "application/octet-stream", buffer: other },
      { name: "spec.json", mimeType: "application/json", buffer: specBytes },
    ]);
    await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 120_000 });
    await dismiss(page);
    await page.getByTestId("model-input").setInputFiles(MODEL);
    await waitStatus(page, "Loaded the model model.onnx", 120_000);
    assert.match(await page.locator("#bank-info").textContent(), /demo bank/);
    assert.ok(await page.getByTestId("default-model").isHidden());
  });
});

test("3: the second model passes the check, and the demo bank is said to be for the other model", async () => {
  const dir = AISFX_DIR;
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("model-input").setInputFiles([path.join(dir, "model.onnx"), path.join(dir, "spec.json")]);
    await page.waitForFunction(() => sonomaly.busy === 0 && sonomaly.model.name !== "efficientat-mn04" ||
      (!document.getElementById("error").hidden && sonomaly.busy === 0), null, { timeout: 240_000 });
    assert.match(await page.locator("#model-info").textContent(), /^aisfx-cnn14 from model\.onnx/);
    const text = await errorText(page);
    assert.match(text, /^No bank fits this model: the demo bank \(fan-demo\.bank\) was fitted with the model efficientat-mn04, but the model in use is aisfx-cnn14/, text);
    // A bank fitted with it is used, and the default model brings the demo bank back.
    await page.getByTestId("fit-input").setInputFiles([NORMAL]);
    await waitIdle(page);
    await fit(page);
    await page.getByTestId("demo-abnormal").click();
    await waitScored(page, "fan-abnormal.wav");
    await bankChange(page, () => page.getByTestId("default-model").click());
    assert.match(await page.locator("#bank-info").textContent(), /demo bank/);
    assert.match(await page.getByTestId("notice").textContent(), /was fitted with the model aisfx-cnn14/);
  });
});

// ---- 4. fitting checks -------------------------------------------------------------------------------------------

test("4: fitting refuses clips too short to score and warns about a rough threshold as the CLI does", async () => {
  const dir = scratch("truth-4");
  const { samples, rate } = readWavMono(NORMAL);
  const cut = (a, b, name) => writeWav(path.join(dir, name), [samples.slice(Math.round(a * rate), Math.round(b * rate))], rate);
  const tiny = cut(0, 0.2, "tiny-0.2s.wav");
  const shortA = cut(0, 0.5, "short-a.wav");
  const shortB = cut(0.5, 1.0, "short-b.wav");
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("fit-input").setInputFiles([tiny]);
    await waitIdle(page);
    const tinyBox = page.locator("#fit-list li", { hasText: "tiny-0.2s.wav" }).locator("input");
    assert.equal(await tinyBox.isChecked(), false, "a 0.2 s clip is not ticked");
    assert.equal(await tinyBox.isDisabled(), true, "a 0.2 s clip cannot be ticked");
    assert.match(await page.locator("#fit-list").textContent(), /too short to learn from/);
    assert.equal(await page.getByTestId("fit-button").isDisabled(), true);

    // One clip of 10 s is less than two analysis windows of the default model (15 s): the threshold cannot be
    // set, which the page says before fitting.
    await page.getByTestId("fit-input").setInputFiles([NORMAL]);
    await waitIdle(page);
    assert.match(await page.getByTestId("fit-warning").textContent(),
      /^One clip of 10\.0 s is too little to set a threshold: a fit needs at least 15\.0 s in one clip, or two clips or more/);
    assert.equal(await page.getByTestId("fit-button").isDisabled(), true);

    // With a second clip: the warning the CLI gives (fewer than 3 clips or 30 s), before and after fitting.
    await page.getByTestId("fit-input").setInputFiles([shortA]);
    await waitIdle(page);
    assert.match(await page.getByTestId("fit-warning").textContent(), /threshold will be rough/);
    await fit(page);
    // The core's sentence (the bank's info), with how much more normal sound to give.
    assert.match(await page.locator("#bank-fit-info").textContent(),
      /the threshold is rough: it was set from 2 clips \(10\.5 s\) of normal sound.*fit on 10 or more clips of normal sound, 100 s or more in all \(8 more clips and 90 s more\)/);
    assert.match(await page.getByTestId("notice").textContent(), /The new bank's threshold is rough: it was set from 2 clips/);

    // Two short clips fit without an internal error.
    await page.locator("#fit-clear").click();
    await page.getByTestId("fit-input").setInputFiles([shortA, shortB]);
    await waitIdle(page);
    await fit(page);
    assert.match(await page.getByTestId("fit-result").textContent(), /^Fitted a bank \(preset both\) on 2 clips/);
  });
});

// ---- 5. the bank was fitted on other sound ----------------------------------------------------------------

// The core compares a clip's band levels with those of the bank's normal clips (banks of format version 2; the
// demo bank is older and has none) and gives a sentence in `outOfDistribution`; the page shows it.
test("5: a clip far from what the bank learned is said to be other sound than the bank was fitted on", async (t) => {
  const dir = scratch("truth-5");
  const loud = writeWav(path.join(dir, "white-noise.wav"), [noise(16000 * 5, 0.5, 7)], 16000);
  const pairs = path.join(DATA, "mimii_4machines_pairs");
  const machines = fs.existsSync(pairs) ? ["pump_normal.wav", "valve_normal.wav", "slider_normal.wav"].map((f) => path.join(pairs, f)) : [];
  const fitOn = normalMaterial(10);
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("fit-input").setInputFiles(fitOn);
    await waitIdle(page);
    await fit(page);
    await open(page, [NORMAL]);
    assert.ok(await page.getByTestId("out-of-distribution").isHidden(), "a normal fan clip fits the fan bank");
    // White noise is far from any fan: the core says so, and the page shows it in the result and the list.
    await open(page, [loud]);
    const warn = page.getByTestId("out-of-distribution");
    assert.ok(await warn.isVisible(), "white noise against the fan bank: no warning");
    assert.match(await warn.textContent(), /^This recording does not sound like the normal recordings the bank was fitted on/);
    assert.match(await page.locator("#clips li", { hasText: "white-noise.wav" }).textContent(), /other sound/);
    // Other machines: the page shows the warning exactly when the core gives one (which ones it flags is the
    // core's rule, tested with it).
    for (const f of machines) {
      await open(page, [f]);
      const said = await page.evaluate(() => sonomaly.current.result.outOfDistribution);
      assert.equal(await warn.isVisible(), said != null, `${path.basename(f)}: shown ${await warn.isVisible()}, core ${said}`);
      t.diagnostic(`${path.basename(f)} against the fan bank: ${said ? "other sound" : "no warning from the core"}`);
    }
    await page.screenshot({ path: path.join(OUT, "truth-other-sound.png"), fullPage: true });
  });
});

// ---- 6. figures that mislead ----------------------------------------------------------------------------------

test("6: the figure shows the judged band, segments end with the clip, the slider reaches every score shown", async () => {
  const dir = scratch("truth-6");
  const loud = writeWav(path.join(dir, "white-noise.wav"), [noise(16000 * 5, 0.5, 7)], 16000);
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("demo-abnormal").click();
    await waitScored(page, "fan-abnormal.wav");
    // 16 kHz audio: nothing above 8 kHz is judged, so nothing above it is drawn.
    const fig = await page.evaluate(() => ({
      rows: document.getElementById("spec").height,
      bins: sonomaly.model.melBins,
      topHz: Number(document.getElementById("faxis").dataset.topHz),
      ticks: (document.getElementById("faxis").dataset.ticks || "").split(",").filter(Boolean).map(Number),
    }));
    assert.ok(fig.rows < fig.bins, `all ${fig.bins} mel bins drawn (${fig.rows} rows)`);
    assert.ok(fig.topHz > 7000 && fig.topHz <= 8000, `top of the frequency axis: ${fig.topHz} Hz`);
    assert.ok(fig.ticks.length > 0 && Math.max(...fig.ticks) <= 8000, `ticks ${fig.ticks}`);
    assert.match(await page.getByTestId("clip-details").textContent(), /judged up to 8 kHz \(the clip is sampled at 16 kHz/);

    // The slider at its lowest makes the whole clip one segment: it ends where the clip does.
    await setThreshold(page, "min");
    const last = await page.locator("#segments li button").last().textContent();
    const end = Number(/–([\d.]+)/.exec(last)[1]);
    const duration = await page.evaluate(() => sonomaly.current.duration);
    assert.ok(end <= duration + 1e-9, `the last segment ends at ${end} s, the clip at ${duration} s`);
    await page.locator("#threshold-reset").click();

    // A clip far above the threshold: the slider goes past its score, so it can be judged normal too.
    await open(page, [loud]);
    const score = Number(await page.getByTestId("clip-score").textContent());
    const max = Number(await page.getByTestId("threshold").getAttribute("max"));
    assert.ok(max > score, `slider max ${max} below the score ${score}`);
    await setThreshold(page, "max");
    assert.equal((await page.getByTestId("verdict").textContent()).trim(), "normal");
    await page.screenshot({ path: path.join(OUT, "truth-figure.png"), fullPage: true });
  });
});

// ---- 7. same-named files -------------------------------------------------------------------------------------

test("7: files of the same name are told apart, and a file opened twice is not added twice", async () => {
  const dir = scratch("truth-7");
  let a = path.join(SHARED, "normal/00000000.wav");
  let b = path.join(SHARED, "abnormal/00000000.wav");
  if (!fs.existsSync(a) || !fs.existsSync(b)) {
    a = writeWav(path.join(dir, "src/normal/00000000.wav"), [noise(16000 * 3, 0.1, 1)], 16000);
    b = writeWav(path.join(dir, "src/abnormal/00000000.wav"), [noise(16000 * 3, 0.3, 2)], 16000);
  }
  const folder = path.join(dir, "mimii");
  fs.mkdirSync(path.join(folder, "normal"), { recursive: true });
  fs.mkdirSync(path.join(folder, "abnormal"), { recursive: true });
  fs.copyFileSync(a, path.join(folder, "normal/00000000.wav"));
  fs.copyFileSync(b, path.join(folder, "abnormal/00000000.wav"));
  fs.writeFileSync(path.join(folder, "labels.csv"), "not audio\n");
  await withPage(async ({ page }) => {
    await waitReady(page);
    await open(page, [a, b]);
    let list = await clipList(page);
    assert.equal(list.length, 2);
    assert.notEqual(list[0].label, list[1].label, "two files named 00000000.wav look the same in the list");
    assert.match(await page.getByTestId("clip-details").textContent(), /another file named 00000000\.wav/);
    await open(page, [a]);
    list = await clipList(page);
    assert.equal(list.length, 2, "opening the same file again added a twin");
    assert.match(await page.getByTestId("status").textContent(), /already open/);
  });
  await withPage(async ({ page }) => {
    await waitReady(page);
    await page.getByTestId("folder-input").setInputFiles(folder);
    await waitIdle(page);
    const labels = (await clipList(page)).map((c) => c.label).sort();
    assert.deepEqual(labels, ["mimii/abnormal/00000000.wav", "mimii/normal/00000000.wav"]);
    assert.match(await page.getByTestId("notice").textContent(), /Skipped 1 file/);
  });
});

// ---- 8. errors in plain words, once ---------------------------------------------------------------------------

test("8: errors say what is wrong in plain words, once, with the core's words behind details", async () => {
  // A bank whose header claims 7 exabytes, and one whose JSON header is cut short.
  const hugeHeader = Buffer.from("this is not a bank file at all");
  const json = Buffer.from('{"__metadata__":{"sonomaly":"{\\"format\\":');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const badJson = Buffer.concat([len, json]);
  await withPage(async ({ page }) => {
    await waitReady(page);
    const once = async (what, pattern) => {
      await page.waitForFunction(() => !document.getElementById("error").hidden, null, { timeout: 30_000 });
      const text = await errorText(page);
      assert.match(text, pattern, what);
      assert.doesNotMatch(text, /\b(audio|bank|model|invalid input|safetensors):/, `${what}: internal prefix in "${text}"`);
      assert.doesNotMatch(text, /\d{10,}/, `${what}: a huge number in "${text}"`);
      assert.doesNotMatch(text, /line \d+ column \d+/, `${what}: a parser position in "${text}"`);
      const status = await page.getByTestId("status").textContent();
      assert.ok(!status.includes(text) && !/^Error/.test(status), `${what}: the status line repeats the error: ${status}`);
      return text;
    };
    await page.getByTestId("bank-input").setInputFiles({ name: "huge.bank", mimeType: "application/octet-stream", buffer: hugeHeader });
    await once("huge header", /huge\.bank is not a sonomaly bank file/);
    assert.equal(await page.locator("#error-more").isVisible(), true, "a details toggle");
    await page.locator("#error-more summary").click();
    assert.match(await page.getByTestId("error-details").textContent(), /header claims \d+ bytes/);

    await page.getByTestId("bank-input").setInputFiles({ name: "cut.bank", mimeType: "application/octet-stream", buffer: badJson });
    await once("cut JSON header", /cut\.bank is not a sonomaly bank file/);

    await page.getByTestId("file-input").setInputFiles({ name: "broken.wav", mimeType: "audio/wav", buffer: Buffer.from("RIFF....WAVEnot really audio") });
    await once("broken audio", /broken\.wav/);

    // Several bad files among good ones: one message listing them.
    await page.getByTestId("file-input").setInputFiles([
      { name: "a.wav", mimeType: "audio/wav", buffer: Buffer.from("nothing") },
      { name: "fan-normal.wav", mimeType: "audio/wav", buffer: fs.readFileSync(NORMAL) },
      { name: "b.wav", mimeType: "audio/wav", buffer: Buffer.from("") },
    ]);
    await waitIdle(page);
    const text = await once("two bad files of three", /2 of 3 files could not be opened/);
    assert.match(text, /a\.wav/);
    assert.match(text, /b\.wav: the file is empty/);
    assert.equal((await clipList(page)).filter((c) => c.label === "fan-normal.wav").length, 1);
  });
});

// ---- 9. smaller things -------------------------------------------------------------------------------------------

test("9: About credits Alison B. Ma; both download buttons save the fitted bank under one name", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    const about = await page.locator("section.about").textContent();
    assert.match(about, /Alison B\. Ma and Alexander Lerch/);
    assert.doesNotMatch(about, /Brian/);
    await page.getByTestId("fit-input").setInputFiles(normalMaterial(2, "truth-9-fit"));
    await waitIdle(page);
    await fit(page);
    const [d1] = await Promise.all([page.waitForEvent("download"), page.locator("#download-bank").click()]);
    const [d2] = await Promise.all([page.waitForEvent("download"), page.getByTestId("fit-download").click()]);
    assert.equal(d1.suggestedFilename(), d2.suggestedFilename());
    assert.match(d1.suggestedFilename(), /^sonomaly-fitted-.*\.bank$/);
    const p1 = path.join(OUT, "truth-9-a.bank");
    const p2 = path.join(OUT, "truth-9-b.bank");
    await d1.saveAs(p1);
    await d2.saveAs(p2);
    assert.ok(fs.readFileSync(p1).equals(fs.readFileSync(p2)), "the two buttons saved different bytes");
  });
});

test("9: an 8-channel file says it is mixed, and one channel can be chosen", async () => {
  const dir = scratch("truth-9");
  const { samples, rate } = readWavMono(NORMAL);
  const n = rate * 4;
  const fan = samples.slice(0, n);
  // Channel 3 holds the fan; the others hold quiet noise.
  const channels = Array.from({ length: 8 }, (_, k) => (k === 2 ? fan : noise(n, 0.02, k + 1)));
  const file = writeWav(path.join(dir, "eight-channels.wav"), channels, rate);
  await withPage(async ({ page }) => {
    await waitReady(page);
    await open(page, [file]);
    const mixed = Number(await page.getByTestId("clip-score").textContent());
    assert.match(await page.getByTestId("clip-details").textContent(), /8 channels mixed to mono/);
    await page.getByTestId("channel").selectOption("2");
    await page.waitForFunction(() => sonomaly.current.channel === 2 && sonomaly.busy === 0, null, { timeout: 60_000 });
    await waitScored(page, "eight-channels.wav");
    assert.match(await page.getByTestId("clip-details").textContent(), /channel 3 of 8/);
    const one = Number(await page.getByTestId("clip-score").textContent());
    assert.notEqual(one, mixed, "choosing a channel rescored the clip");
    assert.equal((await clipList(page)).length, 1, "the same clip, not a second one");
  });
});

test("9: ./build.sh serve on a busy port says which PORT to use, before building and without a traceback", async () => {
  const port = await freePort();
  const blocker = net.createServer().listen(port, "127.0.0.1");
  await new Promise((r) => blocker.once("listening", r));
  try {
    for (const args of [["serve", "--no-build"], ["serve"]]) {
      const r = await new Promise((resolve) => {
        const p = spawn(path.join(ROOT, "build.sh"), args, { env: { ...process.env, PORT: String(port) } });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.stderr.on("data", (d) => (out += d));
        const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
        p.on("close", (code) => {
          clearTimeout(timer);
          resolve({ code, out });
        });
      });
      const what = `./build.sh ${args.join(" ")}`;
      assert.notEqual(r.code, 0, `${what} succeeded on a busy port`);
      assert.match(r.out, new RegExp(`port ${port} is in use`), `${what}: ${r.out}`);
      assert.match(r.out, /PORT=\d+ \.\/build\.sh serve/, `${what}: ${r.out}`);
      assert.doesNotMatch(r.out, /Traceback/, `${what}: ${r.out}`);
      assert.doesNotMatch(r.out, /cargo build/, `${what} built before finding the port busy`);
    }
  } finally {
    blocker.close();
  }
});
