// A Web Worker of the browser benchmark (bench.js, sonomalyWorkers): its own sonomaly module and BackboneRunner
// for one window size; runs the windows it is given and sends their feature maps back.
//
//   {type: "init", onnx, specText, outputs, frames, melBins}  -> {}
//   {type: "run", logmel, starts}                             -> {maps: [Float32Array per window]}

import init, { BackboneRunner } from "../../dist/pkg/sonomaly.js";

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
      const maps = data.starts.map((s) => runner.run(data.logmel.subarray(s * melBins, (s + frames) * melBins)));
      self.postMessage({ maps }, maps.map((m) => m.buffer));
    }
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
