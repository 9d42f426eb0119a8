// Plain words for what went wrong. The core's messages are exact but written for developers ("bank: safetensors:
// invalid JSON in header ..."); here each becomes one sentence that says what is wrong with the user's file and
// what to do, and the core's own words are kept as details behind a toggle.

/** An error to show as it is: `text` for the user, `details` (the core's words) behind a toggle, and a `reason`
 * (e.g. "no-bank") so that the message can be taken away once its cause is gone. */
export class UserError extends Error {
  constructor(text, details = null, reason = null) {
    super(text);
    this.details = details && details !== text ? details : null;
    this.reason = reason;
  }
}

const PREFIXES = /^(audio|bank|model|invalid input|internal): /;

/** The core's message without its category prefixes, with a capital first letter and a full stop. */
export function sentence(raw) {
  let s = String(raw ?? "").trim();
  while (PREFIXES.test(s)) s = s.replace(PREFIXES, "");
  if (!s) return "Something went wrong.";
  // A capital first letter, unless the sentence starts with a file name ("broken.wav could not ...").
  if (!/^\S+\.\w+\b/.test(s)) s = s[0].toUpperCase() + s.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

function raw(e) {
  return e instanceof Error ? e.message : String(e ?? "");
}

/** `err` as a UserError: kept as it is if it already is one, else the core's sentence with its words as details. */
export function asUserError(err, prefix = "") {
  if (err instanceof UserError) return err;
  const r = raw(err);
  return new UserError(prefix + sentence(r), r);
}

/** A bank refused because it was fitted with another model or front end; null if `r` is not about that. The
 * error's `fact` is what differs, without the advice. */
export function mismatch(bankName, r) {
  const make = (fact, advice) => Object.assign(new UserError(`${fact} ${advice}`, r, "bank-mismatch"), { fact });
  const m = /fitted with backbone '([^']*)' \(sha256 ([0-9a-f]*)\), but the loaded backbone is '([^']*)' \(sha256 ([0-9a-f]*)\)/.exec(r);
  if (m) {
    const [, bankModel, bankSha, model, modelSha] = m;
    if (bankModel !== model) {
      return make(`${bankName} was fitted with the model ${bankModel}, but the model in use is ${model}.`,
        `Load ${bankModel} (Use default model, or Open another model), or fit a bank with this model.`);
    }
    return make(`${bankName} was fitted with another version of the model ${model}: the model files differ ` +
      `(sha256 ${bankSha.slice(0, 8)}… for the bank, ${modelSha.slice(0, 8)}… for the model in use).`,
      "Load the model file the bank was fitted with, or fit a bank with this one.");
  }
  const f = /fitted with front end (.*) but the backbone uses (.*)$/.exec(r);
  if (f) {
    return make(`${bankName} was fitted with another front end (${f[1]}) than the model in use (${f[2]}).`,
      "Load the model the bank was fitted with, or fit a bank with this one.");
  }
  return null;
}

/** A bank file that could not be loaded; `modelError`: why the model the bank needs, which the page ships, could
 * not be loaded (e.g. offline before it was ever downloaded). */
export function bankFileError(name, err, modelError = null) {
  const r = raw(err);
  const mm = mismatch(name, r);
  if (mm && modelError) {
    const m = /fitted with backbone '([^']*)'/.exec(r);
    return Object.assign(new UserError(`${mm.fact} The page has ${m ? `the model ${m[1]}` : "that model"}, but it ` +
      `could not be loaded: ${sentence(modelError)} Try again when online, or fit a bank with the model in use.`,
    `${r}\n${modelError}`, "bank-mismatch"), { fact: mm.fact });
  }
  if (mm) return mm;
  if (/too short to be a bank|header claims|not a valid bank file|unreadable header|no sonomaly metadata|metadata is not JSON|does not name the sonomaly bank format/.test(r)) {
    return new UserError(`${name} is not a sonomaly bank file, or it is damaged (cut short or overwritten). Open a ` +
      ".bank file that sonomaly saved (Download bank) or wrote (sonomaly fit).", r);
  }
  if (/format version/.test(r)) {
    return new UserError(`${name} was saved by another version of sonomaly, which this page cannot read. Fit the ` +
      "bank again with this version.", r);
  }
  if (/checksum|non-finite|has shape|has dtype|malformed|detector|dimensions|no 'memory_bank'|thresholds are not finite/.test(r)) {
    return new UserError(`${name} is damaged: its contents do not check out. Download or fit the bank again.`, r);
  }
  return new UserError(`${name} could not be used as a bank: ${sentence(r)}`, r);
}

