//! A clip scored in parts (ranges of its analysis windows, as the page's pool of workers scores it) and merged
//! gives exactly what scoring it whole gives: the same score, members, map, curve and segments, bit for bit.

use sonomaly::audio::{decode_file, to_mono, ChannelSelect};
use sonomaly::bank::Bank;
use sonomaly::pipeline::{
    score_clip, score_clip_from_parts, score_window_range, score_window_share, window_count, ClipResult, Model,
    WindowPart, WINDOW_BATCH,
};

fn demo(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/demo").join(name)
}

/// The demo bank (EfficientAT mn04: log-mel patches and the network's features.12 + features.15, fused) with the
/// default model prepared for it, and `seconds` of the demo anomalous clip followed by the normal one, repeated.
fn setup(seconds: usize) -> (Model, Bank, Vec<f32>, u32) {
    let bank = Bank::from_bytes(&std::fs::read(demo("fan-demo.bank")).unwrap()).unwrap();
    let mut model = Model::embedded_default().unwrap();
    model.prepare_for(&bank).unwrap();
    let mut parts = Vec::new();
    let mut sr = 0;
    for name in ["fan-abnormal.wav", "fan-normal.wav"] {
        let a = decode_file(&demo(name)).unwrap();
        sr = a.sample_rate;
        parts.push(to_mono(&a, ChannelSelect::Mix).unwrap());
    }
    let x: Vec<f32> = parts.iter().flatten().copied().cycle().take(seconds * sr as usize).collect();
    (model, bank, x, sr)
}

fn merged(model: &Model, bank: &Bank, x: &[f32], sr: u32, cuts: &[usize]) -> ClipResult {
    let mut parts: Vec<Vec<WindowPart>> = Vec::new();
    for r in cuts.windows(2) {
        parts.extend(score_window_range(model, bank, x, sr, r[0]..r[1]).unwrap());
    }
    score_clip_from_parts(model, bank, x, sr, &parts).unwrap()
}

/// The shares `0..shares` of the clip's windows, as the page's workers score them, merged.
fn merged_shares(model: &Model, bank: &Bank, x: &[f32], sr: u32, shares: usize) -> ClipResult {
    let mut parts: Vec<Vec<WindowPart>> = Vec::new();
    let mut next = 0;
    for j in 0..shares {
        let (n, range, p) = score_window_share(model, bank, x, sr, j, shares).unwrap();
        assert_eq!(range.start, next, "share {j} of {shares}");
        assert!(range.start % WINDOW_BATCH == 0 || range.is_empty());
        assert_eq!(p.len(), range.len());
        next = range.end;
        parts.extend(p);
        if j + 1 == shares {
            assert_eq!(next, n, "the shares cover the clip");
        }
    }
    score_clip_from_parts(model, bank, x, sr, &parts).unwrap()
}

fn assert_bit_identical(r: &ClipResult, whole: &ClipResult, what: &str) {
    assert_eq!(r.score.to_bits(), whole.score.to_bits(), "{what}");
    assert_eq!(r.members, whole.members, "{what}");
    assert_eq!(r.map.len(), whole.map.len());
    assert!(r.map.iter().zip(&whole.map).all(|(a, b)| a.to_bits() == b.to_bits()), "map, {what}");
    assert!(r.curve.iter().zip(&whole.curve).all(|(a, b)| a.to_bits() == b.to_bits()), "curve, {what}");
    assert_eq!(r.segments, whole.segments, "{what}");
    assert_eq!(r.logmel, whole.logmel);
    assert_eq!((r.frames, r.duration_s, r.is_anomaly), (whole.frames, whole.duration_s, whole.is_anomaly));
    assert_eq!(r.level_distance, whole.level_distance);
}

#[test]
fn a_clip_scored_in_window_ranges_and_merged_equals_the_clip_scored_whole() {
    let (model, bank, x, sr) = setup(60);
    let n = window_count(&model, &bank, &x, sr).unwrap();
    assert_eq!(n, 11, "60 s in windows of 10 s every 5 s");
    let whole = score_clip(&model, &bank, &x, sr).unwrap();
    for cuts in [vec![0, 4, 8, n], vec![0, 8, n], vec![0, n]] {
        assert_bit_identical(&merged(&model, &bank, &x, sr, &cuts), &whole, &format!("cuts {cuts:?}"));
    }
    // Shares of whole batches, as the page's pool deals them out (4 shares of 3 batches: one is empty).
    for shares in [1, 2, 3, 4] {
        assert_bit_identical(&merged_shares(&model, &bank, &x, sr, shares), &whole, &format!("{shares} shares"));
    }
    // A clip of one window: one part.
    let (model, bank, short, sr) = setup(10);
    assert_eq!(window_count(&model, &bank, &short, sr).unwrap(), 1);
    let r = merged(&model, &bank, &short, sr, &[0, 1]);
    let whole = score_clip(&model, &bank, &short, sr).unwrap();
    assert_eq!((r.score.to_bits(), &r.map), (whole.score.to_bits(), &whole.map));
}

#[test]
fn parts_that_do_not_fit_the_clip_are_refused_in_plain_words() {
    let (model, bank, x, sr) = setup(30);
    let n = window_count(&model, &bank, &x, sr).unwrap();
    assert_eq!(n, 5);
    let e = score_window_range(&model, &bank, &x, sr, 1..n).unwrap_err().to_string();
    assert!(e.contains(&format!("start at a multiple of {WINDOW_BATCH}")), "{e}");
    let e = score_window_range(&model, &bank, &x, sr, 4..9).unwrap_err().to_string();
    assert!(e.contains("clip of 5 windows"), "{e}");
    let mut parts = score_window_range(&model, &bank, &x, sr, 0..4).unwrap();
    let e = score_clip_from_parts(&model, &bank, &x, sr, &parts).unwrap_err().to_string();
    assert!(e.contains("parts of 4 windows, but the clip has 5"), "{e}");
    parts.extend(score_window_range(&model, &bank, &x, sr, 4..5).unwrap());
    parts[2][1].rows.pop();
    let e = score_clip_from_parts(&model, &bank, &x, sr, &parts).unwrap_err().to_string();
    assert!(e.contains("window 2") && e.contains("member 1"), "{e}");
    let e = score_window_share(&model, &bank, &x, sr, 2, 2).unwrap_err().to_string();
    assert!(e.contains("share 2 of 2"), "{e}");
    // Too short a clip: the error scoring it whole gives.
    let e = window_count(&model, &bank, &x[..1000], sr).unwrap_err().to_string();
    assert!(e.contains("too short to judge"), "{e}");
}
