// The page's side of the worker that hosts the wasm core (worker.js): the only module that talks to it. The rest
// of the page calls `engine.call(type, payload)` and gets a promise; nothing else posts to the worker.
//
// Protocol. The page posts {id, type, ...payload}; the worker answers {id, ok: true, result} or {id, ok: false,
// error, clip?, modelError?, layers?} and, while it works, {type: "progress", id, stage, done, total, text}.
// MESSAGES below lists every request and how it runs:
//   "queued"    one at a time, in the order asked: the next is posted when the one before has been answered, so a
//               score asked for after a bank change is scored with the new bank, and requests not yet posted
//               survive a restart of the worker;
//   "immediate" posted at once, answered between the worker's tasks: it only reads the bank in use;
//   "control"   posted at once, never answered (cancel);
//   "internal"  posted by this module only, as part of a restart or of a score split over the pool (below); the
//               worker runs them in order, as the queued ones.
//
// Cancel. `cancel(id)` asks the worker to stop request `id`: a step that yields (fitting, between clips) stops
// there. A step that cannot yield (the wasm core runs it in one piece: a clip's patches, the memory bank and the
// threshold, a long file) is stopped by terminating the worker after CANCEL_GRACE_MS; a fresh worker is started
// with the model and the bank that were in use (kept here: `session`), so that nothing the page shows changes.
// A request asked to cancel never resolves: if its answer comes anyway, it is dropped (and if the answer came with
// a new bank, the worker is restarted with the old one).
//
// Session. Answers that change the model or the bank carry `session` ({model: {kind: "default" | "shipped" |
// "file", name, source}, bank: Uint8Array | null, bankName, serial, defaultModel: {name, sha}}): what a restarted
// worker needs to be in the same state. This module keeps it (and the bytes of a model opened from files) and
// takes it out of the answer.
//
// Pool. Besides the main worker, up to navigator.hardwareConcurrency - 1 helper workers (each its own wasm instance)
// hold the same model and bank (given them with `restore` after each change of the session). A `score` of a clip
// of more than one batch of analysis windows is split: each worker scores its share of whole batches
// (`scoreWindowShare`), the main worker merges the parts (`scoreFromParts`), and the result is the one a single
// worker gives, bit for bit (the core's score_window_share / score_clip_from_parts). `score` with `workers: 1` in its
// payload, or a pool not in step with the bank in use, scores on the main worker alone. A `fit` of two clips or more
// is split the same way: every worker analyses whole clips, taking the next one as it finishes one
// (`fitAnalyse`: the clip's patches as bytes); the main worker adds them in the clips' order as they come
// (`fitBegin`, `fitAddAnalysed`: no clip's bytes are kept here longer than the clips before it take) and finishes
// the fit, so the bank is one worker's bit for bit (`workers: 1` fits on the main worker alone). Cancel during the
// analysis rejects the fit at once and replaces the helpers still analysing; the main worker ends the clip it is
// on (one clip's analysis) and drops the fit. A clip the pool could not analyse (or a helper gone) fits on the
// main worker alone, which then says what was wrong with which clip.

/** Every request the worker answers, and how it runs (see above). worker.js checks its handlers against this. */
export const MESSAGES = Object.freeze({
  init: "queued", // load the default model and a first bank
  restore: "internal", // a fresh worker (or a helper) takes the model and bank in use
  loadModel: "queued", // check a model opened from files and switch to it
  useDefaultModel: "queued",
  loadBank: "queued",
  bankBytes: "queued",
  decodeFile: "queued",
  score: "queued",
  scoreFile: "queued",
  streamStart: "queued",
  streamPush: "queued",
  streamFinish: "queued",
  fit: "queued",
  levels: "immediate", // thresholds, heatmap range and segments for a slider value (the core's rule)
  cancel: "control",
  scoreWindowShare: "internal", // the pool: the parts of one worker's share of a clip's windows
  scoreFromParts: "internal", // the pool: a clip's result from the parts of all its windows
  fitAnalyse: "internal", // the pool: one normal clip's patches for a fit, as bytes (added by the fit's worker)
  fitBegin: "internal", // the pool: the fit's worker starts the fit that the clips' patches are added to
  fitAddAnalysed: "internal", // the pool: the fit's worker adds one clip's patches (in the clips' order)
  fitDrop: "internal", // the pool: the fit's worker drops the fit (cancelled)
});

/** Messages the worker posts that answer no request. */
export const PROGRESS = "progress";

/** How long a request asked to cancel may take to stop by itself before the worker is terminated, ms. */
export const CANCEL_GRACE_MS = 300;

