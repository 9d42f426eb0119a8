// The page's state, declared in one place: main.js reads and changes it, the end-to-end tests read it (as
// window.sonomaly). What the analysis worker holds (the model, the bank, a fit in progress) is the worker's; what is
// needed to start a fresh worker in the same state is engine.js's (`engine.session`).

export const state = {
  // ---- the model and the bank in use (as the worker last said) ----
  model: null, // model info from the core (Engine.modelInfo, with source, isDefault, shipped)
  bank: null, // bank info from the core (Engine.loadBank / bankInfo)
  bankName: null,
  bankFile: null, // file name the bank in use downloads as
  bankSerial: 0, // the worker's serial of the bank in use; results carry the serial they were scored with
  // ---- the threshold slider ----
  thresholdOverride: null, // the slider's value when moved off the bank's default, else null
  // What the core gives for the slider's value `value` (worker `levels`): {value, thr, seg, floor, ceiling}.
  levels: null,
  // ---- clips ----
  // Scored clips: {id, name, path, label, baseLabel, hash, blob, file, kind, samples, sampleRate, channels,
  // channel, duration, result, rescoreError}. `result` (main.js resultOf): score, thresholds, units, members,
  // series (render.js Series, for drawing), segments (the core's, at the bank's thresholds), segmentCurve and
  // segmentHopS (the curve the core finds segments on: full resolution, also for a long file), bankSerial,
  // segmentsFor ({value, serial, segments}: the core's segments for a slider value).
  clips: [],
  current: null, // the clip on screen (null while recording live)
  fitMaterial: [], // {id, clip, use}: clips offered as normal sound to fit on
  fitted: null, // {bytes, name, fileName}: the last bank fitted in this visit
  // ---- what is going on ----
  busy: 0, // actions running (see main.js busy)
  running: null, // label of the action running; others wait for it (`queued`)
  ready: false, // the model (and a first bank, if any) is loaded
  initFailed: false,
  queued: [], // labels of actions waiting (for the model, or for the action running)
  fitJob: null, // the request id of the fit in progress (for Cancel)
  lastCancel: null, // {step, askedAt, stoppedAt, restarted, restoredAt}: the last Cancel, times from performance.now()
  restarting: false, // the analysis worker is being started again after a cancel
  rescoring: false, // clips of an earlier bank are being rescored
  // ---- input ----
  channel: "mix", // channel choice for multi-channel files: "mix" or a 0-based index
  rec: null, // the recording (main.js newRecording)
  timings: { pageStart: performance.timeOrigin, firstHeatmapMs: null, modelReadyMs: null },
};
