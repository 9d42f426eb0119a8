// Audio in the page: the browser's decoding (the fallback for formats the core's decoder does not read, see
// decode.js) at the file's own sample rate, playback of a part, WAV writing.
// Resampling to the model's rate is the core's job (in the worker), not the browser's.

// Reads the sample rate written in the file's header (WAV, FLAC, Ogg Vorbis/Opus/FLAC, MP3, each possibly behind an
// ID3v2 tag), or null. The page only needs it for files the core's decoder does not read (decodeToMono, the
// browser fallback): decodeAudioData resamples to its context's rate, so the context must run at the file's.
export function sniffSampleRate(bytes) {
  const u8 = new Uint8Array(bytes);
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const str = (o, n) => String.fromCharCode(...u8.subarray(o, o + n));
  if (u8.length >= 12 && str(0, 4) === "RIFF" && str(8, 4) === "WAVE") {
    let o = 12;
    while (o + 8 <= u8.length) {
      const id = str(o, 4);
      const size = dv.getUint32(o + 4, true);
      if (id === "fmt " && o + 16 <= u8.length) return dv.getUint32(o + 12, true);
      o += 8 + size + (size & 1);
    }
    return null;
  }
  // An ID3v2 tag (10-byte header, syncsafe size, optional 10-byte footer) may precede FLAC as well as MP3.
  let o = 0;
  if (u8.length >= 10 && str(0, 3) === "ID3") {
    o = 10 + ((u8[6] & 0x7f) << 21 | (u8[7] & 0x7f) << 14 | (u8[8] & 0x7f) << 7 | (u8[9] & 0x7f)) + (u8[5] & 0x10 ? 10 : 0);
  }
  if (u8.length >= o + 42 && str(o, 4) === "fLaC") {
    // STREAMINFO: 20 bits of sample rate at byte 10 of the block (after "fLaC" and the 4-byte block header)
    const b = o + 8 + 10;
    return (u8[b] << 12) | (u8[b + 1] << 4) | (u8[b + 2] >> 4);
  }
  if (o === 0 && u8.length >= 64 && str(0, 4) === "OggS") {
    const segs = u8[26];
    const p = 27 + segs;
    if (str(p + 1, 6) === "vorbis") return dv.getUint32(p + 12, true);
    if (str(p, 8) === "OpusHead") return 48000;
    if (str(p + 1, 4) === "FLAC") return (u8[p + 27] << 12) | (u8[p + 28] << 4) | (u8[p + 29] >> 4);
    return null;
  }
  // MP3: the first frame header (after the tag, if any)
  for (const end = Math.min(u8.length - 4, o + 65536); o < end; o++) {
    if (u8[o] === 0xff && (u8[o + 1] & 0xe0) === 0xe0) {
      const version = (u8[o + 1] >> 3) & 3; // 3: MPEG1, 2: MPEG2, 0: MPEG2.5
      const idx = (u8[o + 2] >> 2) & 3;
      if (version === 1 || idx === 3) continue;
      const base = [44100, 48000, 32000][idx];
      return version === 3 ? base : version === 2 ? base / 2 : base / 4;
    }
  }
  return null;
}

// Decodes an audio file (ArrayBuffer) into a mono Float32Array at the file's own sample rate: the average of
// its channels (`channel` "mix", as `sonomaly --channel mix`) or one of them (`channel` 0, 1, ...).
export async function decodeToMono(bytes, name = "the file", channel = "mix") {
  if (!bytes || bytes.byteLength === 0) throw new Error(`${name} is empty.`);
  const rate = sniffSampleRate(bytes) || 48000;
  if (rate < 3000 || rate > 768000) throw new Error(`${name} says its sample rate is ${rate} Hz, which the browser cannot decode.`);
  const ctx = new OfflineAudioContext(1, 1, rate);
  let buf;
  try {
    buf = await ctx.decodeAudioData(bytes.slice(0));
  } catch (e) {
    throw new Error(`${name} could not be decoded: it is not audio this browser can read (WAV, MP3, OGG or FLAC), or it is damaged.`);
  }
  if (buf.length === 0) throw new Error(`${name} contains no audio.`);
  const n = buf.length;
  const channels = buf.numberOfChannels;
  let mono;
  if (channel !== "mix" && channels > 1) {
    if (!(channel >= 0 && channel < channels)) {
      throw new Error(`${name} has ${channels} channels: there is no channel ${channel + 1}. Choose one of 1-${channels}, or mix.`);
    }
    mono = buf.getChannelData(channel).slice();
  } else {
    mono = new Float32Array(n);
    for (let c = 0; c < channels; c++) {
      const ch = buf.getChannelData(c);
      for (let i = 0; i < n; i++) mono[i] += ch[i];
    }
    if (channels > 1) {
      const k = 1 / channels;
      for (let i = 0; i < n; i++) mono[i] *= k;
    }
  }
  return {
    samples: mono,
    sampleRate: buf.sampleRate,
    channels,
    channel: channels > 1 ? channel : "mix",
    duration: n / buf.sampleRate,
  };
}

// 16-bit PCM mono WAV.
export function encodeWav(samples, sampleRate) {
  const n = samples.length;
  const out = new ArrayBuffer(44 + n * 2);
  const dv = new DataView(out);
  const w = (o, s) => [...s].forEach((ch, i) => dv.setUint8(o + i, ch.charCodeAt(0)));
  w(0, "RIFF");
  dv.setUint32(4, 36 + n * 2, true);
  w(8, "WAVE");
  w(12, "fmt ");
  dv.setUint32(16, 16, true);
  dv.setUint16(20, 1, true); // PCM
  dv.setUint16(22, 1, true); // mono
  dv.setUint32(24, sampleRate, true);
  dv.setUint32(28, sampleRate * 2, true);
  dv.setUint16(32, 2, true);
  dv.setUint16(34, 16, true);
  w(36, "data");
  dv.setUint32(40, n * 2, true);
  for (let i = 0; i < n; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    dv.setInt16(44 + i * 2, v < 0 ? v * 0x8000 : v * 0x7fff, true);
  }
  return new Blob([out], { type: "audio/wav" });
}

// Plays part of a mono clip; reports the position while playing.
export class Player {
  constructor(onPosition) {
    this.ctx = null;
    this.node = null;
    this.onPosition = onPosition;
    this.raf = 0;
  }

  play(samples, sampleRate, fromS, toS) {
    this.stop();
    if (!this.ctx) this.ctx = new AudioContext();
    if (this.ctx.state === "suspended") this.ctx.resume();
    const buf = this.ctx.createBuffer(1, samples.length, sampleRate);
    buf.copyToChannel(samples, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buf;
    node.connect(this.ctx.destination);
    const from = Math.max(0, Math.min(fromS, buf.duration));
    const dur = toS != null ? Math.max(0.05, toS - from) : undefined;
    const t0 = this.ctx.currentTime;
    node.start(0, from, dur);
    this.node = node;
    node.onended = () => {
      if (this.node === node) this.stop();
    };
    const tick = () => {
      if (this.node !== node) return;
      this.onPosition(from + (this.ctx.currentTime - t0));
      this.raf = requestAnimationFrame(tick);
    };
    tick();
  }

  stop() {
    cancelAnimationFrame(this.raf);
    if (this.node) {
      const n = this.node;
      this.node = null;
      try {
        n.stop();
      } catch (e) {
        // already stopped
      }
    }
    this.onPosition(null);
  }

  get playing() {
    return this.node != null;
  }
}