/** A request that was cancelled. `restarted`: the worker was terminated to stop it (and started again). */
export class CancelledError extends Error {
  constructor(type, restarted) {
    super(`${type} was cancelled`);
    this.name = "CancelledError";
    this.cancelled = true;
    this.restarted = restarted;
  }
}

export class Engine {
  /**
   * `hooks`: {onFatal(error): the worker could not start or could not be restarted; onRestart(phase, info):
   * phase "start" (a restart began: info {type} of the request it stopped), "progress" (info: a progress
   * message), "done" (info: the restore's result) or "failed" (info: the error)}.
   */
  constructor(url, hooks = {}, { workers = globalThis.navigator?.hardwareConcurrency ?? 1 } = {}) {
    this.url = url;
    this.hooks = hooks;
    this.poolSize = Math.max(1, Math.min(Math.floor(workers) || 1, 16));
    this.helpers = []; // {worker, pending: Map, serial, syncing, dead}
    this.nextId = 1;
    this.queue = []; // queued requests not posted yet: {id, type, payload, transfer, ...}
    this.running = null; // the queued request posted and not answered yet
    this.inflight = new Map(); // id -> request posted and not answered (running and immediate ones)
    this.session = null;
    this.initPayload = null;
    this.modelFiles = null; // {onnx, spec, name} of a model opened from files, while it is in use
    this.restarts = 0;
    this.restarting = null; // promise of the restore in progress
    this.held = []; // immediate requests asked for during a restore
    this.worker = this.spawn();
  }

  spawn() {
    const w = new Worker(this.url, { type: "module" });
    w.onmessage = (ev) => this.onMessage(w, ev.data);
    w.onerror = (ev) => {
      ev.preventDefault();
      if (w !== this.worker) return;
      const err = new Error(ev.message || "the worker could not start");
      err.fatal = true;
      this.failAll(err);
      this.hooks.onFatal?.(err);
    };
    return w;
  }

  /**
   * Asks the worker for `type` (one of MESSAGES) with `payload`; `transfer`: buffers of the payload to move rather
   * than copy; `onProgress(msg)`: the worker's progress messages for it. Returns a promise of the result with
   * `id` set on it (for `cancel`).
   */
  call(type, payload = {}, transfer = [], onProgress = null) {
    const how = MESSAGES[type];
    if (!how || how === "control" || how === "internal") throw new Error(`engine: unknown request ${type}`);
    const id = this.nextId++;
    let req;
    const p = new Promise((resolve, reject) => {
      req = { id, type, payload, transfer, onProgress, resolve, reject, cancelled: false };
    });
    if (type === "init") this.initPayload = payload;
    if (type === "loadModel") {
      // Kept (copied, not moved) to start a worker again with this model.
      req.model = { onnx: payload.onnx, spec: payload.spec, name: payload.name };
      req.transfer = transfer.filter((b) => b !== payload.onnx);
    }
    if (how === "immediate") {
      if (this.restarting) this.held.push(req); // posted once the fresh worker has the model and bank
      else this.post(req);
    } else {
      this.queue.push(req);
      this.pump();
    }
    p.id = id;
    return p;
  }

  /** True while request `id` is waiting or running. */
  pending(id) {
    return this.inflight.has(id) || this.queue.some((r) => r.id === id) || this.held.some((r) => r.id === id);
  }

  /**
   * Stops request `id`: it rejects with a CancelledError within CANCEL_GRACE_MS (plus the time to terminate the
   * worker). Resolves to {restarted} once it has, or to null if the request had already been answered.
   */
  async cancel(id) {
    const i = this.queue.findIndex((r) => r.id === id);
    if (i >= 0) {
      const [req] = this.queue.splice(i, 1);
      req.reject(new CancelledError(req.type, false));
      return { restarted: false };
    }
    if (this.running?.id === id && this.running.pooled && !this.inflight.has(id)) return this.cancelPooled(this.running);
    const req = this.inflight.get(id);
    if (!req || req.cancelled) return null;
    req.cancelled = true;
    const settled = new Promise((resolve) => (req.onSettled = resolve));
    this.worker.postMessage({ type: "cancel", id });
    const timer = setTimeout(() => {
      if (this.inflight.get(id) === req) this.restart(req);
    }, CANCEL_GRACE_MS);
    const restarted = await settled;
    clearTimeout(timer);
    return { restarted };
  }

  post(req) {
    this.inflight.set(req.id, req);
    this.worker.postMessage({ id: req.id, type: req.type, ...req.payload }, req.transfer);
  }

