// A Web Worker of the browser benchmark (bench.js, sonomalyWorkers): its own sonomaly module and BackboneRunner
// for one window size; runs the windows it is given (in batches of 4, as the pipeline) and sends the feature maps
// back.
//
//   {type: "init", onnx, specText, outputs, frames, melBins}  -> {}
//   {type: "run", logmel, starts}                             -> {maps: [Float32Array per batch]}

import init, { BackboneRunner } from "../../dist/pkg/sonomaly.js";
import { runBatches } from "./batches.js";

let runner = null;
let frames = 0;
let melBins = 0;

self.onmessage = async ({ data }) => {
  try {
    if (data.type === "init") {
      await init();
      runner = new BackboneRunner(data.onnx, data.specText, data.outputs, data.frames);
      ({ frames, melBins } = data);
      self.postMessage({});
    } else if (data.type === "run") {
      const maps = runBatches(runner, data.logmel, data.starts, frames, melBins);
      self.postMessage({ maps }, maps.map((m) => m.buffer));
    }
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
