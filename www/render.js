// Drawing: colour maps, the spectrogram with the anomaly heatmap over it, the score curve, and their axes.
//
// Data layout is the core's: logmel and map are [frames, melBins] row-major, curve is [frames], melHz [melBins].

/** Widest spectrogram image drawn, in columns (frames are pooled by their maximum beyond it). */
const MAX_IMAGE_COLUMNS = 4096;

// Perceptually uniform colour maps (matplotlib's), sampled at 9 evenly spaced points and interpolated.
const MAPS = {
  viridis: ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"],
  magma: ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55064", "#fb8761", "#fec287", "#fcfdbf"],
  cividis: ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c", "#fee838"],
  greys: ["#000000", "#1f1f1f", "#3b3b3b", "#575757", "#737373", "#8f8f8f", "#ababab", "#d4d4d4", "#ffffff"],
};

function hexToRgb(h) {
  return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
}

// 256-entry lookup table [r, g, b, ...] for a named colour map.
export function colourTable(name) {
  const stops = (MAPS[name] || MAPS.viridis).map(hexToRgb);
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = stops[k][c] * (1 - f) + stops[k + 1][c] * f;
  }
  return lut;
}

export const COLOUR_MAPS = Object.keys(MAPS);

// The heatmap's own colour ramp: transparent below the low end, then dark red -> red -> pink -> white, colours
// that none of the spectrogram's maps use, so the heat stands out on any of them.
const HEAT = ["#6b0016", "#d0102e", "#ff2d6f", "#ff8fc8", "#ffffff"].map(hexToRgb);
function heatColour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (HEAT.length - 1);
  const k = Math.min(Math.floor(x), HEAT.length - 2);
  const f = x - k;
  return [0, 1, 2].map((c) => HEAT[k][c] * (1 - f) + HEAT[k + 1][c] * f);
}

// Where the heatmap starts to show and where it saturates come with each result (`displayFloor`,
// `displayCeiling`, in the map's units, around the segment threshold): transparent below the floor, full colour
// from the ceiling up, or from the largest value shown if that is higher, so that a clip that is anomalous
// throughout still shows where it is most anomalous. Without them (an older core): 60 % and 140 % of the
// segment threshold.
export const HEAT_LOW = 0.6;
export const HEAT_HIGH = 1.4;

export function heatLegendCss() {
  const stops = HEAT.map((c, i) => `rgb(${c.join(",")}) ${(i / (HEAT.length - 1)) * 100}%`);
  return `linear-gradient(to right, rgba(107,0,22,0) 0%, ${stops.join(", ")})`;
}

// Mel bins whose centre frequency is at or below `bandLimitHz` (all of them when there is no limit): the band
// the core judged. Bands above the Nyquist frequency of the clip (or of the bank's normal clips) hold no signal
// and are not shown.
export function judgedBins(melHz, bandLimitHz) {
  if (!melHz || !(bandLimitHz > 0) || !Number.isFinite(bandLimitHz)) return melHz ? melHz.length : 0;
  let n = 0;
  while (n < melHz.length && melHz[n] <= bandLimitHz * 1.0001) n++;
  return Math.max(1, n);
}

// Grows with appended frames; used for whole clips and for the live recording alike. `bandLimitHz` (or null):
// the highest frequency judged; `durationS` (or null while it grows): the audio's length, which the last frame
// may overrun by part of a hop. While recording, the log-mel of a frame arrives before its window is judged:
// `judged` counts the frames (from the start) that have a map and a curve.
export class Series {
  constructor(melBins, hopS, melHz, bandLimitHz = null) {
    this.melBins = melBins;
    this.hopS = hopS;
    this.melHz = melHz;
    this.bandLimitHz = bandLimitHz;
    this.visibleBins = judgedBins(melHz, bandLimitHz) || melBins;
    this.durationS = null;
    this.frames = 0;
    this.judged = 0;
    this.capacity = 0;
    this.logmel = new Float32Array(0);
    this.map = new Float32Array(0);
    this.curve = new Float32Array(0);
    this.lmMin = Infinity;
    this.lmMax = -Infinity;
  }

