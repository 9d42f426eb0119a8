//! Banks of several members (format version 2) and version 1 banks: round trips, fusion, z units, refusals.
//! Synthetic audio and the committed demo files only (no ../shared data needed).

use sonomaly::audio::{decode_file, to_mono, ChannelSelect};
use sonomaly::bank::Bank;
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, MemberConfig, Model, StreamScorer};

fn demo(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/demo").join(name)
}

/// A bank written by format version 1 (the demo bank of that version: aisfx CNN14, log-mel patches).
fn fixture_v1() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fan-demo-v1.bank")
}

fn read(p: &std::path::Path) -> (Vec<f32>, u32) {
    let a = decode_file(p).expect("decodes");
    (to_mono(&a, ChannelSelect::Mix).expect("mono"), a.sample_rate)
}

/// A fan-like hum with noise: `seconds` at `sr`, seed `seed`.
fn hum(seconds: f32, sr: u32, seed: u64, level: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..(seconds * sr as f32) as usize)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
            let t = i as f32 / sr as f32;
            level * (0.5 * (2.0 * std::f32::consts::PI * 120.0 * t).sin() + 0.3 * n)
        })
        .collect()
}

/// Two members on the default model: log-mel patches at stride 4 and at stride 8.
fn two_member_bank() -> (Model, Bank) {
    let fine = EmbeddingConfig::default();
    let coarse = EmbeddingConfig { grid_stride: 8, ..EmbeddingConfig::default() };
    let config = FitConfig::with_members(vec![MemberConfig::patchcore(fine), MemberConfig::patchcore(coarse)]);
    let mut model = Model::embedded_default().unwrap();
    model.set_embeddings(config.embeddings()).unwrap();
    let mut fitter = Fitter::new(&model, config).unwrap();
    for seed in 0..4 {
        fitter.add_clip(&model, &hum(3.0, 16_000, seed, 0.2), 16_000).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    model.prepare_for(&bank).unwrap();
    (model, bank)
}

#[test]
fn two_members_round_trip_bit_identical_and_fuse_by_max_z() {
    let (model, bank) = two_member_bank();
    assert_eq!(bank.meta.version, 2);
    assert_eq!(bank.meta.members.len(), 2);
    assert_eq!(bank.info().units, "z");
    let bytes = bank.to_bytes().unwrap();
    let again = Bank::from_bytes(&bytes).unwrap();
    assert_eq!(again, bank);
    assert_eq!(again.to_bytes().unwrap(), bytes, "save -> load -> save changes the bytes");
    // A louder clip with a click: each member's z-score is its raw score normalised, the clip's score the larger.
    let mut x = hum(3.0, 16_000, 99, 0.2);
    x[24_000..24_400].iter_mut().for_each(|v| *v += 0.8);
    let r = score_clip(&model, &again, &x, 16_000).unwrap();
    assert_eq!(r.units, "z");
    assert_eq!(r.members.len(), 2);
    for (m, meta) in r.members.iter().zip(&again.meta.members) {
        assert!((m.score - meta.score_norm.z(m.raw)).abs() <= 1e-5 * m.score.abs().max(1.0));
    }
    let best = r.members.iter().map(|m| m.score).fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(r.score, best);
    assert_eq!(r.is_anomaly, r.score > again.meta.threshold);
    // The map is in the same units: its maximum is at least the larger member's map maximum would give, and the
    // curve is the map's maximum per frame.
    let m = r.mel_bins;
    for (t, row) in r.map.chunks_exact(m).enumerate() {
        assert_eq!(r.curve[t], row.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
    assert!(r.map.iter().all(|v| v.is_finite()));
    // Streaming the same clip gives the same map and score.
    let mut s = StreamScorer::new(&model, &again, 16_000).unwrap();
    let (mut map, mut curve) = (Vec::new(), Vec::new());
    for c in x.chunks(3000) {
        for u in s.push(&model, &again, c).unwrap() {
            map.extend(u.map);
            curve.extend(u.curve);
        }
    }
    for u in s.finish(&model, &again).unwrap() {
        map.extend(u.map);
        curve.extend(u.curve);
    }
    assert_eq!(map.len(), r.map.len());
    let d = map.iter().zip(&r.map).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-4 * r.map.iter().map(|v| v.abs()).fold(1.0f32, f32::max), "stream differs by {d}");
    assert!((s.score(&again) - r.score).abs() <= 1e-4 * r.score.abs().max(1.0));
    // The stream's verdict (what `sonomaly score` and the page give for a long file) says what the clip's does.
    let v = s.verdict(&model, &again, &curve);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    assert!(close(v.score, r.score) && v.is_anomaly == r.is_anomaly && v.units == r.units);
    assert_eq!((v.threshold, v.segment_threshold), (r.threshold, r.segment_threshold));
    assert_eq!(v.members.len(), r.members.len());
    assert!(v.members.iter().zip(&r.members).all(|(a, b)| a.name == b.name && close(a.score, b.score)));
    assert_eq!((v.display_floor, v.display_ceiling), (r.display_floor, r.display_ceiling));
    assert!((v.duration_s - 3.0).abs() < 1e-9, "the stream's length is the audio's: {}", v.duration_s);
    assert!(r.duration_s >= v.duration_s && r.duration_s - v.duration_s <= r.hop_s + 1e-9);
    assert_eq!(v.band_limit_hz, r.band_limit_hz);
    assert_eq!(v.out_of_distribution, r.out_of_distribution);
    let (ld, rd) = (v.level_distance.expect("the bank keeps band levels"), r.level_distance.unwrap());
    assert!(close(ld, rd), "band-level distance {ld} streamed, {rd} whole");
    assert_eq!(v.segments.len(), r.segments.len());
    for (a, b) in v.segments.iter().zip(&r.segments) {
        assert!((a.start_s - b.start_s).abs() < 1e-9 && (a.end_s - b.end_s).abs() < 1e-9);
    }
}

#[test]
fn damaged_multi_member_banks_are_refused() {
    let (_, bank) = two_member_bank();
    let bytes = bank.to_bytes().unwrap();
    // A flipped byte in the last member's tensor (the end of the file).
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x10;
    let e = Bank::from_bytes(&bad).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
    // Metadata that lists a member without its detector is refused when the bank is made.
    let e = Bank::new(bank.meta.clone(), bank.detectors[..1].to_vec()).unwrap_err().to_string();
    assert!(e.contains("one detector per member"), "{e}");
    // A consistent one-member bank cut from it loads.
    let mut short = bank.clone();
    short.meta.members.pop();
    short.detectors.pop();
    assert!(Bank::from_bytes(&short.to_bytes().unwrap()).is_ok());
    // A normalisation with a zero scale cannot be saved into a loadable bank.
    let mut broken = bank.clone();
    broken.meta.members[1].map_norm.scale = 0.0;
    let e = Bank::from_bytes(&broken.to_bytes().unwrap()).unwrap_err().to_string();
    assert!(e.contains("normalisation"), "{e}");
}

#[test]
fn version_1_banks_still_score_as_before() {
    // The version 1 demo bank: one member, raw distances, a gamma threshold. Before format version 2 the demo
    // anomalous clip scored 0.1153 against its threshold 0.1138 (README of that version).
    let bank = Bank::from_bytes(&std::fs::read(fixture_v1()).unwrap()).unwrap();
    assert_eq!(bank.meta.version, 1);
    assert_eq!(bank.info().units, "distance");
    assert!((bank.meta.threshold - 0.1138).abs() < 5e-5, "{}", bank.meta.threshold);
    let mut model = Model::embedded_aisfx().unwrap();
    model.prepare_for(&bank).unwrap();
    let (x, sr) = read(&demo("fan-abnormal.wav"));
    let r = score_clip(&model, &bank, &x, sr).unwrap();
    assert!((r.score - 0.1153).abs() < 5e-5, "{}", r.score);
    assert_eq!(r.members[0].raw, r.score);
    assert!((r.display_floor - 0.6 * bank.meta.segment_threshold).abs() < 1e-7);
    // Saved again, it is a version 2 file that scores the same.
    let again = Bank::from_bytes(&bank.to_bytes().unwrap()).unwrap();
    assert_eq!(again.meta.version, 2);
    let r2 = score_clip(&model, &again, &x, sr).unwrap();
    assert_eq!(r2.score, r.score);
    assert_eq!(r2.map, r.map);
}

#[test]
fn threshold_override_moves_segments_the_same_way_everywhere() {
    let (_, bank) = two_member_bank();
    let mut b = bank.clone();
    b.override_threshold(bank.meta.threshold + 1.5).unwrap();
    assert!((b.meta.segment_threshold - (bank.meta.segment_threshold + 1.5)).abs() < 1e-6);
    assert!(b.override_threshold(f32::NAN).is_err());
    // Raw-distance banks scale the segment threshold in proportion and refuse a threshold of 0 or less.
    let mut v1 = Bank::from_bytes(&std::fs::read(fixture_v1()).unwrap()).unwrap();
    let seg = v1.meta.segment_threshold;
    let t = v1.meta.threshold;
    v1.override_threshold(2.0 * t).unwrap();
    assert!((v1.meta.segment_threshold - 2.0 * seg).abs() < 1e-6);
    assert!(v1.override_threshold(-1.0).unwrap_err().to_string().contains("positive"));
}

#[test]
fn a_fit_checks_its_model_and_clips() {
    let model = Model::embedded_default().unwrap();
    // The model must serve the members' embeddings.
    let other = FitConfig::with_members(vec![MemberConfig::patchcore(EmbeddingConfig {
        grid_stride: 8,
        ..EmbeddingConfig::default()
    })]);
    let e = Fitter::new(&model, other).err().expect("refused").to_string();
    assert!(e.contains("set_embeddings"), "{e}");
    assert!(Fitter::new(&model, FitConfig::with_members(Vec::new())).is_err());
    // A clip too short to be scored is too short to learn from.
    let mut f = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    let e = f.add_clip(&model, &hum(0.2, 16_000, 1, 0.2), 16_000).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    assert_eq!(f.clips(), 0);
}

#[test]
fn a_stream_gives_its_logmel_before_its_first_window_is_judged() {
    // What the page draws while recording: the log-mel of each block as it arrives (StreamScorer::recent_logmel),
    // long before the first analysis window can be judged (window + hop frames: 15 s with the default model).
    let (model, bank) = two_member_bank();
    let sr = model.sample_rate();
    let m = model.logmel().config().n_mels;
    let (w, h) = (model.spec().window_frames, model.spec().window_hop);
    let x = hum(16.0, sr, 7, 0.2);
    let whole = model.logmel_of(&x, sr).unwrap();
    let mut s = StreamScorer::new(&model, &bank, sr).unwrap();
    let (mut shown, mut frames, mut first_judged) = (Vec::new(), 0, None);
    for c in x.chunks(4096) {
        let updates = s.push(&model, &bank, c).unwrap();
        if !updates.is_empty() && first_judged.is_none() {
            first_judged = Some(s.frames());
        }
        let (first, lm) = s.recent_logmel(frames);
        assert_eq!(first, frames, "frames between two pushes are no longer held");
        assert_eq!(lm.len(), (s.frames() - frames) * m);
        shown.extend_from_slice(lm);
        frames = s.frames();
        if first_judged.is_none() {
            assert!(frames < w + h, "no window judged after {frames} frames");
        }
    }
    let first_judged = first_judged.expect("16 s give a judged window");
    assert!(first_judged >= w + h, "a window judged after {first_judged} frames, before {w} + {h}");
    assert!(frames * m <= whole.data.len() && frames > w + h);
    let top = whole.data.iter().map(|v| v.abs()).fold(1.0f32, f32::max);
    let d = shown.iter().zip(&whole.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= 1e-5 * top, "the streamed log-mel differs from the whole clip's by {d}");
    // Old frames go once their windows are judged: asked from the start, the first frame held comes later.
    let (first, lm) = s.recent_logmel(0);
    assert!(first > 0 && first + lm.len() / m == frames, "{first}");
    assert!(s.recent_logmel(frames + 10).1.is_empty());
}

/// A CFA bank (the trained descriptor's weights and the centroids in the member's state): save -> load is
/// bit-identical and scores the same; a damaged state (non-finite value, wrong shape) is refused in plain words, and
/// so is a merge of CFA banks.
#[test]
fn cfa_bank_round_trips_and_refuses_merge() {
    use sonomaly::detector::{CfaConfig, Detector, DetectorConfig};
    let detector = DetectorConfig::Cfa(CfaConfig { epochs: 3, centroids: 64, ..CfaConfig::default() });
    let config = FitConfig::with_members(vec![MemberConfig {
        embedding: EmbeddingConfig::default(),
        detector: detector.clone(),
    }]);
    let mut model = Model::embedded_default().unwrap();
    model.set_embeddings(config.embeddings()).unwrap();
    let mut fitter = Fitter::new(&model, config).unwrap();
    for seed in 0..3 {
        fitter.add_clip(&model, &hum(3.0, 16_000, seed, 0.2), 16_000).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    let Detector::Cfa(cfa) = &bank.detectors[0] else { panic!("a CFA member") };
    let dims = cfa.dims;
    assert_eq!(cfa.weights().len(), (dims + 3) * dims);
    assert_eq!(cfa.centroids().len(), 64 * dims);
    assert_eq!(bank.meta.members[0].state_rows, dims + 3 + 64);
    let bytes = bank.to_bytes().unwrap();
    let again = Bank::from_bytes(&bytes).unwrap();
    assert_eq!(again, bank);
    assert_eq!(again.to_bytes().unwrap(), bytes, "save -> load -> save changes the bytes");
    model.prepare_for(&again).unwrap();
    let x = hum(3.0, 16_000, 42, 0.2);
    let (a, b) = (score_clip(&model, &bank, &x, 16_000).unwrap(), score_clip(&model, &again, &x, 16_000).unwrap());
    assert_eq!(a.score, b.score);
    assert!(a.map.iter().all(|v| v.is_finite()));

    // A NaN in the stored weights: the checksum catches a flipped byte, so rebuild the bank with the NaN inside.
    let mut state = cfa.state.clone();
    state[1] = f32::NAN;
    let broken = Detector::from_state(&bank.meta.members[0].detector, dims, state).unwrap();
    let mut meta = bank.meta.clone();
    meta.data_sha256 = String::new();
    let nan_bank = Bank::new(meta, vec![broken]).unwrap().to_bytes().unwrap();
    let e = Bank::from_bytes(&nan_bank).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    // A state without any centroid.
    let e = Detector::from_state(&bank.meta.members[0].detector, dims, cfa.weights().to_vec()).unwrap_err();
    assert!(e.to_string().contains("at least one centroid"), "{e}");

    let e = sonomaly::merge::merge_banks(&[bank.clone(), again], model.spec()).unwrap_err().to_string();
    assert!(e.contains("CFA banks cannot be merged") && e.contains("fit one bank on all the clips"), "{e}");
}
