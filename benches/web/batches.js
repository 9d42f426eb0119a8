// Windows in batches, as sonomaly's pipeline runs them (src/pipeline.rs: 4 windows per backbone call); shared by
// the bench page (bench.js) and its workers (backbone-worker.js).

// Runs the windows starting at `starts` (frames) through `runner` in batches of `WINDOW_BATCH`, as the pipeline
// does; returns each batch's concatenated outputs.
export const WINDOW_BATCH = 4;
export function runBatches(runner, data, starts, frames, melBins) {
  const out = [];
  for (let i = 0; i < starts.length; i += WINDOW_BATCH) {
    const batch = starts.slice(i, i + WINDOW_BATCH);
    const input = new Float32Array(batch.length * frames * melBins);
    batch.forEach((s, k) => input.set(data.subarray(s * melBins, (s + frames) * melBins), k * frames * melBins));
    out.push(runner.runBatch(input));
  }
  return out;
}