  static fromResult(r) {
    const s = new Series(r.melBins, r.hopS, r.melHz, r.bandLimitHz);
    s.write(0, r.frames, r.logmel, r.map, r.curve);
    s.durationS = r.durationS ?? null;
    return s;
  }

  reserve(frames) {
    if (frames <= this.capacity) return;
    const cap = Math.max(frames, Math.ceil(this.capacity * 1.5), 256);
    const grow = (a, n) => {
      const b = new Float32Array(n);
      b.set(a);
      return b;
    };
    this.logmel = grow(this.logmel, cap * this.melBins);
    this.map = grow(this.map, cap * this.melBins);
    this.curve = grow(this.curve, cap);
    this.capacity = cap;
  }

  // Writes `frames` judged frames starting at frame `start` (an update may revise frames already written).
  write(start, frames, logmel, map, curve) {
    const M = this.melBins;
    this.reserve(start + frames);
    this.map.set(map.subarray(0, frames * M), start * M);
    this.curve.set(curve.subarray(0, frames), start);
    this.judged = Math.max(this.judged, start + frames);
    this.writeLogmel(start, frames, logmel);
  }

  // Writes the log-mel of `frames` frames starting at `start`, not judged yet (their map and curve come later).
  writeLogmel(start, frames, logmel) {
    const M = this.melBins;
    this.reserve(start + frames);
    this.logmel.set(logmel.subarray(0, frames * M), start * M);
    this.frames = Math.max(this.frames, start + frames);
    // The colour range of the spectrogram: over the bins shown only (silent bands above the limit would
    // otherwise pull it down).
    const V = this.visibleBins;
    for (let t = 0; t < frames; t++) {
      for (let m = 0; m < V; m++) {
        const v = logmel[t * M + m];
        if (v < this.lmMin) this.lmMin = v;
        if (v > this.lmMax) this.lmMax = v;
      }
    }
  }

  get duration() {
    return this.durationS ?? this.frames * this.hopS;
  }

  curveMax() {
    let m = 0;
    for (let i = 0; i < this.judged; i++) m = Math.max(m, this.curve[i]);
    return m;
  }
}

function niceStep(span, target) {
  const raw = span / Math.max(target, 1);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function fmtHz(f) {
  return f >= 1000 ? `${+(f / 1000).toFixed(1)} k` : `${Math.round(f)}`;
}

function fmtS(t, step) {
  return step < 1 ? t.toFixed(1) : String(Math.round(t));
}

function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  return dpr;
}

// The spectrogram + heatmap + score-curve figure. `els` holds the canvases of index.html.
export class Figure {
  constructor(els) {
    this.els = els; // { spec, heat, faxis, taxis, curve, cursor }
    this.series = null;
    this.threshold = 1;
    this.display = null; // {floor, ceiling} of the heat ramp, or null for HEAT_LOW/HEAT_HIGH of the threshold
    this.units = null; // "z" or "distance": the curve's labels say which
    this.colourMap = "viridis";
    this.lut = colourTable(this.colourMap);
    this.view = { start: 0, frames: 0 }; // frames shown
    this.live = false;
    this.liveSpan = 0;
    this.playhead = null; // seconds or null
    this.segments = [];
    this.stale = false;
  }

  setColourMap(name) {
    this.colourMap = name;
    this.lut = colourTable(name);
    this.draw();
  }

  // `levels`: {seg, floor, ceiling}: the curve's threshold and the heat ramp.
  setLevels(levels) {
    this.threshold = levels && levels.seg != null ? levels.seg : 1;
    this.display = levels && levels.floor != null && levels.ceiling != null ? { floor: levels.floor, ceiling: levels.ceiling } : null;
    this.units = levels ? levels.units ?? null : null;
  }

  setThreshold(levels) {
    this.setLevels(levels);
    this.draw();
  }

