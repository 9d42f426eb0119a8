//! Browser tests of the wasm build (wasm-bindgen-test in headless Chromium).
//!
//! Run by `./build.sh test`, which first scores the demo clip natively with the CLI (a bank fitted natively on
//! the demo normal clip, `target/web-test/ref.bank`; its score line in `target/web-test/native-ref.json`), then:
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner CHROMEDRIVER=/usr/bin/chromedriver \
//!     cargo test --release --target wasm32-unknown-unknown --target-dir target/wasm --test web
//! ```
#![cfg(target_arch = "wasm32")]

use sonomaly::audio::{decode, to_mono, ChannelSelect};
use sonomaly::bank::Bank;
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, Model, StreamScorer};
use sonomaly::web::{check_model, BackboneRunner, Engine};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

// The aisfx CNN14 (its direct Winograd path runs in wasm) and the default EfficientAT mn04 (runs on tract).
const ONNX: &[u8] = include_bytes!("../models/aisfx-cnn14/model.onnx");
const SPEC: &str = include_str!("../models/aisfx-cnn14/spec.json");
const MN04_ONNX: &[u8] = include_bytes!("../models/efficientat-mn04/model.onnx");
const MN04_SPEC: &str = include_str!("../models/efficientat-mn04/spec.json");
const ABNORMAL_WAV: &[u8] = include_bytes!("../www/demo/fan-abnormal.wav");
const NORMAL_WAV: &[u8] = include_bytes!("../www/demo/fan-normal.wav");
const REF_BANK: &[u8] = include_bytes!("../target/web-test/ref.bank");
const NATIVE_REF: &str = include_str!("../target/web-test/native-ref.json");
const REF_CNN_BANK: &[u8] = include_bytes!("../target/web-test/ref-cnn.bank");
const NATIVE_REF_CNN: &str = include_str!("../target/web-test/native-ref-cnn.json");
const REF_CFA_BANK: &[u8] = include_bytes!("../target/web-test/ref-cfa.bank");
const NATIVE_REF_CFA: &str = include_str!("../target/web-test/native-ref-cfa.json");

fn mono(wav: &[u8]) -> (Vec<f32>, u32) {
    let a = decode(wav, Some("wav")).expect("demo clip decodes");
    (to_mono(&a, ChannelSelect::Mix).expect("mono"), a.sample_rate)
}

/// The demo normal clip turned round by half its length: the second clip of the reference fit (a fit needs 15 s
/// with 10 s windows; `native_reference` in build.sh writes the same clip for the native side).
fn rotated(x: &[f32]) -> Vec<f32> {
    x[x.len() / 2..].iter().chain(&x[..x.len() / 2]).copied().collect()
}

fn model_for(bank: &Bank) -> Model {
    let (onnx, spec) =
        if bank.meta.backbone.name == "efficientat-mn04" { (MN04_ONNX, MN04_SPEC) } else { (ONNX, SPEC) };
    let mut m = Model::from_bytes(onnx, spec).expect("model loads");
    m.prepare_for(bank).expect("the reference bank fits the model");
    m
}

fn native() -> serde_json::Value {
    parse_ref(NATIVE_REF)
}

