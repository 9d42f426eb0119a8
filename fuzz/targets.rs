//! The bodies of the fuzz targets, one function per target: each takes the fuzzer's bytes and feeds them to one
//! parser of outside input through the public API. A target passes an input when the call returns (an `Ok` or an
//! `Err` with a message); a panic, an abort, an allocation over the limit or a hang is a finding.
//!
//! Included by the fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly Rust, libFuzzer) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus and every reproducer on stable Rust.

#![allow(dead_code)]

use sonomaly::audio::{decode, ChannelSelect, MonoStream, StreamResampler};
use sonomaly::backbone::{Backbone, BackboneSpec};
use sonomaly::bank::Bank;

/// A tiny backbone (`fuzz/tiny/tiny.onnx`: conv, batch norm, ReLU twice, 2x2 max pooling, 2 channels, written by
/// `fuzz/tiny/make_tiny_onnx.py`) and its spec, for the spec and ONNX targets.
pub const TINY_ONNX: &[u8] = include_bytes!("tiny/tiny.onnx");
pub const TINY_SPEC: &str = include_str!("tiny/tiny.json");

/// Bank files: parsing, then what the page and the CLI do with a bank they loaded (describe it, write it back).
pub fn bank(data: &[u8]) {
    if let Ok(b) = Bank::from_bytes(data) {
        let _ = b.info();
        let bytes = b.to_bytes().expect("a loaded bank can be written back");
        Bank::from_bytes(&bytes).expect("a bank written back loads again");
    }
}

/// One file through the decoder, planar and as the mono stream at 16 kHz (the resampler, every link).
fn audio(data: &[u8], hint: &str) {
    let _ = decode(data, Some(hint));
    for select in [ChannelSelect::Mix, ChannelSelect::Channel(1)] {
        if let Ok(mut s) = MonoStream::from_bytes(data.to_vec(), "fuzz", Some(hint), select, 16_000) {
            while let Ok(Some(_)) = s.next_chunk() {}
            let _ = s.warnings();
        }
    }
}

pub fn wav(data: &[u8]) {
    audio(data, "wav")
}

pub fn flac(data: &[u8]) {
    audio(data, "flac")
}

pub fn ogg(data: &[u8]) {
    audio(data, "ogg")
}

pub fn mp3(data: &[u8]) {
    audio(data, "mp3")
}

/// Common sample rates, picked by the first byte of a rate field most of the time.
const RATES: [u32; 12] =
    [8000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000, 192_000, 768_000];

fn rate(b: &[u8]) -> u32 {
    match b[0] % 4 {
        // Any rate, the highest accepted and a little beyond (refused).
        0 => (u32::from_le_bytes([b[1], b[2], b[3], 0]) % 800_000).max(1),
        _ => RATES[b[1] as usize % RATES.len()],
    }
}

/// The resampler: two rates, then samples (as f32, including NaN and infinities) pushed in pieces whose sizes come
/// from the data; the output length must be `round(n * to / from)` and equal the one-shot resampler's.
pub fn resample(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let (from, to) = (rate(&data[..4]), rate(&data[4..8]));
    let piece = data[8] as usize * 17 + 1;
    let samples: Vec<f32> = data[9..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let Ok(mut r) = StreamResampler::new(from, to) else { return };
    let mut out = Vec::new();
    for p in samples.chunks(piece) {
        if r.push(p, &mut out).is_err() {
            // Refused: only for samples that are not audio, and only when resampling.
            assert!(from != to && p.iter().any(|v| v.is_nan() || v.abs() > sonomaly::audio::MAX_RESAMPLE_ABS));
            assert!(sonomaly::audio::resample(&samples, from, to).is_err());
            return;
        }
    }
    r.finish(&mut out).expect("finish");
    let want = ((samples.len() as u128 * to as u128 + from as u128 / 2) / from as u128) as usize;
    assert_eq!(out.len(), want, "{} samples {from} -> {to} Hz", samples.len());
    let whole = sonomaly::audio::resample(&samples, from, to).expect("the same rates");
    assert_eq!(whole.len(), out.len());
    assert!(whole.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
    assert!(from == to || out.iter().all(|v| v.is_finite()), "finite input, finite output");
}

/// The backbone spec JSON: parsed, and used to load the tiny backbone with the outputs it names (as loading a
/// model from the page or with `--model` does).
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = BackboneSpec::from_json(text) else { return };
    let _ = spec.front_end_config();
    let outputs: Vec<String> = spec.outputs.iter().take(2).map(|o| o.name.clone()).collect();
    let _ = Backbone::from_bytes(TINY_ONNX, spec, &outputs);
}

/// The ONNX loading path: the bytes as a backbone with the tiny spec (graph import, the direct CNN14 path's
/// planner, tract's optimiser, the check run on zeros).
pub fn onnx(data: &[u8]) {
    let spec = BackboneSpec::from_json(TINY_SPEC).expect("the tiny spec parses");
    let _ = Backbone::from_bytes(data, spec, &["conv_block1".to_string()]);
}

/// A scratch file for the readers that take a path, one per process.
fn scratch(ext: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let p = dir.join(format!("sonomaly-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&p, data).expect("scratch file written");
    p
}

/// The `eval` test-set CSV (`path,label[,onset_s,offset_s,snr_db,mask]`).
pub fn eval_csv(data: &[u8]) {
    let p = scratch("csv", data);
    let _ = sonomaly::eval::read_test_csv(&p);
}

/// The spectrogram-level ground-truth masks (binary PGM) that `eval` reads.
pub fn mask_pgm(data: &[u8]) {
    let p = scratch("pgm", data);
    if let Ok((mask, rows, cols)) = sonomaly::mix::read_mask_pgm(&p) {
        // Checked, so that the replay on stable release builds (no overflow checks) catches a wrapped size too.
        assert_eq!(Some(mask.len()), rows.checked_mul(cols), "{rows} x {cols} mask of {} values", mask.len());
    }
}

/// A fuzz target: one input, any bytes.
pub type Target = fn(&[u8]);

/// Every target, by name (for the corpus replay).
pub const TARGETS: &[(&str, Target)] = &[
    ("bank", bank),
    ("wav", wav),
    ("flac", flac),
    ("ogg", ogg),
    ("mp3", mp3),
    ("resample", resample),
    ("spec", spec),
    ("onnx", onnx),
    ("eval_csv", eval_csv),
    ("mask_pgm", mask_pgm),
];