  // Whole clip: the view is the whole series. `stale`: the map was made with a bank no longer in use, so only
  // the spectrogram is drawn.
  showClip(series, levels, segments, stale = false) {
    this.series = series;
    this.setLevels(levels);
    this.segments = segments || [];
    this.stale = stale;
    this.live = false;
    this.view = { start: 0, frames: series.frames };
    this.draw();
  }

  // Live: the view follows the last `spanS` seconds.
  showLive(series, levels, spanS) {
    this.series = series;
    this.stale = false;
    this.setLevels(levels);
    this.segments = [];
    this.live = true;
    this.liveSpan = Math.max(1, Math.round(spanS / series.hopS));
    this.follow();
    this.draw();
  }

  follow() {
    if (!this.live || !this.series) return;
    const n = this.liveSpan;
    this.view = { start: Math.max(0, this.series.frames - n), frames: n };
  }

  // Seconds at a CSS x position inside the plot area.
  timeAt(clientX) {
    if (!this.series) return 0;
    const r = this.els.heat.getBoundingClientRect();
    const f = (clientX - r.left) / r.width;
    return (this.view.start + f * this.view.frames) * this.series.hopS;
  }

  draw() {
    this.drawImages();
    this.drawAxes();
    this.drawCurve();
    this.drawCursor();
  }

  drawImages() {
    const { spec, heat } = this.els;
    const s = this.series;
    if (!s || this.view.frames <= 0) {
      for (const c of [spec, heat]) c.getContext("2d").clearRect(0, 0, c.width, c.height);
      return;
    }
    // Long views are drawn at most MAX_IMAGE_COLUMNS wide (a canvas wider than about 32k pixels does not draw):
    // each column shows the largest value of the frames it covers, so no anomaly is lost.
    const W = Math.min(this.view.frames, MAX_IMAGE_COLUMNS);
    const step = this.view.frames / W;
    const M = s.melBins; // row length of the data
    const V = s.visibleBins; // rows drawn: the judged band
    if (spec.width !== W || spec.height !== V) {
      spec.width = heat.width = W;
      spec.height = heat.height = V;
    }
    const specImg = new ImageData(W, V);
    const heatImg = new ImageData(W, V);
    const lo = s.lmMin;
    const span = s.lmMax > s.lmMin ? s.lmMax - s.lmMin : 1;
    const thr = this.threshold > 0 ? this.threshold : 1;
    let viewMax = -Infinity;
    for (let t = this.view.start; t < Math.min(s.judged, this.view.start + this.view.frames); t++) {
      for (let m = 0; m < V; m++) viewMax = Math.max(viewMax, s.map[t * M + m]);
    }
    const hLo = this.display ? this.display.floor : HEAT_LOW * thr;
    const hSpan = Math.max(this.display ? this.display.ceiling : HEAT_HIGH * thr, viewMax) - hLo || 1;
    this.heatTop = hLo + hSpan;
    const lut = this.lut;
    const sp = specImg.data;
    const hp = heatImg.data;
    for (let x = 0; x < W; x++) {
      const t = this.view.start + Math.floor(x * step);
      if (t >= s.frames) break;
      const tEnd = Math.min(s.frames, Math.max(t + 1, this.view.start + Math.floor((x + 1) * step)));
      for (let m = 0; m < V; m++) {
        const y = V - 1 - m; // low frequencies at the bottom
        const o = (y * W + x) * 4;
        let lm = s.logmel[t * M + m];
        let mp = s.map[t * M + m];
        for (let u = t + 1; u < tEnd; u++) {
          lm = Math.max(lm, s.logmel[u * M + m]);
          mp = Math.max(mp, s.map[u * M + m]);
        }
        const v = Math.min(255, Math.max(0, Math.round(((lm - lo) / span) * 255)));
        sp[o] = lut[v * 3];
        sp[o + 1] = lut[v * 3 + 1];
        sp[o + 2] = lut[v * 3 + 2];
        sp[o + 3] = 255;
        const h = this.stale || t >= s.judged ? 0 : (mp - hLo) / hSpan;
        if (h > 0) {
          const c = heatColour(h);
          hp[o] = c[0];
          hp[o + 1] = c[1];
          hp[o + 2] = c[2];
          hp[o + 3] = Math.round(255 * Math.min(1, 0.25 + 0.75 * h));
        }
      }
    }
    spec.getContext("2d").putImageData(specImg, 0, 0);
    heat.getContext("2d").putImageData(heatImg, 0, 0);
  }