fn parse_ref(text: &str) -> serde_json::Value {
    serde_json::from_str(text.lines().next().expect("one score line")).expect("native reference is JSON")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[wasm_bindgen_test]
fn wasm_scores_the_demo_clip_as_the_native_build() {
    same_as_native(REF_BANK, &native(), false);
}

#[wasm_bindgen_test]
fn wasm_runs_the_cnn_backbone_as_the_native_build() {
    same_as_native(REF_CNN_BANK, &parse_ref(NATIVE_REF_CNN), false);
}

/// A CFA bank fitted natively (its trained descriptor and centroids) scores in wasm as natively: the clip score
/// within 1e-5 relative, the map within 1e-4 relative (of each value, at least 1: its z-scores reach 20, and the
/// distances to the centroids are sums of products that simd128 and AVX2 round differently).
#[wasm_bindgen_test]
fn wasm_scores_a_cfa_bank_as_the_native_build() {
    let bank = Bank::from_bytes(REF_CFA_BANK).expect("reference CFA bank loads");
    assert_eq!(bank.detectors[0].kind(), "cfa");
    same_as_native(REF_CFA_BANK, &parse_ref(NATIVE_REF_CFA), true);
}

/// The demo anomalous clip scored in wasm with `bank_bytes` against the native score line `n`; the map within 1e-4,
/// absolute or (`relative_map`) relative to each value's magnitude (at least 1).
fn same_as_native(bank_bytes: &[u8], n: &serde_json::Value, relative_map: bool) {
    let bank = Bank::from_bytes(bank_bytes).expect("reference bank loads");
    let model = model_for(&bank);
    let (x, sr) = mono(ABNORMAL_WAV);
    let r = score_clip(&model, &bank, &x, sr).expect("scores");
    let score = n["score"].as_f64().unwrap();
    assert!(rel(r.score as f64, score) <= 1e-5, "clip score: wasm {} native {score}", r.score);
    assert!(rel(r.threshold as f64, n["threshold"].as_f64().unwrap()) <= 1e-6);
    assert_eq!(r.is_anomaly, n["is_anomaly"].as_bool().unwrap());
    // The map itself, when the native reference carries it.
    if let Some(map) = n.get("map").and_then(|m| m.as_array()) {
        assert_eq!(map.len(), r.map.len(), "map size");
        let scale = |a: f64| if relative_map { a.abs().max(1.0) } else { 1.0 };
        let worst = map
            .iter()
            .zip(&r.map)
            .map(|(a, b)| (a.as_f64().unwrap() - *b as f64).abs() / scale(a.as_f64().unwrap()))
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "anomaly map max diff {worst} (relative: {relative_map})");
    }
    let segs = n["segments"].as_array().unwrap();
    assert_eq!(segs.len(), r.segments.len(), "segments: wasm {:?} native {segs:?}", r.segments);
    for (a, b) in r.segments.iter().zip(segs) {
        assert!((a.start_s - b["start_s"].as_f64().unwrap()).abs() < 1e-9);
        assert!((a.end_s - b["end_s"].as_f64().unwrap()).abs() < 1e-9);
    }
    assert_eq!(r.frames * r.mel_bins, r.map.len());
    assert!(r.map.iter().all(|v| v.is_finite()));
}

#[wasm_bindgen_test]
fn the_engine_scores_through_the_javascript_surface() {
    let mut e = Engine::new(MN04_ONNX, MN04_SPEC).expect("engine");
    assert!(!e.has_bank());
    e.load_bank(REF_BANK).expect("bank loads");
    let (x, sr) = mono(ABNORMAL_WAV);
    let r = e.score_clip(&x, sr).expect("scores");
    let get = |k: &str| js_sys::Reflect::get(&r, &JsValue::from_str(k)).unwrap();
    let score = get("score").as_f64().unwrap();
    assert!(rel(score, native()["score"].as_f64().unwrap()) <= 1e-5);
    let frames = get("frames").as_f64().unwrap() as u32;
    let mel_bins = get("melBins").as_f64().unwrap() as u32;
    let map: js_sys::Float32Array = get("map").into();
    assert_eq!(map.length(), frames * mel_bins);
    let curve: js_sys::Float32Array = get("curve").into();
    assert_eq!(curve.length(), frames);
    // Every field of the core's result, in camelCase: the band judged (16 kHz audio: up to 8 kHz), the verdict.
    assert_eq!(get("bandLimitHz").as_f64(), Some(8000.0));
    assert_eq!(get("isAnomaly").as_bool(), native()["is_anomaly"].as_bool());
    assert!(get("segmentThreshold").as_f64().is_some());
    let segments: js_sys::Array = get("segments").into();
    for s in segments.iter() {
        let start = js_sys::Reflect::get(&s, &JsValue::from_str("startS")).unwrap().as_f64().unwrap();
        let end = js_sys::Reflect::get(&s, &JsValue::from_str("endS")).unwrap().as_f64().unwrap();
        assert!(start < end && end <= get("durationS").as_f64().unwrap());
    }
}

