//! The page's decoder (wasm-bindgen-test in a dedicated worker of headless Chromium, where the page's worker
//! runs it): every fixture of `tests/fixtures/decode/` read from a `Blob` in slices gives the samples, rate,
//! warnings and score of the native build, and an hour of audio is scored with bounded memory.
//!
//! Run by `./build.sh test` after its native reference step, which writes (natively) the decoded fixtures'
//! fingerprints (`target/web-test/decode-native.json`, by `tests/decode_cases.rs`) and the CLI's score lines
//! for them (`target/web-test/decode-native-scores.jsonl`, with the reference bank `target/web-test/ref.bank`):
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner CHROMEDRIVER=/usr/bin/chromedriver \
//!     cargo test --release --target wasm32-unknown-unknown --target-dir target/wasm --test web_decode
//! ```
#![cfg(target_arch = "wasm32")]

#[path = "common/decode_cases.rs"]
mod decode_cases;

use decode_cases::*;
use js_sys::{Array, Float32Array, Reflect, Uint8Array};
use sonomaly::audio::{ChannelSelect, MonoStream};
use sonomaly::web::{AudioReader, Engine};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

// The default model with the reference bank the CLI scored the fixtures with (build.sh native_reference), and the
// aisfx front end with the previous default bank (log-mel patches: the network does not run) for the hour.
const ONNX: &[u8] = include_bytes!("../models/efficientat-mn04/model.onnx");
const SPEC: &str = include_str!("../models/efficientat-mn04/spec.json");
const REF_BANK: &[u8] = include_bytes!("../target/web-test/ref.bank");
const AISFX_ONNX: &[u8] = include_bytes!("../models/aisfx-cnn14/model.onnx");
const AISFX_SPEC: &str = include_str!("../models/aisfx-cnn14/spec.json");
const V1_BANK: &[u8] = include_bytes!("fixtures/fan-demo-v1.bank");
const NATIVE: &str = include_str!("../target/web-test/decode-native.json");
const NATIVE_SCORES: &str = include_str!("../target/web-test/decode-native-scores.jsonl");

fn blob(parts: &[&[u8]]) -> web_sys::Blob {
    let a = Array::new();
    for p in parts {
        a.push(&Uint8Array::from(*p));
    }
    web_sys::Blob::new_with_u8_array_sequence(&a).expect("a Blob")
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

fn message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_else(|| format!("{e:?}"))
}

fn native_for(file: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> = serde_json::from_str(NATIVE).expect("native reference is JSON");
    all.into_iter().find(|v| v["file"] == file).unwrap_or_else(|| panic!("{file} not in decode-native.json"))
}

#[wasm_bindgen_test]
fn every_fixture_read_from_a_blob_decodes_as_natively() {
    for c in cases().into_iter().filter(|c| c.error.is_none()) {
        let bytes = fixture(&c.file);
        // The page's path: a Blob read in slices, mono at the file's own rate.
        let mut r = AudioReader::from_blob(blob(&[bytes]), &c.file, None)
            .unwrap_or_else(|e| panic!("{}: {}", c.file, message(&e)));
        assert_eq!(r.sample_rate(), c.links[0].rate, "{}", c.file);
        let x = r.read_all(None).unwrap().unwrap().to_vec();
        let info = r.info().unwrap();
        let warnings: Vec<String> = serde_wasm_bindgen::from_value(get(&info, "warnings")).unwrap();
        match &c.warning {
            Some(w) => assert!(warnings.len() == 1 && warnings[0].contains(w.as_str()), "{}: {warnings:?}", c.file),
            None => assert!(warnings.is_empty(), "{}: {warnings:?}", c.file),
        }
        if !c.chained {
            let want = mix(&link_signal(&c.links[0]));
            if c.lossless {
                let frames = c.present_frames.unwrap_or(c.links[0].frames);
                assert_eq!(x, want[..frames], "{}: the samples written", c.file);
            } else {
                let (snr, lag) = snr_db(&x, &want, 64);
                assert!(snr >= 25.0 && lag == 0, "{}: SNR {snr:.1} dB at lag {lag}", c.file);
            }
        }
        // Mono at the model's rate, as natively (bytes in memory this time: the same decoder).
        let mut s = MonoStream::from_bytes(bytes.to_vec(), &c.file, hint(&c.file), ChannelSelect::Mix, 44_100).unwrap();
        let y = s.read_to_end().unwrap();
        let (len, rms, picks) = fingerprint(&y);
        let n = native_for(&c.file);
        assert_eq!(len as u64, n["len"].as_u64().unwrap(), "{}: length at 44.1 kHz", c.file);
        let nrms = n["rms"].as_f64().unwrap();
        assert!((rms - nrms).abs() <= 1e-6 * nrms.max(1e-3), "{}: RMS wasm {rms} native {nrms}", c.file);
        for (k, (a, b)) in picks.iter().zip(n["picks"].as_array().unwrap()).enumerate() {
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() <= 1e-6, "{}: sample {} of 64: wasm {a} native {b}", c.file, k);
        }
        let links: Vec<[u64; 3]> =
            s.links().iter().map(|l| [l.sample_rate as u64, l.channels as u64, l.frames]).collect();
        assert_eq!(serde_json::to_value(&links).unwrap(), n["links"], "{}: links", c.file);
        assert_eq!(s.warnings().len() as u64, n["warnings"].as_u64().unwrap(), "{}", c.file);
    }
}

