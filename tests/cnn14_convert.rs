//! Real CNN14 checkpoints (PANNs 32 kHz, PANNs 16 kHz, Microsoft CLAP 2022) converted by
//! `models/convert_cnn14.py` run exactly in tract.
//!
//! For each variant a synthetic checkpoint with the real file's key names, shapes and dtypes (random seeded
//! weights, torchlibrosa's STFT and mel buffers) is written in torch's own format (zip for PANNs 32 kHz and CLAP,
//! the legacy pre-1.6 format for PANNs 16 kHz), converted, loaded through `Model::from_dir` and
//! `Backbone::from_bytes`, and run on random log-mel windows; conv_block1..4 must equal an independent numpy
//! implementation of the same blocks (`tests/reference/cnn14_ref.py`, weights regenerated from the seed rather
//! than read back from the file) to 1e-4 (absolute below 1, relative above). Also: the spec's front end is the
//! variant's preset, the presets hold the values of the reference configurations, a checkpoint missing a key or
//! of another variant is refused with an error naming the key, and conversion is byte-reproducible.
//!
//! Needs python3 with numpy, onnx and safetensors (onnxruntime optional); skips with a printed reason otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;
use sonomaly::backbone::{Backbone, BackboneSpec};
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, Model};
use sonomaly::spectrogram::{LogCompression, LogMel, LogMelConfig, MelNorm, MelScale, PadMode, Preset, Window};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `None` when python3 and the packages the scripts need are there, else why not.
fn python_missing() -> Option<String> {
    match Command::new("python3").args(["-c", "import numpy, onnx, safetensors"]).output() {
        Err(e) => Some(format!("python3 cannot be run ({e})")),
        Ok(o) if !o.status.success() => Some(format!(
            "python3 lacks numpy/onnx/safetensors: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Ok(_) => None,
    }
}

macro_rules! need_python {
    () => {
        if let Some(reason) = python_missing() {
            println!("SKIPPED: {reason}");
            return;
        }
    };
}

fn python(args: &[&str]) -> Output {
    Command::new("python3").current_dir(root()).args(args).output().expect("python3 runs")
}

fn python_ok(args: &[&str]) -> String {
    let o = python(args);
    assert!(
        o.status.success(),
        "python3 {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("reference has {name}"));
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (t.shape().to_vec(), v)
}

/// Deterministic noise in [-0.5, 0.5).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

const LAYERS: [&str; 4] = ["conv_block1", "conv_block2", "conv_block3", "conv_block4"];

/// Converts a synthetic checkpoint of `variant` and compares tract with numpy; returns the largest error per
/// window length and layer.
fn check_variant(variant: &str, preset: Preset, file_name: &str, format: &str, seed: u32) {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join(file_name);
    let out = dir.path().join("model");
    let refs = dir.path().join("ref.safetensors");
    let seed_s = seed.to_string();
    python_ok(&[
        "models/convert_cnn14.py",
        "--synthetic",
        s(&ckpt),
        "--variant",
        variant,
        "--seed",
        &seed_s,
        "--format",
        format,
    ]);
    let log = python_ok(&["models/convert_cnn14.py", s(&ckpt), "--variant", variant, "--out", s(&out)]);
    print!("{log}");
    std::fs::remove_file(&ckpt).unwrap(); // a full-size synthetic checkpoint is ~330 MB
    let mut ref_args = vec!["tests/reference/cnn14_ref.py", "--variant", variant, "--seed", &seed_s, "--out", s(&refs)];
    let has_ort = python(&["-c", "import onnxruntime"]).status.success();
    let onnx_path = out.join("model.onnx");
    if has_ort {
        ref_args.extend(["--onnx", s(&onnx_path)]);
    }
    println!("reference: {}", python_ok(&ref_args).trim());

    // The converted directory loads as a model, with the variant's front end.
    let model = Model::from_dir(&out).unwrap();
    let spec = model.spec().clone();
    assert_eq!(spec.front_end, preset, "{variant}: front end");
    assert_eq!(model.logmel().config(), &LogMelConfig::preset(preset));
    assert_eq!(spec.input_name, "logmel");
    assert_eq!((spec.window_frames, spec.window_hop), (256, 128));
    assert_eq!(spec.window_frames % 16, 0);
    let strides: Vec<(String, usize, usize, usize)> =
        spec.outputs.iter().map(|o| (o.name.clone(), o.channels, o.time_stride, o.freq_stride)).collect();
    assert_eq!(
        strides,
        vec![
            ("conv_block1".to_string(), 64, 2, 2),
            ("conv_block2".to_string(), 128, 4, 4),
            ("conv_block3".to_string(), 256, 8, 8),
            ("conv_block4".to_string(), 512, 16, 16),
        ]
    );
    assert!(!spec.licence.is_empty() && spec.source.contains("sha256"), "{variant}: licence and source");

    let onnx = std::fs::read(&onnx_path).unwrap();
    assert!(onnx.len() < 10_000_000, "{variant}: {} bytes, expected ~9.4 MB of float16 weights", onnx.len());
    let bytes = std::fs::read(&refs).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let outputs: Vec<String> = LAYERS.map(String::from).to_vec();
    for frames in [256usize, 100] {
        let mut spec = BackboneSpec::from_json(&std::fs::read_to_string(out.join("spec.json")).unwrap()).unwrap();
        spec.window_frames = frames;
        spec.window_hop = frames / 2;
        let backbone = Backbone::from_bytes(&onnx, spec, &outputs).unwrap();
        let (shape, x) = tensor(&st, &format!("w{frames}_logmel"));
        assert_eq!(shape, vec![1, 1, frames, 64]);
        let maps = backbone.run(&x).unwrap();
        let mut report = Vec::new();
        for (name, map) in outputs.iter().zip(&maps) {
            let (shape, reference) = tensor(&st, &format!("w{frames}_{name}"));
            assert_eq!(vec![1, map.channels, map.time, map.freq], shape, "{variant} {frames} frames {name} shape");
            let (mut worst, mut worst_abs) = (0.0f32, 0.0f32);
            for (a, b) in map.data.iter().zip(&reference) {
                worst = worst.max((a - b).abs() / b.abs().max(1.0));
                worst_abs = worst_abs.max((a - b).abs());
            }
            report.push(format!("{name} {worst:.2e} (abs {worst_abs:.2e})"));
            assert!(worst <= 1e-4, "{variant}, {frames} frames, {name}: error {worst}");
        }
        println!("{variant}: {frames}-frame window, tract vs numpy max error: {}", report.join(", "));
    }
}

#[test]
fn panns_cnn14_32k_zip_checkpoint_converts_and_runs_exactly() {
    need_python!();
    check_variant("panns", Preset::PannsCnn14, "Cnn14_mAP=0.431.pth", "zip", 1);
}

#[test]
fn panns_cnn14_16k_legacy_checkpoint_converts_and_runs_exactly() {
    need_python!();
    check_variant("panns-16k", Preset::Panns16k, "Cnn14_16k_mAP=0.438.pth", "legacy", 2);
}

#[test]
fn clap_2022_checkpoint_converts_and_runs_exactly() {
    need_python!();
    check_variant("clap-2022", Preset::Clap2022, "CLAP_weights_2022.pth", "zip", 3);
}

#[test]
fn presets_hold_the_reference_front_ends() {
    // torchlibrosa as PANNs and msclap configure it: Spectrogram(n_fft=window_size, win_length=window_size,
    // window='hann', center=True, pad_mode='reflect'), power 2, LogmelFilterBank(librosa Slaney mel, ref=1.0,
    // amin=1e-10, top_db=None). PANNs: 32 kHz / 1024 / 320 / 50-14000 Hz and 16 kHz / 512 / 160 / 50-8000 Hz
    // (qiuqiangkong/audioset_tagging_cnn). CLAP 2022: msclap 1.3.4 configs/config_2022.yml: sampling_rate 44100,
    // window_size 1024, hop_size 320, mel_bins 64, fmin 50, fmax 14000 (its `n_fft: 1028` is not read: CLAP
    // passes window_size as n_fft).
    for (preset, sr, n_fft, hop, f_max) in [
        (Preset::PannsCnn14, 32_000, 1024, 320, 14_000.0),
        (Preset::Panns16k, 16_000, 512, 160, 8_000.0),
        (Preset::Clap2022, 44_100, 1024, 320, 14_000.0),
    ] {
        let c = LogMelConfig::preset(preset);
        assert_eq!((c.sample_rate, c.n_fft, c.win_length, c.hop_length), (sr, n_fft, n_fft, hop), "{preset:?}");
        assert_eq!((c.n_mels, c.f_min, c.f_max), (64, 50.0, f_max), "{preset:?}");
        assert_eq!((c.window, c.center, c.pad_mode, c.power), (Window::HannPeriodic, true, PadMode::Reflect, 2.0));
        assert_eq!((c.mel_scale, c.mel_norm), (MelScale::Slaney, MelNorm::Slaney));
        assert_eq!(c.log, LogCompression::Db { amin: 1e-10, reference: 1.0, top_db: None });
        assert!(!c.peak_normalize);
        // 10 s: 1 + 10 sr / hop frames (centred frames), i.e. 1001 for both PANNs models
        let lm = LogMel::new(c).unwrap();
        let n = 10 * sr as usize;
        assert_eq!(lm.n_frames(n), 1 + n / hop, "{preset:?}");
        if preset != Preset::Clap2022 {
            assert_eq!(lm.n_frames(n), 1001);
        }
    }
    // ... and the front end really computes 1001 frames for 10 s at 32 kHz
    let lm = LogMel::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
    let spec = lm.compute(&noise(320_000, 7)).unwrap();
    assert_eq!((spec.frames, spec.mel_bins), (1001, 64));
}

#[test]
fn converted_backbone_fits_and_scores_and_its_bank_refuses_another_backbone() {
    need_python!();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("Cnn14_mAP=0.431.pth");
    let out = dir.path().join("panns-cnn14");
    python_ok(&["models/convert_cnn14.py", "--synthetic", s(&ckpt), "--variant", "panns", "--compact"]);
    python_ok(&["models/convert_cnn14.py", s(&ckpt), "--variant", "panns", "--out", s(&out)]);
    let onnx = std::fs::read(out.join("model.onnx")).unwrap();
    let spec = std::fs::read_to_string(out.join("spec.json")).unwrap();
    let embedding = EmbeddingConfig::default().with_layers("conv_block2,conv_block3,conv_block4").unwrap();
    let mut model = Model::with_embedding(&onnx, &spec, embedding).unwrap();
    let sr = model.sample_rate();
    assert_eq!(sr, 32_000);
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    for seed in 0..3 {
        fitter.add_clip(&model, &noise(sr as usize * 4, seed), sr).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    assert_eq!(bank.meta.backbone.name, "panns-cnn14");
    assert_eq!(bank.meta.backbone.sha256, sonomaly::backbone::sha256_hex(&onnx));
    assert_eq!(bank.meta.front_end, LogMelConfig::preset(Preset::PannsCnn14));
    model.prepare_for(&bank).unwrap();
    // 10 s at 32 kHz: 1001 frames, 7 windows of 256 frames
    let t0 = std::time::Instant::now();
    let result = score_clip(&model, &bank, &noise(sr as usize * 10, 9), sr).unwrap();
    println!("scoring 10 s with conv_block2,3,4 of the converted CNN14: {:.2} s", t0.elapsed().as_secs_f64());
    assert!(result.score.is_finite() && result.frames == 1001, "{} frames", result.frames);
    // the bank remembers its backbone: the default model is refused
    let mut other = Model::embedded_default().unwrap();
    let err = other.prepare_for(&bank).unwrap_err().to_string();
    assert!(err.contains("panns-cnn14") && err.contains("efficientat-mn04"), "{err}");
}

#[test]
fn bad_checkpoints_are_refused_with_the_key_named_and_conversion_is_reproducible() {
    need_python!();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    // a missing key: non-zero exit, the key named
    let key = "audio_encoder.base.conv_block2.bn1.running_var";
    python_ok(&[
        "models/convert_cnn14.py",
        "--synthetic",
        s(&p("missing.pth")),
        "--variant",
        "clap-2022",
        "--compact",
        "--drop-key",
        key,
    ]);
    let o = python(&["models/convert_cnn14.py", s(&p("missing.pth")), "--variant", "clap-2022", "--out", s(&p("x"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a checkpoint without {key} converted");
    assert!(err.contains(key) && err.contains("missing"), "{err}");
    assert!(!p("x").join("model.onnx").exists());

    // a PANNs 32 kHz checkpoint converted as CLAP (same n_fft, other mel filters) or as PANNs 16 kHz
    python_ok(&["models/convert_cnn14.py", "--synthetic", s(&p("panns.pth")), "--variant", "panns", "--compact"]);
    for (variant, names) in [("clap-2022", "logmel_extractor.melW"), ("panns-16k", "conv_real.weight")] {
        let o = python(&["models/convert_cnn14.py", s(&p("panns.pth")), "--variant", variant, "--out", s(&p("y"))]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(names) && err.contains("--variant panns"), "{variant}: {err}");
    }

    // not a checkpoint at all
    std::fs::write(p("junk.pth"), b"definitely not a torch file").unwrap();
    let o = python(&["models/convert_cnn14.py", s(&p("junk.pth")), "--variant", "panns", "--out", s(&p("z"))]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: "), "{}", String::from_utf8_lossy(&o.stderr));

    // byte-reproducible: the same checkpoint twice, and the synthetic writer itself
    std::fs::create_dir(p("again")).unwrap();
    python_ok(&["models/convert_cnn14.py", "--synthetic", s(&p("again/panns.pth")), "--variant", "panns", "--compact"]);
    assert!(std::fs::read(p("panns.pth")).unwrap() == std::fs::read(p("again/panns.pth")).unwrap());
    python_ok(&["models/convert_cnn14.py", s(&p("panns.pth")), "--variant", "panns", "--out", s(&p("a"))]);
    python_ok(&["models/convert_cnn14.py", s(&p("panns.pth")), "--variant", "panns", "--out", s(&p("b"))]);
    for f in ["model.onnx", "spec.json"] {
        assert_eq!(std::fs::read(p("a").join(f)).unwrap(), std::fs::read(p("b").join(f)).unwrap(), "{f} differs");
    }
}