/** A clip that could not be scored. */
export function scoreError(label, err) {
  const r = raw(err);
  const short = /too short to judge.*at least \d+ \(([\d.]+) s\)/.exec(r);
  if (short) {
    return new UserError(`${label} is too short to judge: at least ${short[1]} s of sound is needed.`, r);
  }
  if (/not a finite number|far outside the audio range/.test(r)) {
    return new UserError(`${label} holds samples that are not audio (${sentence(r).replace(/\.$/, "")}). Check how ` +
      "the file was written.", r);
  }
  return new UserError(`${label} could not be scored: ${sentence(r)}`, r);
}

/** A fit that failed; `clip` names the clip at fault when the core said which. */
export function fitError(err, clip) {
  const r = raw(err);
  const who = clip || "A clip";
  const short = /too short to learn from.*?at least (?:\d+ \()?([\d.]+) s/.exec(r);
  if (short) {
    return new UserError(`${who} is too short to learn from: at least ${short[1]} s is needed. Untick it and fit again.`, r);
  }
  if (/digital silence/.test(r)) {
    return new UserError(`${who} is digital silence: a bank must learn the sound of the machine running. Untick it ` +
      "and fit again.", r);
  }
  const little = /too little normal audio to set a threshold: give at least ([\d.]+) s[^;]*(?:; (.*))?/.exec(r);
  if (little) {
    return new UserError(`Too little normal sound to set a threshold: give at least ${little[1]} s in one clip, or ` +
      `two clips or more${little[2] ? `; ${little[2]}` : ""}.`, r);
  }
  if (/is neither 'logmel' nor an output of backbone/.test(r)) {
    const m = /layer '([^']*)' is neither 'logmel' nor an output of backbone '([^']*)'/.exec(r);
    return new UserError(`The layers field names ${m ? `'${m[1]}', ` : ""}which is not a layer of the model` +
      `${m ? ` ${m[2]}` : ""}: use logmel or the model's outputs (listed under advanced), members separated by ; ` +
      "and the layers of a member by a comma, or clear the field to use the preset.", r);
  }
  if (/layer '[^']*' is listed twice|layer list is empty|no layer chosen/.test(r)) {
    return new UserError(`The layers field is not a list of layers: ${sentence(r.replace(/^.*embedding: /, ""))} ` +
      "Clear it to use the preset.", r);
  }
  if (/patch/.test(r) && /got 0 values/.test(r)) {
    return new UserError("The ticked clips are too short to learn from: give at least a few seconds of normal sound.", r);
  }
  if (/cancel/i.test(r)) return new UserError("Fitting was cancelled; the bank in use has not changed.");
  return new UserError(`Fitting failed${clip ? ` on ${clip}` : ""}: ${sentence(r)}`, r);
}

/** A model (ONNX + spec) that the check refused. */
export function modelError(onnxName, specName, err) {
  const r = raw(err);
  const pick = "Choose the model's .onnx file and its spec .json together.";
  if (/backbone spec JSON/.test(r)) {
    return new UserError(`${specName} is not a backbone spec that sonomaly can read. ${pick}`, r);
  }
  if (/backbone spec:/.test(r)) {
    return new UserError(`${specName} is not a usable backbone spec: ${sentence(r.replace(/^.*backbone spec: /, ""))} ${pick}`, r);
  }
  if (/ONNX file is empty/.test(r)) return new UserError(`${onnxName} is empty. ${pick}`, r);
  if (/is not in the backbone spec|has no tensor named/.test(r)) {
    return new UserError(`${onnxName} does not fit ${specName}: the spec names outputs the model does not have. ${pick}`, r);
  }
  if (/has shape|announce/.test(r)) {
    return new UserError(`${onnxName} does not fit ${specName}: its outputs do not have the sizes the spec announces. ${pick}`, r);
  }
  if (/not finite/.test(r)) {
    return new UserError(`${onnxName} is damaged: on a test input it gives values that are not numbers.`, r);
  }
  if (/loading the ONNX|could not be read|protobuf|decode|parse/i.test(r)) {
    return new UserError(`${onnxName} is not an ONNX model that sonomaly can run (it could not be read as one). ${pick}`, r);
  }
  return new UserError(`${onnxName} cannot be used as a model: ${sentence(r)}`, r);
}