fn js_message(e: wasm_bindgen::JsError) -> String {
    let v: JsValue = e.into();
    js_sys::Error::from(v).message().into()
}

/// The calls of the page's pooled fit refuse bad input in words and keep the fit usable: analysing or adding before
/// a fit is started, bytes that are not an analysed clip (junk, half a clip), a clip analysed for other members;
/// a good clip is then still taken.
#[wasm_bindgen_test]
fn the_pooled_fit_refuses_bad_input_in_words() {
    let mut e = Engine::new(MN04_ONNX, MN04_SPEC).expect("engine");
    let (x, sr) = mono(NORMAL_WAV);
    let x = &x[..4 * sr as usize];
    assert!(js_message(e.fit_analyse(x, sr).unwrap_err()).contains("no fit was started"));
    assert!(js_message(e.fit_add_analysed(b"junk").unwrap_err()).contains("no fit was started"));
    e.fit_start(Some("both".into()), None, None).expect("fit starts");
    let both = e.fit_analyse(x, sr).expect("analyses").to_vec();
    e.fit_start(Some("machine".into()), None, None).expect("fit starts");
    let machine = e.fit_analyse(x, sr).expect("analyses").to_vec();
    for junk in [&b"junk"[..], &machine[..machine.len() / 2], &[]] {
        let m = js_message(e.fit_add_analysed(junk).unwrap_err());
        assert!(m.contains("not a clip analysed by this version"), "{m}");
    }
    let m = js_message(e.fit_add_analysed(&both).unwrap_err());
    assert!(m.contains("other members"), "{m}");
    e.fit_add_analysed(&machine).expect("a good clip is taken after the refusals");
}

#[wasm_bindgen_test]
fn check_model_accepts_the_model_and_refuses_junk_and_wrong_specs() {
    let r = check_model(ONNX, SPEC).expect("the default model passes its own check");
    let outputs: js_sys::Array = js_sys::Reflect::get(&r, &JsValue::from_str("outputs")).unwrap().into();
    let sizes: Vec<(f64, f64, f64)> = outputs
        .iter()
        .map(|o| {
            let g = |k: &str| js_sys::Reflect::get(&o, &JsValue::from_str(k)).unwrap().as_f64().unwrap();
            (g("channels"), g("time"), g("freq"))
        })
        .collect();
    // 100 frames x 96 mel bins through strides 2, 4, 8, 8.
    assert_eq!(sizes, vec![(64.0, 50.0, 48.0), (128.0, 25.0, 24.0), (256.0, 12.0, 12.0), (512.0, 12.0, 12.0)]);
    // An 18-byte text file, half a model, nothing.
    for junk in [&b"this is not a mod\n"[..], &ONNX[..ONNX.len() / 2], &b""[..]] {
        let e = js_message(check_model(junk, SPEC).expect_err("junk refused"));
        assert!(e.starts_with("model: "), "{e}");
    }
    // A spec that announces other channels or strides than the model has.
    let channels = SPEC.replacen("\"channels\": 64", "\"channels\": 65", 1);
    let e = js_message(check_model(ONNX, &channels).expect_err("wrong channels refused"));
    assert!(e.contains("conv_block1") && e.contains("65"), "{e}");
    let strides = SPEC.replacen("\"time_stride\": 2", "\"time_stride\": 4", 1);
    let e = js_message(check_model(ONNX, &strides).expect_err("wrong strides refused"));
    assert!(e.contains("conv_block1") && e.contains("strides"), "{e}");
    // The second model (layout ncft, 17 outputs) passes as it is.
    check_model(MN04_ONNX, MN04_SPEC).expect("EfficientAT mn04 passes its own check");
    let unknown = SPEC.replacen("\"conv_block4\"", "\"conv_block9\"", 1);
    assert!(check_model(ONNX, &unknown).is_err());
    assert!(check_model(ONNX, "{ not json").is_err());
}

