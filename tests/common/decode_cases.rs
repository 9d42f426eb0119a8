//! The decoding fixtures of `tests/fixtures/decode/` (written by `tests/reference/decode_fixtures.py`) and the
//! signal each one holds, shared by the native test (`tests/decode_cases.rs`) and the wasm test
//! (`tests/web_decode.rs`), so that both faces are held to the same expectations.

#![allow(dead_code)]

use serde::Deserialize;

/// `cases.json`.
#[derive(Deserialize)]
pub struct Cases {
    pub cases: Vec<Case>,
}

/// One fixture file and what decoding it must give.
#[derive(Deserialize, Clone)]
pub struct Case {
    pub file: String,
    pub bytes: usize,
    pub links: Vec<LinkSpec>,
    /// WAV, FLAC, OGG/Vorbis, MP3, OGG/Opus.
    pub format: String,
    /// Decodes to exactly the generator's 16-bit samples.
    #[serde(default)]
    pub lossless: bool,
    /// Several links (chained Ogg streams).
    #[serde(default)]
    pub chained: bool,
    /// Frames actually present (a truncated file), if fewer than the header says.
    pub present_frames: Option<usize>,
    /// Words a warning must contain (no warning at all when absent).
    pub warning: Option<String>,
    /// Words the error must contain: the file is refused.
    pub error: Option<String>,
    /// Refused because the format is not one sonomaly decodes: the page hands it to the browser.
    #[serde(default)]
    pub browser_fallback: bool,
}

#[derive(Deserialize, Clone)]
pub struct LinkSpec {
    pub rate: u32,
    pub frames: usize,
    pub channels: Vec<ChannelSpec>,
}

#[derive(Deserialize, Clone)]
pub struct ChannelSpec {
    pub freq: f64,
    pub seed: u64,
    pub amp: f64,
    pub noise: f64,
}

pub const CASES_JSON: &str = include_str!("../fixtures/decode/cases.json");

pub fn cases() -> Vec<Case> {
    serde_json::from_str::<Cases>(CASES_JSON).expect("cases.json parses").cases
}

pub fn case(file: &str) -> Case {
    cases().into_iter().find(|c| c.file == file).unwrap_or_else(|| panic!("no case {file} in cases.json"))
}

/// The bytes of a fixture (compiled in, so the wasm test has them too).
pub fn fixture(file: &str) -> &'static [u8] {
    match file {
        "tone.wav" => include_bytes!("../fixtures/decode/tone.wav"),
        "tone.flac" => include_bytes!("../fixtures/decode/tone.flac"),
        "tone.ogg" => include_bytes!("../fixtures/decode/tone.ogg"),
        "tone.mp3" => include_bytes!("../fixtures/decode/tone.mp3"),
        "chained.ogg" => include_bytes!("../fixtures/decode/chained.ogg"),
        "riff-size-short.wav" => include_bytes!("../fixtures/decode/riff-size-short.wav"),
        "flac-min-block-0.flac" => include_bytes!("../fixtures/decode/flac-min-block-0.flac"),
        "id3-flac.flac" => include_bytes!("../fixtures/decode/id3-flac.flac"),
        "truncated.wav" => include_bytes!("../fixtures/decode/truncated.wav"),
        "odd-chunk-no-pad.wav" => include_bytes!("../fixtures/decode/odd-chunk-no-pad.wav"),
        "odd-chunk-damaged.wav" => include_bytes!("../fixtures/decode/odd-chunk-damaged.wav"),
        "opus.ogg" => include_bytes!("../fixtures/decode/opus.ogg"),
        other => panic!("fixture {other} is not compiled in: add it to tests/common/decode_cases.rs"),
    }
}

/// The extension of a fixture's name, as a hint.
pub fn hint(file: &str) -> Option<&str> {
    file.rsplit_once('.').map(|(_, e)| e)
}

/// The generator's 16-bit samples of one channel, as `f32` (x / 32768), exactly as the script computes them.
pub fn channel(n: usize, rate: u32, c: &ChannelSpec) -> Vec<f32> {
    let mut s = c.seed;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let v = c.amp * (2.0 * std::f64::consts::PI * c.freq * i as f64 / rate as f64).sin()
                + c.noise * (2.0 * u - 1.0);
            let x = (v * 32767.0 + 0.5).floor().clamp(-32768.0, 32767.0);
            (x / 32768.0) as f32
        })
        .collect()
}

/// `[channels][samples]` of a link.
pub fn link_signal(l: &LinkSpec) -> Vec<Vec<f32>> {
    l.channels.iter().map(|c| channel(l.frames, l.rate, c)).collect()
}

/// Mean of the channels.
pub fn mix(planar: &[Vec<f32>]) -> Vec<f32> {
    let n = planar[0].len();
    (0..n).map(|i| planar.iter().map(|c| c[i]).sum::<f32>() / planar.len() as f32).collect()
}

/// Signal-to-noise ratio of `got` against `want`, dB, at the best lag of `got` in `0..=max_lag` samples (lossy
/// decoders may add an encoder delay), over the overlap.
pub fn snr_db(got: &[f32], want: &[f32], max_lag: usize) -> (f64, usize) {
    let mut best = (f64::NEG_INFINITY, 0);
    for lag in 0..=max_lag.min(got.len()) {
        let n = want.len().min(got.len() - lag);
        if n < want.len() / 2 {
            break;
        }
        let (mut e, mut p) = (0.0f64, 0.0f64);
        for i in 0..n {
            let d = got[i + lag] as f64 - want[i] as f64;
            e += d * d;
            p += want[i] as f64 * want[i] as f64;
        }
        let snr = 10.0 * (p / e.max(1e-30)).log10();
        if snr > best.0 {
            best = (snr, lag);
        }
    }
    best
}

/// A short summary of a signal to compare faces: its length, RMS, and 64 samples spread evenly.
pub fn fingerprint(x: &[f32]) -> (usize, f64, Vec<f32>) {
    let rms = (x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let picks = (0..64).map(|k| x.get(k * x.len() / 64).copied().unwrap_or(0.0)).collect();
    (x.len(), rms, picks)
}