  pump() {
    if (this.running || this.restarting || !this.queue.length) return;
    this.running = this.queue.shift();
    const { type, payload } = this.running;
    if (type === "score" && payload.workers !== 1 && this.inStep().length) {
      this.scorePooled(this.running);
    } else if (type === "fit" && payload.workers !== 1 && payload.clips?.length >= 2 && this.inStep().length) {
      this.fitPooled(this.running);
    } else this.post(this.running);
  }

  // ---- the pool ----

  /** Helpers that hold the bank in use. */
  inStep() {
    const s = this.session;
    return s ? this.helpers.filter((h) => !h.dead && !h.syncing && h.serial === s.serial && h.sha === s.model.sha) : [];
  }

  /** Starts the helpers (once) and gives each the model and bank in use when they changed. */
  syncHelpers() {
    const s = this.session;
    if (!s || !this.initPayload) return;
    while (this.helpers.length < this.poolSize - 1) this.helpers.push(this.spawnHelper());
    for (const h of this.helpers) {
      if (h.dead || (h.serial === s.serial && h.sha === s.model.sha)) continue;
      const want = s;
      const payload = {
        ...this.initPayload,
        preferredBank: null,
        session: s,
        modelFiles: s.model.kind === "file" ? this.modelFiles : null,
      };
      const p = (h.syncing || Promise.resolve()).catch(() => {}).then(() => this.helperCall(h, "restore", payload));
      h.syncing = p;
      p.then(
        () => {
          if (h.syncing === p) h.syncing = null;
          h.serial = want.serial;
          h.sha = want.model.sha;
        },
        (e) => {
          if (h.syncing === p) h.syncing = null;
          console.warn("sonomaly: a helper worker could not take the bank in use; scoring without it:", e.message);
          h.serial = null;
        },
      );
    }
  }