#[wasm_bindgen_test]
fn bank_round_trips_through_bytes() {
    let bank = Bank::from_bytes(REF_BANK).expect("loads");
    let bytes = bank.to_bytes().expect("saves");
    let again = Bank::from_bytes(&bytes).expect("loads again");
    assert_eq!(again.meta.threshold, bank.meta.threshold);
    assert_eq!(again.detectors, bank.detectors);
    assert_eq!(again, bank, "bit-identical round trip");
    assert_eq!(again.to_bytes().expect("saves again"), bytes);
    // Through the engine: the bytes it hands out load back.
    let mut e = Engine::new(MN04_ONNX, MN04_SPEC).expect("engine");
    e.load_bank(REF_BANK).expect("bank");
    let out = e.bank_bytes().expect("bytes").to_vec();
    let b3 = Bank::from_bytes(&out).expect("engine bytes load");
    assert_eq!(b3.detectors, bank.detectors);
}

#[wasm_bindgen_test]
fn streaming_matches_the_whole_clip_score() {
    // The default bank (10 s windows: one window for the 10 s clip) and the CNN bank (windows of 100 frames,
    // updates while the audio arrives).
    for (bytes, min_updates) in [(REF_BANK, 1), (REF_CNN_BANK, 2)] {
        let bank = Bank::from_bytes(bytes).expect("loads");
        let model = model_for(&bank);
        let (x, sr) = mono(ABNORMAL_WAV);
        let whole = score_clip(&model, &bank, &x, sr).expect("scores");
        let mut s = StreamScorer::new(&model, &bank, sr).expect("stream");
        let mut updates = Vec::new();
        for chunk in x.chunks(4096) {
            updates.extend(s.push(&model, &bank, chunk).expect("push"));
        }
        updates.extend(s.finish(&model, &bank).expect("finish"));
        let frames: usize = updates.iter().map(|u| u.frames).sum();
        assert!(updates.len() >= min_updates, "{} updates", updates.len());
        assert!((frames as i64 - whole.frames as i64).abs() <= 2, "stream frames {frames}, clip {}", whole.frames);
        let last = updates.last().unwrap().score;
        let tol = 1e-2 * whole.score.abs().max(1.0) as f64;
        assert!((last as f64 - whole.score as f64).abs() <= tol, "stream score {last}, clip {}", whole.score);
    }
}

#[wasm_bindgen_test]
fn fitting_in_wasm_gives_a_usable_bank() {
    // The default fit (preset both, mn04) on the same two clips as the native reference bank.
    let mut model = Model::from_bytes(MN04_ONNX, MN04_SPEC).expect("model");
    let config = FitConfig::default_for(model.spec()).expect("default preset");
    model.set_embeddings(config.embeddings()).expect("members");
    let (x, sr) = mono(NORMAL_WAV);
    let mut f = Fitter::new(&model, config).unwrap();
    f.add_clip(&model, &x, sr).expect("adds");
    f.add_clip(&model, &rotated(&x), sr).expect("adds");
    let bank = f.finish(&model, &mut |_| true).expect("fits");
    assert!(bank.meta.threshold.is_finite());
    let native = Bank::from_bytes(REF_BANK).expect("native bank");
    // Same clip, same seed: the native and wasm fits agree on the calibration (the held-out normal scores and the
    // normalisation they give) and on the thresholds.
    assert_eq!(bank.meta.threshold, native.meta.threshold);
    assert_eq!(bank.meta.segment_threshold, native.meta.segment_threshold);
    assert_eq!(bank.meta.members.len(), native.meta.members.len());
    for (w, n) in bank.meta.members.iter().zip(&native.meta.members) {
        assert_eq!(w.state_rows, n.state_rows);
        for (a, b) in [(w.score_norm.loc, n.score_norm.loc), (w.score_norm.scale, n.score_norm.scale)] {
            assert!(rel(a as f64, b as f64) <= 1e-3, "normalisation: wasm {a} native {b}");
        }
    }
    for (a, b) in bank.meta.fused_scores.iter().zip(&native.meta.fused_scores) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "held-out score: wasm {a} native {b}");
    }
}