  drawAxes() {
    const { faxis, taxis } = this.els;
    const s = this.series;
    // frequency axis (left)
    let dpr = fitCanvas(faxis);
    let g = faxis.getContext("2d");
    g.clearRect(0, 0, faxis.width, faxis.height);
    g.fillStyle = getComputedStyle(faxis).color;
    g.strokeStyle = g.fillStyle;
    g.font = `${11 * dpr}px system-ui, sans-serif`;
    g.textAlign = "right";
    g.textBaseline = "middle";
    const ticks = [];
    if (s && s.melHz && s.melHz.length > 1) {
      const hz = s.melHz;
      const M = Math.max(2, s.visibleBins); // the judged band only
      const H = faxis.height;
      const candidates = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000];
      let lastY = Infinity;
      for (const f of candidates) {
        if (f < hz[0] || f > hz[M - 1]) continue;
        let k = 0;
        while (k < M - 2 && hz[k + 1] < f) k++;
        const pos = k + (f - hz[k]) / (hz[k + 1] - hz[k]); // fractional bin
        const y = H - ((pos + 0.5) / M) * H;
        if (lastY - y < 14 * dpr) continue;
        lastY = y;
        ticks.push(f);
        g.fillText(fmtHz(f), faxis.width - 7 * dpr, y);
        g.fillRect(faxis.width - 5 * dpr, y, 5 * dpr, 1 * dpr);
      }
      g.save();
      g.translate(9 * dpr, H / 2);
      g.rotate(-Math.PI / 2);
      g.textAlign = "center";
      g.fillText("Hz", 0, 0);
      g.restore();
      faxis.dataset.topHz = String(Math.round(hz[M - 1]));
    }
    faxis.dataset.ticks = ticks.join(",");
    // time axis (bottom)
    dpr = fitCanvas(taxis);
    g = taxis.getContext("2d");
    g.clearRect(0, 0, taxis.width, taxis.height);
    g.fillStyle = getComputedStyle(taxis).color;
    g.font = `${11 * dpr}px system-ui, sans-serif`;
    g.textAlign = "center";
    g.textBaseline = "top";
    if (s && this.view.frames > 0) {
      const t0 = this.view.start * s.hopS;
      const span = this.view.frames * s.hopS;
      const W = taxis.width;
      const step = niceStep(span, W / (70 * dpr));
      for (let t = Math.ceil(t0 / step) * step; t <= t0 + span + 1e-9; t += step) {
        const x = ((t - t0) / span) * W;
        g.fillRect(x, 0, 1 * dpr, 5 * dpr);
        g.fillText(fmtS(t, step), Math.min(Math.max(x, 12 * dpr), W - 12 * dpr), 7 * dpr);
      }
      g.textAlign = "right";
      g.fillText("s", W, 20 * dpr);
    }
  }

  drawCurve() {
    const c = this.els.curve;
    const dpr = fitCanvas(c);
    const g = c.getContext("2d");
    const W = c.width;
    const H = c.height;
    g.clearRect(0, 0, W, H);
    const s = this.series;
    if (!s || this.view.frames <= 0) return;
    if (this.stale) {
      g.fillStyle = getComputedStyle(c).color;
      g.font = `${12 * dpr}px system-ui, sans-serif`;
      g.textBaseline = "middle";
      g.fillText("not judged by the bank in use: no curve", 8 * dpr, H / 2);
      return;
    }
    const thr = this.threshold;
    // From 0 (or the lowest value: z-scores go below 0) to above the threshold and the highest value.
    let vmin = Math.min(0, thr);
    let vmax = thr + 0.25 * Math.abs(thr);
    for (let i = 0; i < s.judged; i++) {
      vmin = Math.min(vmin, s.curve[i]);
      vmax = Math.max(vmax, s.curve[i]);
    }
    vmax += 0.05 * (vmax - vmin);
    if (!(vmax > vmin)) vmax = vmin + 1;
    const pad = 4 * dpr;
    const yOf = (v) => H - pad - ((v - vmin) / (vmax - vmin)) * (H - 2 * pad);
    const xOf = (t) => ((t - this.view.start + 0.5) / this.view.frames) * W;
    const style = getComputedStyle(c);
    // segments above the threshold, shaded
    g.fillStyle = "rgba(215, 25, 28, 0.16)";
    for (const seg of this.segments) {
      const x0 = xOf(seg.startS / s.hopS - 0.5);
      const x1 = xOf(seg.endS / s.hopS - 0.5);
      g.fillRect(x0, 0, Math.max(x1 - x0, 1), H);
    }
    // frames whose log-mel has arrived but whose window is not judged yet (live only)
    const end = Math.min(s.judged, this.view.start + this.view.frames);
    const shownEnd = Math.min(s.frames, this.view.start + this.view.frames);
    if (shownEnd > Math.max(end, this.view.start)) {
      const x0 = xOf(Math.max(end, this.view.start) - 0.5);
      g.fillStyle = "rgba(140, 150, 161, 0.12)";
      g.fillRect(x0, 0, xOf(shownEnd - 0.5) - x0, H);
      g.fillStyle = style.color;
      g.font = `${11 * dpr}px system-ui, sans-serif`;
      g.textBaseline = "middle";
      g.textAlign = "left";
      if (xOf(shownEnd - 0.5) - x0 > 120 * dpr) g.fillText(this.pendingText || "not judged yet", x0 + 6 * dpr, H / 2);
    }
    // curve
    g.beginPath();
    for (let t = this.view.start; t < end; t++) {
      const x = xOf(t);
      const y = yOf(s.curve[t]);
      if (t === this.view.start) g.moveTo(x, y);
      else g.lineTo(x, y);
    }
    g.strokeStyle = style.getPropertyValue("--curve") || "#4cc9f0";
    g.lineWidth = 1.5 * dpr;
    g.stroke();
    // threshold
    g.setLineDash([6 * dpr, 4 * dpr]);
    g.strokeStyle = "#d7191c";
    g.lineWidth = 1 * dpr;
    g.beginPath();
    g.moveTo(0, yOf(thr));
    g.lineTo(W, yOf(thr));
    g.stroke();
    g.setLineDash([]);
    g.fillStyle = "#d7191c";
    g.font = `${10 * dpr}px system-ui, sans-serif`;
    g.textAlign = "right";
    g.textBaseline = "bottom";
    const z = this.units === "z";
    g.fillText(`threshold ${z ? `${thr.toFixed(2)} z` : thr.toFixed(3)}`, W - 4 * dpr, yOf(thr) - 2 * dpr);
    g.fillStyle = style.color;
    g.textAlign = "left";
    g.textBaseline = "top";
    g.fillText(`max ${vmax.toFixed(2)}${z ? " z" : ""}`, 4 * dpr, 2 * dpr);
  }

  setPlayhead(seconds) {
    this.playhead = seconds;
    this.drawCursor();
  }

  drawCursor() {
    const c = this.els.cursor;
    const dpr = fitCanvas(c);
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    const s = this.series;
    if (!s || this.playhead == null || this.view.frames <= 0) return;
    const x = ((this.playhead / s.hopS - this.view.start) / this.view.frames) * c.width;
    if (x < 0 || x > c.width) return;
    g.fillStyle = "rgba(255,255,255,0.9)";
    g.fillRect(x - dpr, 0, 2 * dpr, c.height);
  }
}