  spawnHelper() {
    const h = { worker: new Worker(this.url, { type: "module" }), pending: new Map(), serial: null, sha: null, syncing: null, dead: false };
    h.worker.onmessage = (ev) => {
      const msg = ev.data;
      if (msg.type === PROGRESS) return;
      const p = h.pending.get(msg.id);
      if (!p) return;
      h.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new Error(msg.error));
    };
    h.worker.onerror = (ev) => {
      ev.preventDefault();
      h.dead = true;
      for (const p of h.pending.values()) p.reject(new Error(ev.message || "a helper worker stopped"));
      h.pending.clear();
    };
    return h;
  }

  helperCall(h, type, payload, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      h.pending.set(id, { resolve, reject });
      h.worker.postMessage({ id, type, ...payload }, transfer);
    });
  }

  /** A request of this module to the main worker, run in order with the others (see MESSAGES, "internal"). */
  internal(type, payload, transfer = []) {
    let req;
    const p = new Promise((resolve, reject) => {
      req = { id: this.nextId++, type, payload, transfer, resolve, reject, cancelled: false, internal: true };
    });
    this.post(req);
    p.req = req;
    return p;
  }

  /**
   * Scores `req` (a `score` request, the one running) over the main worker and the helpers in step: each takes a
   * range of whole batches of windows, the main worker merges. Anything unexpected (a helper gone, a bank changed
   * meanwhile) scores it on the main worker alone instead.
   */
  async scorePooled(req) {
    const { samples, sampleRate } = req.payload;
    const t0 = performance.now();
    req.onProgress?.({ type: PROGRESS, id: req.id, stage: "score", done: 0, total: 1, text: "Scoring…" });
    let result = null;
    try {
      const helpers = this.inStep();
      const s = this.session;
      // Windows of the clip, about (the workers count them exactly): more than one batch, or one worker does it.
      const g = s.windows;
      const frames = g ? samples.length / sampleRate / g.hopS : 0;
      const windows = !g ? 0 : frames <= g.frames ? 1 : Math.ceil((frames - g.frames) / g.hop) + 1;
      const k = g ? Math.min(1 + helpers.length, Math.ceil(windows / g.batch)) : 1;
      if (k >= 2) {
        const parts = await Promise.all(Array.from({ length: k }, (_, j) => {
          const share = { samples, sampleRate, share: j, shares: k };
          return j === 0 ? this.internal("scoreWindowShare", share) : this.helperCall(helpers[j - 1], "scoreWindowShare", share);
        }));
        const total = parts[0].total;
        const covered = parts.every((p, j) => p.total === total && p.from === (j ? parts[j - 1].to : 0)) &&
          parts[k - 1].to === total;
        if (covered && parts.every((p) => p.serial === s.serial)) {
          const cat = (key, Type) => {
            const out = new Type(parts.reduce((n, p) => n + p[key].length, 0));
            let at = 0;
            for (const p of parts) {
              out.set(p[key], at);
              at += p[key].length;
            }
            return out;
          };
          const merged = { samples, sampleRate, rows: cat("rows", Float32Array), scores: cat("scores", Float32Array), lengths: cat("lengths", Uint32Array) };
          result = await this.internal("scoreFromParts", merged, [merged.rows.buffer, merged.scores.buffer, merged.lengths.buffer]);
          result.elapsedMs = performance.now() - t0;
          result.workers = k;
        }
      }
    } catch (e) {
      console.warn("sonomaly: the pool could not score this clip; scoring it on one worker:", e.message);
      result = null;
    }
    if (this.running !== req) return; // the worker was restarted meanwhile: the request was settled there
    if (!result) {
      this.post(req);
      return;
    }
    this.running = null;
    req.resolve(result);
    this.pump();
  }

  /**
   * Fits `req` (a `fit` request, the one running): the main worker and the helpers in step analyse its clips, one
   * at a time each, then the main worker fits on the analysed clips in their order (the request is posted to it
   * with the bytes instead of the samples, and answers as a `fit` on one worker does). Any failure (a clip that
   * cannot be fitted on, a helper gone) fits on the main worker alone instead, with the samples.
   */
  async fitPooled(req) {
    const { clips, preset = null, layers = null, detector = null } = req.payload;
    const n = clips.length;
    const workers = [null, ...this.inStep()]; // null: the main worker
    const analysed = new Array(n).fill(null);
    const busy = new Map(); // worker (a helper, or null) -> the clip it analyses
    req.pooled = { busy, internal: new Set() };
    let next = 0;
    let done = 0;
    let failed = false;
    // The clips' patches go to the main worker in the clips' order, each as soon as those before it have gone.
    let nextAdd = 0;
    const adds = [];
    const flush = () => {
      while (!failed && !req.cancelled && nextAdd < n && analysed[nextAdd]) {
        const b = analysed[nextAdd];
        analysed[nextAdd++] = null;
        const add = this.internal("fitAddAnalysed", { bytes: b }, [b.buffer]);
        req.pooled.internal.add(add.req);
        adds.push(add.catch((e) => {
          if (!req.cancelled && !failed) console.warn("sonomaly: the fit's worker could not add a clip; fitting on one worker:", e.message);
          failed = true;
        }));
      }
    };
    // The clip named is the first one still being analysed, so that the steps are said in order.
    const say = () => {
      if (req.cancelled || !busy.size) return;
      const i = Math.min(...busy.values());
      req.onProgress?.({
        type: PROGRESS, id: req.id, stage: "fit", done, total: n + 1,
        text: `Fitting: clip ${i + 1} of ${n} (${clips[i].name}; ${done} analysed, on ${workers.length} workers)…`,
      });
    };
    const run = async (h) => {
      while (!failed && !req.cancelled && next < n) {
        const i = next++;
        const c = clips[i];
        // A copy: the samples stay here, for a fit on one worker if the pool fails.
        const payload = { preset, layers, detector, samples: c.samples.slice(), sampleRate: c.sampleRate };
        busy.set(h, i);
        say();
        try {
          let call;
          if (h) call = this.helperCall(h, "fitAnalyse", payload, [payload.samples.buffer]);
          else {
            call = this.internal("fitAnalyse", payload, [payload.samples.buffer]);
            req.pooled.internal.add(call.req);
          }
          analysed[i] = (await call).bytes;
          flush();
        } catch (e) {
          if (!req.cancelled && !failed) console.warn(`sonomaly: the pool could not analyse ${c.name}; fitting on one worker:`, e.message);
          failed = true;
          return;
        } finally {
          busy.delete(h);
        }
        done++;
        say();
      }
    };
    const begin = this.internal("fitBegin", { preset, layers, detector });
    req.pooled.internal.add(begin.req);
    try {
      await begin;
    } catch (e) {
      failed = true; // e.g. a layer the model lacks: the fit on one worker says so
    }
    if (!failed) await Promise.all(workers.map(run));
    await Promise.all(adds);
    if (this.running !== req || req.cancelled) return; // cancelled meanwhile: settled by cancelPooled
    req.pooled = null;
    if (failed) {
      this.internal("fitDrop", {}).catch(() => {});
      this.post(req);
      return;
    }
    // Every clip is in the main worker's fit: it finishes it, and answers as a fit on one worker does.
    req.payload = { ...req.payload, clips: clips.map((c) => ({ name: c.name })), added: n };
    req.transfer = [];
    req.workers = workers.length; // said in the answer
    this.post(req);
  }

  /** Cancels a fit that the pool is analysing (see fitPooled): settled at once; the workers stop as said above. */
  cancelPooled(req) {
    const { busy, internal } = req.pooled;
    req.cancelled = true;
    for (const h of busy.keys()) {
      if (!h) continue;
      // A helper busy with a clip of the cancelled fit: replaced (syncHelpers gives the new one the bank in use).
      h.dead = true;
      h.worker.terminate();
      for (const p of h.pending.values()) p.reject(new CancelledError("fitAnalyse", true));
      h.pending.clear();
      this.helpers = this.helpers.filter((x) => x !== h);
    }
    this.syncHelpers();
    // The main worker ends the clip it is analysing and the additions already posted (their answers are dropped:
    // they are no longer in flight, so a restart would not post them again), then drops the fit.
    for (const r of internal) this.inflight.delete(r.id);
    this.internal("fitDrop", {}).catch(() => {});
    this.running = null;
    req.reject(new CancelledError(req.type, false));
    req.onSettled?.(false);
    this.pump();
    return Promise.resolve({ restarted: false });
  }

  onMessage(from, msg) {
    if (from !== this.worker) return; // a terminated worker's last words
    const req = this.inflight.get(msg.id);
    if (msg.type === PROGRESS) {
      if (req && !req.cancelled && req.onProgress) req.onProgress(msg);
      return;
    }
    if (!req) return;
    if (req.cancelled && msg.ok && msg.result && msg.result.session) {
      // It finished (with a new bank or model) before it could stop: back to the state before it.
      this.restart(req);
      return;
    }
    this.inflight.delete(msg.id);
    if (this.running === req) this.running = null;
    if (req.cancelled) {
      req.reject(new CancelledError(req.type, false));
      req.onSettled?.(false);
    } else if (msg.ok) {
      const r = msg.result;
      if (r && typeof r === "object" && r.session) {
        this.session = r.session;
        if (r.session.model.kind === "file") this.modelFiles = req.model || this.modelFiles;
        else this.modelFiles = null;
        delete r.session;
        this.syncHelpers();
      }
      if (req.workers && r && typeof r === "object") r.workers = req.workers;
      req.resolve(r);
    } else {
      const e = new Error(msg.error);
      e.clip = msg.clip;
      e.modelError = msg.modelError;
      e.layers = msg.layers;
      req.reject(e);
    }
    this.pump();
  }

  /**
   * Terminates the worker (stopping `req`, which rejects at once), starts a fresh one and gives it the model and
   * the bank in use; requests waiting in the queue, and immediate ones that were not answered, go to the new
   * worker once it is ready.
   */
  restart(req) {
    this.worker.terminate();
    this.restarts++;
    this.inflight.delete(req.id);
    if (this.running === req) this.running = null;
    req.reject(new CancelledError(req.type, true));
    req.onSettled?.(true);
    const replay = this.held;
    replay.push(...this.inflight.values());
    this.held = [];
    this.inflight.clear();
    if (this.running) {
      // Cannot happen (one queued request runs at a time and it is `req`), but never lose a request.
      this.queue.unshift(this.running);
      this.running = null;
    }
    this.worker = this.spawn();
    this.hooks.onRestart?.("start", { type: req.type });
    const restore = { id: this.nextId++, type: "restore", transfer: [], cancelled: false };
    restore.payload = {
      ...(this.initPayload || {}),
      preferredBank: null,
      session: this.session,
      modelFiles: this.session && this.session.model.kind === "file" ? this.modelFiles : null,
    };
    this.restarting = new Promise((resolve, reject) => {
      restore.resolve = resolve;
      restore.reject = reject;
    });
    restore.onProgress = (m) => this.hooks.onRestart?.("progress", m);
    this.post(restore);
    this.restarting.then(
      (r) => {
        this.restarting = null;
        for (const q of [...replay, ...this.held]) this.post(q);
        this.held = [];
        this.hooks.onRestart?.("done", r);
        this.pump();
      },
      (e) => {
        this.restarting = null;
        e.fatal = true;
        for (const q of [...replay, ...this.held]) q.reject(e);
        this.held = [];
        this.failAll(e);
        this.hooks.onRestart?.("failed", e);
      },
    );
  }

  failAll(err) {
    for (const r of [...this.queue, ...this.inflight.values()]) r.reject(err);
    this.queue = [];
    this.inflight.clear();
    this.running = null;
  }
}
