// AudioWorklet processor: takes the microphone's first channel and posts it to the page in blocks of 4096
// samples (about 85 ms at 48 kHz), as transferred Float32Arrays. Runs on the audio rendering thread; does nothing
// else. The first `skip` samples of a take are dropped: a microphone and its driver settle in that time (a click,
// a fade-in), and that start-up would otherwise be judged as an anomaly.

class RecorderProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.blockSize = (options && options.processorOptions && options.processorOptions.blockSize) || 4096;
    this.buffer = new Float32Array(this.blockSize);
    this.filled = 0;
    this.skip = (options && options.processorOptions && options.processorOptions.skip) || 0;
    this.recording = true;
    this.port.onmessage = (ev) => {
      if (ev.data === "flush") this.flush();
      if (ev.data === "pause") this.recording = false;
      if (ev.data === "resume") this.recording = true;
    };
  }

  flush() {
    if (this.filled > 0) {
      const out = this.buffer.slice(0, this.filled);
      this.port.postMessage(out, [out.buffer]);
      this.filled = 0;
    }
    this.port.postMessage("flushed");
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.recording || !input || input.length === 0) return true;
    const ch = input[0];
    let i = 0;
    if (this.skip > 0) {
      i = Math.min(this.skip, ch.length);
      this.skip -= i;
    }
    while (i < ch.length) {
      const n = Math.min(ch.length - i, this.blockSize - this.filled);
      this.buffer.set(ch.subarray(i, i + n), this.filled);
      this.filled += n;
      i += n;
      if (this.filled === this.blockSize) {
        const out = this.buffer;
        this.port.postMessage(out, [out.buffer]);
        this.buffer = new Float32Array(this.blockSize);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("sonomaly-recorder", RecorderProcessor);
