// CFA in the page: the fit panel's detector choice, progress while the descriptor is trained (once per calibration
// fold, then on every clip), Cancel during training (the step runs in one piece: engine.js terminates the worker),
// and the budget: a fit on 10 clips of 10 s (MIMII fan normal clips from ../shared, else the demo normal clip cut
// in parts) within 10 minutes, preset both (the default).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { OUT, normalMaterial, useServer, waitIdle, waitReady, waitScored, withPage, fit } from "./helpers.js";

useServer();
const metrics = {};
after(() => {
  fs.writeFileSync(path.join(OUT, "cfa-metrics.json"), JSON.stringify(metrics, null, 2));
  console.log("cfa e2e metrics:", JSON.stringify(metrics));
});

const BUDGET_MS = 10 * 60_000;
const CANCEL_BOUND_MS = 1000;

test("a CFA bank is fitted in the page with training progress, Cancel stops the training, and the budget holds", async () => {
  await withPage(async ({ page }) => {
    await waitReady(page);
    const files = normalMaterial(10, "normal-parts-10");
    await page.getByTestId("fit-input").setInputFiles(files);
    await page.waitForFunction((n) => document.querySelectorAll("#fit-list input:checked").length === n, files.length);
    await waitIdle(page);
    await page.locator('input[name="fit-detector"][value="cfa"]').check();
    const before = await page.locator("#bank-info").textContent();

    // Cancel while the descriptor is trained for a calibration fold.
    await page.getByTestId("fit-button").click();
    await page.waitForFunction(() => /\(calibrating, step \d+ of \d+\)/.test(document.getElementById("status").textContent),
      null, { timeout: BUDGET_MS });
    await page.locator("#fit-cancel").click();
    await page.waitForFunction(() => sonomaly.lastCancel && sonomaly.lastCancel.stoppedAt != null, null, { timeout: 30_000 });
    const c = await page.evaluate(() => sonomaly.lastCancel);
    assert.match(c.step, /calibrating, step/, `cancelled during "${c.step}"`);
    const stopMs = c.stoppedAt - c.askedAt;
    assert.ok(stopMs <= CANCEL_BOUND_MS, `cancel during training took ${stopMs.toFixed(0)} ms`);
    metrics.cancelMs = Math.round(stopMs);
    assert.equal(await page.locator("#bank-info").textContent(), before, "a cancelled fit changed the bank in use");
    assert.equal(await page.evaluate(() => sonomaly.fitted), null, "a cancelled fit left a fitted bank");
    await page.locator("#notice-close").click();
    await waitIdle(page);

    // The whole fit, timed, with the progress seen on the way.
    const seen = [];
    await page.exposeFunction("cfaSeen", (t) => seen.push(t));
    await page.evaluate(() => {
      const el = document.getElementById("status");
      new MutationObserver(() => window.cfaSeen(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
    });
    const t0 = Date.now();
    await fit(page);
    metrics.fitMs = Date.now() - t0;
    metrics.fitClips = files.length;
    const done = await page.getByTestId("fit-result").textContent();
    assert.match(done, /^Fitted a bank \(preset both, detector cfa\) on 10 clips/, done);
    assert.ok(metrics.fitMs <= BUDGET_MS, `the CFA fit took ${(metrics.fitMs / 1000).toFixed(0)} s`);
    const steps = seen.filter((t) => /step \d+ of \d+/.test(t));
    assert.ok(steps.some((t) => /calibrating/.test(t)) && steps.some((t) => /training the final detector/.test(t)),
      `progress during training: ${JSON.stringify(steps.slice(-5))}`);
    assert.match(await page.evaluate(() => JSON.stringify(sonomaly.bank)), /cfa/);
    await page.getByTestId("demo-abnormal").click();
    const r = await waitScored(page, "fan-abnormal.wav");
    assert.ok(Number.isFinite(r.score));
  });
});