#[wasm_bindgen_test]
fn bad_inputs_give_errors_not_panics() {
    // A model that is not ONNX is refused when it is loaded, or at the latest when a bank is matched to it
    // (an embedding made of log-mel patches alone never runs the network, so the core may not parse it).
    match Engine::new(b"not an onnx model", MN04_SPEC) {
        Err(_) => {}
        Ok(mut e) => assert!(e.load_bank(REF_BANK).is_err(), "a bank was accepted for a model that is not ONNX"),
    }
    assert!(Engine::new(MN04_ONNX, "{ not json").is_err());
    let mut e = Engine::new(MN04_ONNX, MN04_SPEC).expect("engine");
    // No bank yet.
    assert!(e.score_clip(&[0.0; 1000], 16000).is_err());
    assert!(e.stream_start(48000).is_err());
    assert!(e.bank_bytes().is_err());
    // Garbage and truncated banks.
    assert!(e.load_bank(b"").is_err());
    assert!(e.load_bank(b"definitely not a bank").is_err());
    assert!(e.load_bank(&REF_BANK[..REF_BANK.len() / 2]).is_err());
    assert!(!e.has_bank());
    e.load_bank(REF_BANK).expect("bank");
    // Empty, non-finite, zero-rate audio.
    assert!(e.score_clip(&[], 16000).is_err());
    assert!(e.score_clip(&[0.0, f32::NAN, 0.0], 16000).is_err());
    assert!(e.score_clip(&[0.0; 1000], 0).is_err());
    assert!(e.stream_start(0).is_err());
    assert!(e.stream_push(&[0.0; 10]).is_err(), "push before start");
    e.stream_start(48000).expect("stream");
    assert!(e.stream_push(&[f32::INFINITY; 10]).is_err());
    // Fitting with nothing, or with an unknown preset or layer.
    e.fit_start(None, None, None).expect("fit starts");
    assert!(e.fit_finish(None).is_err());
    assert!(e.fit_start(Some("kitchen".into()), None, None).is_err());
    assert!(e.fit_start(None, Some("logmel;conv_block9".into()), None).is_err());
    assert!(e.fit_start(None, None, Some("isolation-forest".into())).is_err(), "an unknown detector is refused");
    // A threshold that is not a number.
    assert!(e.thresholds_for(f32::NAN).is_err());
    // Still works afterwards.
    let (x, sr) = mono(NORMAL_WAV);
    assert!(e.score_clip(&x, sr).is_ok());
}

#[wasm_bindgen_test]
fn the_backbone_runner_refuses_bad_input_and_batches_like_single_runs() {
    let outputs = "conv_block2,conv_block3";
    // Empty, corrupt and truncated models, a bad spec, unknown outputs or runtime, zero frames.
    assert!(BackboneRunner::new(b"", SPEC, outputs, 100, None).is_err());
    assert!(BackboneRunner::new(b"not an onnx model", SPEC, outputs, 100, None).is_err());
    assert!(BackboneRunner::new(&ONNX[..ONNX.len() / 2], SPEC, outputs, 100, None).is_err());
    assert!(BackboneRunner::new(ONNX, "{ not json", outputs, 100, None).is_err());
    assert!(BackboneRunner::new(ONNX, SPEC, "conv_block9", 100, None).is_err());
    assert!(BackboneRunner::new(ONNX, SPEC, "", 100, None).is_err());
    assert!(BackboneRunner::new(ONNX, SPEC, outputs, 0, None).is_err());
    assert!(BackboneRunner::new(ONNX, SPEC, outputs, 100, Some("onnxruntime".into())).is_err());
    let r = BackboneRunner::new(ONNX, SPEC, outputs, 100, None).expect("runner");
    assert_eq!(r.runtime(), "cnn14-winograd");
    // Wrong lengths, empty batches and a ragged batch are errors.
    assert!(r.run(&[0.0; 7]).is_err());
    assert!(r.run(&[]).is_err());
    assert!(r.run_batch(&[]).is_err());
    assert!(r.run_batch(&vec![0.0; 100 * 96 + 1]).is_err());
    // A batch of two windows equals the two windows run alone.
    let a: Vec<f32> = (0..100 * 96).map(|i| ((i * 37) % 101) as f32 / 50.0).collect();
    let b: Vec<f32> = a.iter().rev().copied().collect();
    let both: Vec<f32> = a.iter().chain(&b).copied().collect();
    let batch = r.run_batch(&both).expect("batch").to_vec();
    let single: Vec<f32> = [r.run(&a).expect("a").to_vec(), r.run(&b).expect("b").to_vec()].concat();
    assert_eq!(batch, single);
}

