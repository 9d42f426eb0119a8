//! The second shipped backbone, EfficientAT mn04_as (`models/efficientat-mn04/`), and its front end.
//!
//! - Front end (`Preset::Efficientat`) against EfficientAT's own torch + torchaudio code
//!   (`tests/fixtures/efficientat_frontend_ref.safetensors`, written by `tests/reference/efficientat_frontend_ref.py`;
//!   numpy where torch refuses a clip shorter than its reflect padding): real clips and edge cases, <= 1e-3; the
//!   mel filterbank against torchaudio's `get_mel_banks`; streaming equals the whole clip bit for bit.
//! - Backbone (layout `ncft`, run by tract) against onnxruntime on every block and the logits
//!   (`tests/fixtures/efficientat_backbone_ref.safetensors`, `tests/reference/efficientat_backbone_ref.py`): a real
//!   MIMII window and an odd random input, <= 1e-4 of each layer's largest value.
//! - The AudioSet logits, through sonomaly's decoder, resampler, front end and tract, tag shared clips sensibly.
//! - `models/prepare_efficientat.py` rebuilds `model.onnx` byte for byte; the fan fits and scores with its blocks.
//!
//! Cases that need `../shared/data` (or the original ONNX in `../shared/models`) are marked ignored; run them with
//! `cargo test -- --include-ignored`.

#[path = "common/shared.rs"]
mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use sonomaly::audio::{decode_file, to_mono, ChannelSelect};
use sonomaly::backbone::{Backbone, BackboneSpec, Runtime};
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, Model, StreamScorer};
use sonomaly::spectrogram::{LogMel, LogMelConfig, LogMelStream, Preset};
use tract_onnx::prelude::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Largest allowed absolute difference of the log-mel (units of `(ln(x + 1e-5) + 4.5) / 5`).
const FRONT_END_TOL: f32 = 1e-3;
/// Largest allowed difference of a feature map, as a fraction of the layer's largest absolute value.
const BACKBONE_TOL: f32 = 1e-4;
const N_BLOCKS: usize = 17;

fn model_dir() -> PathBuf {
    Path::new(ROOT).join("models/efficientat-mn04")
}

fn onnx_bytes() -> Vec<u8> {
    std::fs::read(model_dir().join("model.onnx")).expect("models/efficientat-mn04/model.onnx")
}

fn spec() -> BackboneSpec {
    BackboneSpec::from_json(&std::fs::read_to_string(model_dir().join("spec.json")).expect("spec.json"))
        .expect("spec parses")
}

/// `rel` under `../shared/data`.
fn shared(rel: &str) -> PathBuf {
    shared::shared(&format!("data/{rel}"))
}

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: HashMap<String, String>,
}

fn load_fixture(name: &str) -> Fixture {
    let path = Path::new(ROOT).join("tests/fixtures").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("fixture header");
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).expect("fixture");
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Fixture { tensors, metadata }
}

// ---------------------------------------------------------------------------------------------------------------
// Front end

/// PCM16 WAV samples / 32768 (the first `seconds`, or all) of `rel` under `../shared/data`.
fn pcm16(rel: &str, seconds: Option<usize>) -> Vec<f32> {
    let path = shared(rel);
    let mut reader = hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample, spec.sample_format), (1, 16, hound::SampleFormat::Int));
    let n = seconds.map_or(usize::MAX, |s| s * spec.sample_rate as usize);
    reader.samples::<i16>().take(n).map(|s| s.unwrap() as f32 / 32768.0).collect()
}

fn synthetic(case: &str) -> Vec<f32> {
    let sr = 32_000usize;
    let sine = |k: usize| -> Vec<f32> {
        (0..k).map(|n| (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / sr as f64).sin()) as f32).collect()
    };
    match case {
        "silence" => vec![0.0; sr],
        "square" => (0..sr).map(|n| if 2 * ((n * 441) % sr) < sr { 1.0 } else { -1.0 }).collect(),
        "sine_514" => sine(514),
        "sine_513" => sine(513),
        "short_sine" => sine(300),
        "tiny_sine" => sine(37),
        "two_samples" => vec![0.25, -0.5],
        _ => unreachable!("{case}"),
    }
}