#[wasm_bindgen_test]
fn refused_files_give_the_native_message_and_opus_is_left_to_the_browser() {
    for c in cases().into_iter().filter(|c| c.error.is_some()) {
        let e = AudioReader::from_blob(blob(&[fixture(&c.file)]), &c.file, None).err().expect("refused");
        let m = message(&e);
        assert!(m.contains(c.error.as_deref().unwrap()) && m.contains(&c.file), "{}: {m}", c.file);
        let name = String::from(e.unchecked_ref::<js_sys::Error>().name());
        assert_eq!(name == "UnsupportedFormat", c.browser_fallback, "{}: error name {name}", c.file);
    }
    // A Blob of nothing.
    let e = AudioReader::from_blob(blob(&[]), "empty.wav", None).err().unwrap();
    assert!(message(&e).contains("empty"), "{}", message(&e));
}

#[wasm_bindgen_test]
fn scores_equal_the_command_line() {
    let mut engine = Engine::new(ONNX, SPEC).expect("model loads");
    engine.load_bank(REF_BANK).expect("reference bank loads");
    let mut n = 0;
    for line in NATIVE_SCORES.lines().filter(|l| !l.trim().is_empty()) {
        let native: serde_json::Value = serde_json::from_str(line).unwrap();
        let path = native["file"].as_str().unwrap();
        let file = path.rsplit('/').next().unwrap();
        let mut r = AudioReader::from_blob(blob(&[fixture(file)]), file, None).unwrap();
        let res = engine.score_reader(&mut r, None).unwrap_or_else(|e| panic!("{file}: {}", message(&e)));
        let score = get(&res, "score").as_f64().unwrap();
        let want = native["score"].as_f64().unwrap();
        assert!((score - want).abs() <= 1e-5 * want.abs().max(1.0), "{file}: wasm {score} native {want}");
        let d = get(&res, "durationS").as_f64().unwrap();
        assert!((d - native["duration_s"].as_f64().unwrap()).abs() < 1e-6, "{file}: duration {d}");
        assert_eq!(get(&res, "streamed"), JsValue::FALSE);
        let segs = Array::from(&get(&res, "segments")).length() as usize;
        assert_eq!(segs, native["segments"].as_array().unwrap().len(), "{file}: segments");
        n += 1;
    }
    assert!(n >= 10, "the native reference scored {n} fixtures");
}

fn vm_bytes() -> f64 {
    let buf: js_sys::ArrayBuffer =
        wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>().buffer().unchecked_into();
    buf.byte_length() as f64
}

/// One hour of 8 kHz mono 16-bit WAV (57.6 MB), built as a Blob of 1 MB parts (noise and a slow ramp), scored as
/// the page scores a file: read in slices, streamed through the scorer. The wasm memory grows by far less than
/// the hour would take decoded at 44.1 kHz (635 MB).
#[wasm_bindgen_test]
fn an_hour_is_scored_as_a_stream_with_bounded_memory() {
    let rate = 8000u32;
    let frames = 3600 * rate as usize;
    let mut header = Vec::new();
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(36 + 2 * frames as u32).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&16u32.to_le_bytes());
    header.extend_from_slice(&[1, 0, 1, 0]);
    header.extend_from_slice(&rate.to_le_bytes());
    header.extend_from_slice(&(2 * rate).to_le_bytes());
    header.extend_from_slice(&[2, 0, 16, 0]);
    header.extend_from_slice(b"data");
    header.extend_from_slice(&(2 * frames as u32).to_le_bytes());
    let parts = Array::new();
    parts.push(&Uint8Array::from(header.as_slice()));
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let per_part = 1 << 19;
    let mut i = 0usize;
    while i < frames {
        let n = per_part.min(frames - i);
        let mut b = Vec::with_capacity(2 * n);
        for k in i..i + n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = ((s >> 52) as i32 - 2048) + ((k / 1000) % 2000) as i32;
            b.extend_from_slice(&(v as i16).to_le_bytes());
        }
        parts.push(&Uint8Array::from(b.as_slice()));
        i += n;
    }
    let hour = web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap();
    let mut engine = Engine::new(AISFX_ONNX, AISFX_SPEC).expect("model loads");
    engine.load_bank(V1_BANK).expect("the previous default bank loads");
    let before = vm_bytes();
    let mut r = AudioReader::from_blob(hour, "hour.wav", None).unwrap();
    let calls = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let c2 = calls.clone();
    let cb =
        wasm_bindgen::closure::Closure::<dyn FnMut(f64, f64)>::new(move |_done: f64, _total: f64| c2.set(c2.get() + 1));
    let res = engine.score_reader(&mut r, Some(cb.as_ref().unchecked_ref::<js_sys::Function>().clone())).unwrap();
    let after = vm_bytes();
    let growth_mb = (after - before) / 1e6;
    let frames_out = get(&res, "frames").as_f64().unwrap() as usize;
    let curve = Float32Array::from(get(&res, "curve")).length() as usize;
    let dur = get(&res, "durationS").as_f64().unwrap();
    let score = get(&res, "score").as_f64().unwrap();
    wasm_bindgen_test::console_log!(
        "1 h streamed: score {score:.4}, {frames_out} display frames (x{}), wasm memory {:.0} MB -> {:.0} MB (+{growth_mb:.0} MB), {} progress calls",
        get(&res, "decimation").as_f64().unwrap(),
        before / 1e6,
        after / 1e6,
        calls.get()
    );
    assert_eq!(get(&res, "streamed"), JsValue::TRUE);
    assert!((dur - 3600.0).abs() < 0.01, "duration {dur}");
    assert!(score.is_finite() && score > 0.0);
    assert!(frames_out <= sonomaly::web::MAX_OVERVIEW_FRAMES && frames_out > sonomaly::web::MAX_OVERVIEW_FRAMES / 4);
    assert_eq!(curve, frames_out);
    assert!(get(&res, "samples").is_undefined(), "a streamed file keeps no samples");
    assert!(calls.get() > 100);
    assert!(growth_mb < 64.0, "wasm memory grew by {growth_mb:.0} MB");
}
