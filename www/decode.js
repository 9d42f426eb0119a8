// Reading audio files in the page: the core's decoder (the same code as the command line: symphonia compiled into
// the wasm) runs in the worker and reads the File in slices, never whole. The browser's decodeAudioData is only
// the fallback for formats the core does not read (AAC/M4A, Opus, WebM: what browsers record in), and the page
// says so.

import { decodeToMono } from "./audio.js";

// Files longer than this are streamed through the scorer in the worker (no samples kept, no playback), as
// `sonomaly score` does; the same limit as src/pipeline/recording.rs LONG_RECORDING_S.
export const LONG_FILE_S = 600;

// Reads `file` (a File or Blob with a name). Returns {samples (Float32Array, mono, or null for a long file),
// sampleRate, channels, duration, warnings: [string], links, decodedBy: "sonomaly" | "browser", notice, file}.
// `call` is the page's worker call; `channel` a 0-based channel, or -1 / undefined to mix.
export async function openAudio(call, file, { channel, onProgress } = {}) {
  const r = await call("decodeFile", { file, channel, maxSeconds: LONG_FILE_S }, [], onProgress);
  if (!r.fallback) return { ...r, notice: describe(file, r), file };
  let audio;
  try {
    audio = await decodeToMono(await file.arrayBuffer(), file.name, channel == null || channel < 0 ? "mix" : channel);
  } catch (e) {
    // Neither decoder reads it: the core's reason says more than the browser's.
    throw new Error(`${r.reason.replace(/\.?\s*$/, ".")} The browser could not decode it either.`);
  }
  // The core's reason without its prefixes and its list of formats: "the audio codec is not supported (Opus, ...)".
  const why = r.reason.replace(/^audio: /, "").replace(`${file.name}: `, "").replace(/; supported:.*$/s, "");
  const notice = `${file.name}: decoded by the browser, not by sonomaly's decoder: ${why}. The whole file is held in memory, and the command line cannot read it (convert it to WAV or FLAC for that).`;
  return { ...audio, warnings: [], links: null, decodedBy: "browser", notice, file };
}

// One line for the status: chained streams and the decoder's warnings.
export function describe(file, r) {
  const parts = [];
  if (r.links && r.links.length > 1) {
    const ls = r.links.map((l) => `${l.sampleRate} Hz, ${l.channels} ch`).join("; ");
    parts.push(`${file.name} holds ${r.links.length} chained streams (${ls}), all read`);
  }
  for (const w of r.warnings || []) parts.push(`Warning: ${w}`);
  return parts.join(". ");
}