fn check_front_end(fx: &Fixture, case: &str, samples: &[f32]) {
    let key = format!("efficientat/{case}");
    let (shape, want) = fx.tensors.get(&key).unwrap_or_else(|| panic!("fixture lacks {key}"));
    let cfg = LogMelConfig::preset(Preset::Efficientat);
    let mel = LogMel::new(cfg.clone()).unwrap();
    let got = mel.compute(samples).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(vec![got.frames, got.mel_bins], *shape, "{key}: shape");
    assert_eq!(got.frames, mel.n_frames(samples.len()), "{key}: n_frames");
    let err = got.data.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let source = fx.metadata.get(&format!("source/{case}")).map_or("?", |s| s.as_str());
    println!("{key:26} ({source:5}) frames {:4}  max abs error {err:.3e}", got.frames);
    assert!(err <= FRONT_END_TOL, "{key}: max abs error {err} > {FRONT_END_TOL}");

    // Streaming in uneven chunks (pre-emphasis runs across the chunk boundaries) gives the same frames.
    let mut stream = LogMelStream::new(cfg).unwrap();
    let mut streamed = Vec::new();
    let (mut i, mut k) = (0, 1);
    while i < samples.len() {
        let j = (i + k).min(samples.len());
        streamed.extend(stream.push(&samples[i..j]).unwrap());
        i = j;
        k = (k * 7 + 13) % 5000;
    }
    streamed.extend(stream.finish().unwrap());
    assert!(
        streamed.len() == got.data.len() && streamed.iter().zip(&got.data).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{key}: streaming differs from compute"
    );
}

#[test]
fn front_end_matches_efficientat_on_edge_cases() {
    let fx = load_fixture("efficientat_frontend_ref.safetensors");
    for case in ["silence", "square", "sine_514", "sine_513", "short_sine", "tiny_sine", "two_samples"] {
        check_front_end(&fx, case, &synthetic(case));
    }
    // The silence of the pipeline's padding is what the front end makes of digital silence.
    let cfg = LogMelConfig::preset(Preset::Efficientat);
    let (_, silence) = &fx.tensors["efficientat/silence"];
    assert!(silence.iter().all(|&v| (v - cfg.log.of_zero_power()).abs() <= 1e-6), "{}", silence[0]);
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn front_end_matches_efficientat_on_real_clips() {
    let fx = load_fixture("efficientat_frontend_ref.safetensors");
    let mimii = fx.metadata.get("mimii_file").expect("fixture names the MIMII file").clone();
    let birds = fx.metadata.get("birds_file").expect("fixture names the birds file").clone();
    for (case, rel, seconds) in [("mimii_fan", mimii.as_str(), 3), ("birds", birds.as_str(), 10)] {
        check_front_end(&fx, case, &pcm16(rel, Some(seconds)));
    }
}

#[test]
fn mel_filters_equal_torchaudio_get_mel_banks() {
    let fx = load_fixture("efficientat_frontend_ref.safetensors");
    let (shape, want) = &fx.tensors["efficientat/filterbank"];
    assert_eq!(shape, &vec![128, 513]);
    let mel = LogMel::new(LogMelConfig::preset(Preset::Efficientat)).unwrap();
    // torchaudio computes the banks in float32, sonomaly in float64: about 1e-5 apart.
    let err = mel.filterbank().iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("Kaldi mel filterbank vs torchaudio: max abs difference {err:.2e}");
    assert!(err <= 5e-5, "{err}");
    assert!(mel.filterbank().chunks_exact(513).all(|row| row[512] == 0.0));
}

// ---------------------------------------------------------------------------------------------------------------
// Backbone

fn all_blocks() -> Vec<String> {
    (0..N_BLOCKS).map(|b| format!("features.{b}")).collect()
}

/// `[1, 1, 128, T]` (the network's layout) -> `[T, 128]` (sonomaly's window).
fn to_frames_by_mel(x: &[f32], t: usize) -> Vec<f32> {
    let m = x.len() / t;
    let mut out = vec![0.0f32; x.len()];
    for b in 0..m {
        for f in 0..t {
            out[f * m + b] = x[b * t + f];
        }
    }
    out
}

/// Worst difference of a `[C, T, F]` map and an onnxruntime `[1, C, F, T]` reference, relative to the
/// reference's largest absolute value.
fn relative_error(map: &sonomaly::backbone::FeatureMap, shape: &[usize], reference: &[f32]) -> (f32, f32) {
    assert_eq!(shape, [1, map.channels, map.freq, map.time], "{}", map.name);
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for c in 0..map.channels {
        for t in 0..map.time {
            for f in 0..map.freq {
                let ours = map.data[(c * map.time + t) * map.freq + f];
                let theirs = reference[(c * map.freq + f) * map.time + t];
                worst = worst.max((ours - theirs).abs());
            }
        }
    }
    (worst / scale.max(f32::MIN_POSITIVE), scale)
}

fn check_blocks(prefix: &str, input: &str) {
    let fx = load_fixture("efficientat_backbone_ref.safetensors");
    let (shape, x) = &fx.tensors[input];
    assert_eq!(&shape[..3], &[1, 1, 128]);
    let frames = shape[3];
    let names = all_blocks();
    let backbone = Backbone::with_frames(&onnx_bytes(), spec(), &names, frames, Runtime::Auto).unwrap();
    assert_eq!(backbone.runtime_name(), "tract");
    let maps = backbone.run(&to_frames_by_mel(x, frames)).unwrap();
    for (name, map) in names.iter().zip(&maps) {
        let (rshape, reference) = &fx.tensors[&format!("{prefix}{name}")];
        let (err, scale) = relative_error(map, rshape, reference);
        println!(
            "tract vs onnxruntime, {input} [{frames} frames] -> {name:12}: {err:.2e} of the largest value {scale:.3}"
        );
        assert!(err <= BACKBONE_TOL, "{name}: {err}");
    }
}

#[test]
fn tract_equals_onnxruntime_on_every_block_of_a_real_clip() {
    check_blocks("", "logmel");
}

#[test]
fn tract_equals_onnxruntime_on_an_odd_random_input() {
    check_blocks("random_", "random_logmel");
}

/// The graph with only `logits` kept, optimised for `[1, 1, 128, frames]`.
fn logits_plan(onnx: &[u8], frames: usize) -> std::sync::Arc<TypedRunnableModel> {
    let mut model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(onnx)).unwrap();
    let logits = model.find_outlet_label("logits").expect("a tensor named logits");
    model.select_output_outlets(&[logits]).unwrap();
    let model = model.with_input_fact(0, f32::fact([1, 1, 128, frames]).into()).unwrap();
    model.into_optimized().unwrap().into_runnable().unwrap()
}