#[wasm_bindgen_test]
fn a_bank_for_another_front_end_is_refused_with_a_message() {
    let bank = Bank::from_bytes(REF_BANK).expect("loads");
    let mut other = bank.clone();
    other.meta.front_end.n_mels += 1;
    let mut e = Engine::new(MN04_ONNX, MN04_SPEC).expect("engine");
    let bytes = other.to_bytes().expect("saves");
    let err: JsValue = e.load_bank(&bytes).expect_err("refused").into();
    let msg: String = js_sys::Error::from(err).message().into();
    assert!(msg.contains("front end"), "message: {msg}");
    let mut other2 = bank.clone();
    other2.meta.backbone.sha256 = "0".repeat(64);
    assert!(e.load_bank(&other2.to_bytes().unwrap()).is_err());
    assert!(!e.has_bank());
}

/// Uniform values in [-1, 1) from a fixed linear congruential sequence (no rand crate in the browser tests).
fn lcg_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The wasm build's nearest-neighbour search (the simd128 fused kernel up to 128 dimensions, matrix products
/// above) finds the brute-force nearest row, the lowest of equal ones, with and without excluding rows by source:
/// dimensions on both sides of the kernel's limit, rows and queries not multiples of its blocks (16 rows, 4
/// queries), duplicated rows.
#[wasm_bindgen_test]
fn nearest_in_wasm_ranks_as_brute_force() {
    use sonomaly::detector::patchcore::{same_clip, source_id};
    use sonomaly::detector::{PatchCore, PatchCoreConfig};
    for d in [1, 3, 10, 17, 113, 128, 129] {
        let n = 533;
        let mut bank = lcg_values(n * d, d as u64);
        // Row 40 repeats row 7, row 300 repeats row 41: the lower row must win.
        bank.copy_within(7 * d..8 * d, 40 * d);
        bank.copy_within(41 * d..42 * d, 300 * d);
        let mut q = lcg_values(23 * d, 100 + d as u64);
        q[..d].copy_from_slice(&bank[7 * d..8 * d]);
        q[d..2 * d].copy_from_slice(&bank[300 * d..301 * d]);
        let sources: Vec<u64> = (0..n).map(|j| source_id(((j % 5) as u64 + 1) << 8, j % 3)).collect();
        let query_clips: Vec<u64> = (0..23).map(|i| ((i % 6) as u64 + 1) << 8).collect();
        let pc = PatchCore::from_memory_bank(bank.clone(), d, PatchCoreConfig::default())
            .with_sources(sources.clone())
            .expect("one source per row");
        for excluding in [false, true] {
            let nn = if excluding {
                pc.nearest_excluding(&q, &query_clips, &|row, query| same_clip(row, query)).expect("search")
            } else {
                pc.nearest(&q).expect("search")
            };
            for i in 0..23 {
                let mut best = (f32::INFINITY, u32::MAX);
                for j in 0..n {
                    if excluding && same_clip(sources[j], query_clips[i]) {
                        continue;
                    }
                    let dd = q[i * d..(i + 1) * d]
                        .iter()
                        .zip(&bank[j * d..(j + 1) * d])
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                        .sqrt();
                    if dd < best.0 {
                        best = (dd, j as u32);
                    }
                }
                let what = format!("{d} dims, excluding {excluding}, query {i}");
                assert_eq!(nn.index[i], best.1, "{what}");
                assert!((nn.distance[i] - best.0).abs() < 1e-5, "{what}: {} vs {}", nn.distance[i], best.0);
            }
        }
    }
}