fn logits(plan: &std::sync::Arc<TypedRunnableModel>, mel_by_frames: Vec<f32>, frames: usize) -> Vec<f32> {
    let input = Tensor::from_shape(&[1, 1, 128, frames], &mel_by_frames).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

#[test]
fn tract_logits_equal_onnxruntime() {
    let fx = load_fixture("efficientat_backbone_ref.safetensors");
    let onnx = onnx_bytes();
    for prefix in ["", "random_"] {
        let (shape, x) = &fx.tensors[&format!("{prefix}logmel")];
        let plan = logits_plan(&onnx, shape[3]);
        let got = logits(&plan, x.clone(), shape[3]);
        let (rshape, want) = &fx.tensors[&format!("{prefix}logits")];
        assert_eq!(rshape, &vec![1, 527]);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale;
        println!("tract vs onnxruntime, {prefix}logits: {err:.2e} of the largest value {scale:.3}");
        assert!(err <= BACKBONE_TOL, "{err}");
    }
}

#[test]
fn spec_matches_the_graph_and_runs_on_tract() {
    let spec = spec();
    assert_eq!((spec.layout.as_str(), spec.front_end, spec.input_name.as_str()), ("ncft", Preset::Efficientat, "spec"));
    assert_eq!(spec.outputs.len(), N_BLOCKS);
    let onnx = onnx_bytes();
    let names = all_blocks();
    // The spec's window and an odd one: every block has the channels and the strides the spec lists.
    for frames in [spec.window_frames, 37, 16] {
        let b = Backbone::with_frames(&onnx, spec.clone(), &names, frames, Runtime::Auto).unwrap();
        assert_eq!(b.runtime_name(), "tract");
        let reason = b.tract_reason().unwrap();
        assert!(reason.contains("ncft"), "{reason}");
        let maps = b.run(&vec![-1.0; frames * 128]).unwrap();
        for (o, map) in spec.outputs.iter().zip(&maps) {
            assert_eq!(map.name, o.name);
            assert_eq!(
                (map.channels, map.time, map.freq),
                (o.channels, frames.div_ceil(o.time_stride), 128 / o.freq_stride),
                "{frames} frames, {}",
                o.name
            );
        }
    }
    // A few outputs in another order: each one is the same map as with all of them.
    let x: Vec<f32> = (0..spec.window_frames * 128).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let all = Backbone::from_bytes(&onnx, spec.clone(), &names).unwrap().run(&x).unwrap();
    let some: Vec<String> = ["features.15", "features.12"].map(String::from).to_vec();
    let two = Backbone::from_bytes(&onnx, spec.clone(), &some).unwrap().run(&x).unwrap();
    assert_eq!((&two[0], &two[1]), (&all[15], &all[12]));
    // The CNN14 default's layout is not accepted for this graph's shape: the spec decides the transposition.
    let mut wrong = spec;
    wrong.layout = "nctf".into();
    assert!(Backbone::from_bytes(&onnx, wrong, &some).is_err());
}

#[test]
#[ignore = "needs ../shared/models and python3 with numpy and onnx: cargo test -- --include-ignored"]
fn prepare_script_rebuilds_the_model_byte_for_byte() {
    let source = shared::shared("models/efficientat-mn04/mn04_as.onnx");
    match Command::new("python3").args(["-c", "import numpy, onnx"]).output() {
        Ok(o) if o.status.success() => {}
        _ => panic!("this test needs python3 with numpy and onnx: pip install -r tests/reference/requirements.txt"),
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let run = Command::new("python3")
        .current_dir(ROOT)
        .arg("models/prepare_efficientat.py")
        .arg("--onnx")
        .arg(&source)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(
        std::fs::read(&out).unwrap() == onnx_bytes(),
        "models/efficientat-mn04/model.onnx differs from the script's output"
    );
    // A file that is not the expected export is refused by its checksum.
    let fake = dir.path().join("fake.onnx");
    std::fs::write(&fake, b"not the export").unwrap();
    let run = Command::new("python3")
        .current_dir(ROOT)
        .args(["models/prepare_efficientat.py", "--out"])
        .arg(dir.path().join("x.onnx"))
        .arg("--onnx")
        .arg(&fake)
        .output()
        .unwrap();
    assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains("sha256"));
}

// ---------------------------------------------------------------------------------------------------------------
// AudioSet tagging

/// The 527 AudioSet display names in `class_labels_indices` order.
fn class_names() -> Vec<String> {
    let text = std::fs::read_to_string(model_dir().join("class_labels_indices.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,mid,display_name"));
    let names: Vec<String> = lines
        .enumerate()
        .map(|(i, line)| {
            let (index, rest) = line.split_once(',').unwrap();
            assert_eq!(index.parse::<usize>().unwrap(), i);
            let (_mid, name) = rest.split_once(',').unwrap();
            name.trim_matches('"').to_string()
        })
        .collect();
    assert_eq!(names.len(), 527);
    names
}

#[test]
fn class_labels_are_audioset_in_index_order() {
    let names = class_names();
    for (i, name) in [(0, "Speech"), (74, "Dog"), (75, "Bark"), (111, "Bird"), (396, "Siren"), (526, "Field recording")]
    {
        assert_eq!(names[i], name);
    }
}

/// AudioSet classes of the first 10 s of a shared clip (or all of a shorter one), best first, through sonomaly's
/// decoder, channel mix, resampler (to 32 kHz) and `efficientat` front end, then tract.
fn top_classes(model: &Model, names: &[String], path: &Path) -> Vec<String> {
    let audio = decode_file(path).unwrap();
    let mono = to_mono(&audio, ChannelSelect::Mix).unwrap();
    let n = mono.len().min(10 * audio.sample_rate as usize);
    let lm = model.logmel_of(&mono[..n], audio.sample_rate).unwrap();
    let frames = lm.frames;
    let mut by_mel = vec![0.0f32; lm.data.len()];
    for (t, row) in lm.data.chunks_exact(128).enumerate() {
        for (b, &v) in row.iter().enumerate() {
            by_mel[b * frames + t] = v;
        }
    }
    let l = logits(&logits_plan(&onnx_bytes(), frames), by_mel, frames);
    let mut order: Vec<usize> = (0..l.len()).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    order.into_iter().map(|i| names[i].clone()).collect()
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn audioset_logits_tag_shared_clips() {
    let model = Model::from_dir(&model_dir()).unwrap();
    let names = class_names();
    // (clip, classes of which at least one must be among the top 5). Chosen from a survey of every clip of these
    // folders (numbers in the README, "Models").
    let horn = ["Vehicle horn, car horn, honking", "Toot", "Air horn, truck horn"];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("industrial/mimii_fan_id00/normal/00000018.wav", vec!["Mechanical fan"]),
        ("industrial/mimii_fan_id00/abnormal/00000009.wav", vec!["Mechanical fan"]),
        ("industrial/mimii_fan_id00/abnormal/00000011.wav", vec!["Mechanical fan"]),
        ("env/urbansound8k_subset/dog_bark/100795-3-1-1.wav", vec!["Dog", "Bark"]),
        ("env/urbansound8k_subset/dog_bark/118101-3-0-0.wav", vec!["Dog", "Bark"]),
        ("env/urbansound8k_subset/dog_bark/193394-3-0-7.wav", vec!["Dog", "Bark"]),
        ("env/urbansound8k_subset/siren/102871-8-0-14.wav", vec!["Siren", "Emergency vehicle"]),
        ("env/urbansound8k_subset/siren/157867-8-0-16.wav", vec!["Siren", "Emergency vehicle"]),
        ("env/urbansound8k_subset/siren/26173-8-0-0.wav", vec!["Siren", "Emergency vehicle"]),
        ("env/urbansound8k_subset/car_horn/175847-1-0-0.wav", horn.to_vec()),
        ("env/urbansound8k_subset/car_horn/175851-1-0-0.wav", horn.to_vec()),
        ("env/urbansound8k_subset/car_horn/28808-1-0-4.wav", horn.to_vec()),
        ("env/urbansound8k_subset/gun_shot/110622-6-0-0.wav", vec!["Gunshot, gunfire", "Machine gun"]),
        ("env/urbansound8k_subset/jackhammer/162134-7-8-0.wav", vec!["Jackhammer"]),
        ("env/opensoundscape/birds_10s.wav", vec!["Bird", "Bird vocalization, bird call, bird song"]),
        ("env/ovos_animals_cc0/rooster.wav", vec!["Chicken, rooster", "Crowing, cock-a-doodle-doo"]),
        ("env/ovos_animals_cc0/owl.wav", vec!["Owl"]),
    ];
    let mut failed = Vec::new();
    for (rel, want) in &cases {
        let path = shared(rel);
        let top = top_classes(&model, &names, &path);
        let top5 = &top[..5];
        let ok = want.iter().any(|w| top5.iter().any(|t| t == w));
        println!("{} {rel}: {}", if ok { "ok  " } else { "FAIL" }, top5.join(" | "));
        if !ok {
            failed.push(format!("{rel}: none of {want:?} in the top 5 {top5:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------------
// The pipeline with this backbone

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn the_fan_fits_and_scores_with_mn04_blocks() {
    let dir = shared("industrial/mimii_fan_id00");
    let read = |p: PathBuf| {
        let a = decode_file(&p).unwrap();
        (to_mono(&a, ChannelSelect::Channel(0)).unwrap(), a.sample_rate)
    };
    let embedding = EmbeddingConfig::default().with_layers("features.12,features.15").unwrap();
    let onnx = onnx_bytes();
    let spec_json = std::fs::read_to_string(model_dir().join("spec.json")).unwrap();
    let model = Model::with_embedding(&onnx, &spec_json, embedding).unwrap();
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    for i in 0..4 {
        let (x, sr) = read(dir.join(format!("normal/{i:08}.wav")));
        fitter.add_clip(&model, &x, sr).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    assert_eq!(bank.meta.front_end, LogMelConfig::preset(Preset::Efficientat));
    let mut model = model;
    model.prepare_for(&bank).unwrap();
    let (x, sr) = read(dir.join("abnormal/00000001.wav"));
    let whole = score_clip(&model, &bank, &x, sr).unwrap();
    assert_eq!((whole.frames, whole.mel_bins), (1000, 128));
    assert!(whole.score.is_finite() && whole.map.iter().all(|v| v.is_finite()));
    // Streaming gives the whole-clip map (pre-emphasis and the ncft transposition included).
    let mut s = StreamScorer::new(&model, &bank, sr).unwrap();
    let mut map = Vec::new();
    for chunk in x.chunks(5_000) {
        for u in s.push(&model, &bank, chunk).unwrap() {
            map.extend(u.map);
        }
    }
    for u in s.finish(&model, &bank).unwrap() {
        map.extend(u.map);
    }
    assert_eq!(map.len(), whole.map.len());
    let max_diff = map.iter().zip(&whole.map).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!(
        "mn04 features.12,15: abnormal 1 scores {:.4} (threshold {:.4}); stream vs whole max diff {max_diff:e}",
        whole.score,
        bank.threshold()
    );
    assert!(max_diff <= 1e-4 * whole.map.iter().map(|v| v.abs()).fold(1.0f32, f32::max));
    // A bank of this backbone is refused by the aisfx one, naming both.
    let mut default = Model::embedded_aisfx().unwrap();
    let e = default.prepare_for(&bank).unwrap_err().to_string();
    assert!(e.contains("efficientat-mn04") && e.contains("aisfx-cnn14"), "{e}");
}
