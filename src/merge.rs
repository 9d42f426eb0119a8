//! Merging banks fitted on shards of a corpus into one bank (sharded fitting: `sonomaly merge`, the Python
//! package's `merge` and `sonomaly.dask.fit_sharded`).
//!
//! **PatchCore members.** Each shard's memory bank is a coreset of its normal patches (Roth et al., CVPR 2022);
//! the merged memory bank is a coreset of the union of the shards' memory banks, chosen by the library's capped
//! greedy selection ([`crate::detector::patchcore::merge_memory_banks`]): when the union has no more rows than `max_bank_rows`, it is kept whole
//! (a coreset of coresets already holds `coreset_ratio` of the corpus's patches, as a single fit would), otherwise
//! `max_bank_rows` rows are chosen by k-center greedy among `max_bank_rows / coreset_ratio` rows drawn at random
//! (seeded by the member's seed), exactly as a single fit caps its memory bank.
//!
//! **Fitted patch weights.** A fit measures on its clips the weight of the frequency-position feature
//! ([`EmbeddingConfig::position_weight`]) and, with `balance_layers`, the per-layer weights; shards measure
//! slightly different ones. The merged member uses the pooled weights (the root mean square over the shards of the
//! measured norms, weighted by seconds of audio: exact when patches are proportional to seconds) and each shard's
//! memory bank is rescaled to them column by column, so the merged memory bank is in one space.
//!
//! **Calibration.** A merged bank is best calibrated against itself: [`crate::pipeline::Fitter::held_out_against`]
//! scores the shards' normal clips against the merged bank, each without the memory-bank rows that came from it
//! (every row keeps the fingerprint of its clip), and [`crate::pipeline::calibrate`] sets the normalisations and
//! thresholds from those scores (`sonomaly merge --calibrate`, `sonomaly.dask.fit_sharded`). Without the clips,
//! [`merge_banks`] pools the shards' own held-out normal scores ([`MemberMeta::normal_scores`] and
//! [`MemberMeta::normal_curve_peaks`]): each member's robust z normalisation ([`Norm::robust`]) and gamma threshold
//! on the pooled raw scores, the fused held-out scores as the largest member z-score per held-out clip. That is an
//! approximation that errs on the side of missed faults: each shard's held-out scores were measured against that
//! shard's members, which saw fewer normal patches than the merged bank, so normal clips score lower against the
//! merged bank than the pooled scores say (RESULTS.md: MIMII fan in two shards of 5 clips flags 10 of 20 faulty
//! clips pooled, against 17 of 20 calibrated on the clips). Band levels are pooled from the shards' means and
//! spreads (the spreads were floored per shard, so the pooled spread is at least as wide).
//!
//! **PaDiM and the baseline are refused.** A PaDiM bank stores each Gaussian's mean and inverse covariance but not
//! the number of patches nor their sums, so the exact pooled Gaussian cannot be recovered; the baseline stores
//! whole-clip statistics with its own scale. Fit those on all the clips at once.

use crate::backbone::BackboneSpec;
use crate::bank::{front_end_summary, now_iso8601, BandLevels, Bank, BankMeta, MemberMeta};
use crate::detector::patchcore::same_clip;
use crate::detector::Detector;
use crate::embedding::EmbeddingConfig;
use crate::error::{Error, Result};
use crate::pipeline::{calibrate, AnalysedClip, FitConfig, Fitter, Model, Progress, THRESHOLD_QUANTILE};
use crate::threshold::{gamma_threshold, Norm, ThresholdRule};

/// Merges banks fitted on shards of one corpus (same backbone, front end and members) into one bank; see the
/// module documentation for the rules and the calibration approximation. `spec` is the backbone's spec (layer
/// widths, to rescale per-layer weights). Clip counts, seconds and held-out scores add up; the memory banks are
/// merged by coreset. The result has a fresh creation time and checksum.
///
/// # Errors
/// [`Error::InvalidInput`] naming what is wrong: fewer than two banks; banks of version 1 (raw distances);
/// banks that differ in backbone, front end, member layout, detector parameters, embedding or threshold rule
/// (naming the bank and the field, with both values); PaDiM or baseline members (their state cannot be pooled
/// exactly); or a calibration that cannot be recomputed.
pub fn merge_banks(banks: &[Bank], spec: &BackboneSpec) -> Result<Bank> {
    if banks.len() < 2 {
        return Err(Error::invalid(format!("merging needs at least two banks, got {}", banks.len())));
    }
    let first = &banks[0];
    for (b, bank) in banks.iter().enumerate() {
        if !bank.is_z_scored() {
            return Err(Error::invalid(format!(
                "bank {} is of format version 1 (raw distances, no held-out calibration per member): refit it with \
                 this version before merging",
                b + 1
            )));
        }
        check_same(first, bank, b + 1)?;
    }
    // A clip fitted in two shards would count twice (clips, seconds, band levels, calibration): refuse banks that
    // share clips, as the rows' sources tell (banks written before sources were kept cannot be checked).
    let clips: Vec<std::collections::HashSet<u64>> = banks
        .iter()
        .map(|b| b.detectors.iter().flat_map(|d| d.row_sources().iter().map(|s| s >> 8)).collect())
        .collect();
    for j in 1..banks.len() {
        for i in 0..j {
            let shared = clips[i].intersection(&clips[j]).count();
            if shared > 0 {
                return Err(Error::invalid(format!(
                    "bank {} and bank {} were fitted on {shared} of the same clips: each clip must be in one shard \
                     only (a bank merged with itself, or overlapping shards, would count those clips twice)",
                    i + 1,
                    j + 1
                )));
            }
        }
    }
    let n_members = first.meta.members.len();
    let seconds: Vec<f64> = banks.iter().map(|b| b.meta.seconds_fitted.max(1e-9)).collect();
    let mut members = Vec::with_capacity(n_members);
    let mut detectors = Vec::with_capacity(n_members);
    for i in 0..n_members {
        let shard_members: Vec<&MemberMeta> = banks.iter().map(|b| &b.meta.members[i]).collect();
        let m0 = shard_members[0];
        let embedding = pooled_embedding(&shard_members, &seconds);
        let columns = column_scales_target(&embedding, spec, m0.dims)?;
        let dims = m0.dims;
        let mut parts = Vec::with_capacity(banks.len());
        for (b, bank) in banks.iter().enumerate() {
            let own = column_scales_target(&shard_members[b].embedding, spec, dims)?;
            let scale: Vec<f32> =
                columns.iter().zip(&own).map(|(&t, &o)| if o != 0.0 && t != 0.0 { t / o } else { 1.0 }).collect();
            parts.push((&bank.detectors[i], scale));
        }
        let merged = Detector::merge(&m0.detector, &parts).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("member '{}': {m}", m0.name)),
            e => e,
        })?;
        detectors.push(merged);
        let scores: Vec<f32> = shard_members.iter().flat_map(|m| m.normal_scores.scores.iter().copied()).collect();
        let peaks: Vec<f32> = shard_members.iter().flat_map(|m| m.normal_curve_peaks.scores.iter().copied()).collect();
        let quantile = if m0.normal_scores.quantile > 0.0 { m0.normal_scores.quantile } else { THRESHOLD_QUANTILE };
        members.push(MemberMeta {
            name: m0.name.clone(),
            detector: m0.detector.clone(),
            dims,
            state_rows: 0,
            embedding,
            score_norm: Norm::robust(&scores)?,
            map_norm: Norm::robust(&peaks)?,
            normal_scores: gamma_threshold(&scores, quantile)?,
            normal_curve_peaks: gamma_threshold(&peaks, quantile)?,
        });
    }
    // Fused held-out scores: per held-out clip (the same order in every member of a shard), the largest member
    // z-score; the temporal curve's peak in z is the largest member's normalised raw peak (z is increasing).
    let units = members[0].normal_scores.scores.len();
    if members.iter().any(|m| m.normal_scores.scores.len() != units || m.normal_curve_peaks.scores.len() != units) {
        return Err(Error::invalid("the members' held-out scores do not line up: a bank is damaged or hand-edited"));
    }
    let fused_scores: Vec<f32> = (0..units)
        .map(|k| members.iter().map(|m| m.score_norm.z(m.normal_scores.scores[k])).fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let fused_curve_peaks: Vec<f32> = (0..units)
        .map(|k| members.iter().map(|m| m.map_norm.z(m.normal_curve_peaks.scores[k])).fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let ThresholdRule::RobustZ { clip_z, segment_z } = first.meta.threshold_rule else {
        unreachable!("checked above: every bank is z-scored")
    };
    let band_limit_hz = banks
        .iter()
        .filter_map(|b| b.meta.band_limit_hz)
        .fold(None, |a: Option<f32>, v| Some(a.map_or(v, |a| a.min(v))));
    let meta = BankMeta {
        format: String::new(),
        version: 0,
        writer: String::new(),
        front_end: first.meta.front_end.clone(),
        backbone: first.meta.backbone.clone(),
        band_limit_hz,
        clips_fitted: banks.iter().map(|b| b.meta.clips_fitted).sum(),
        seconds_fitted: banks.iter().map(|b| b.meta.seconds_fitted).sum(),
        members,
        fused_scores,
        fused_curve_peaks,
        threshold_rule: first.meta.threshold_rule,
        threshold: clip_z,
        segment_threshold: segment_z,
        band_levels: pooled_band_levels(banks),
        created: now_iso8601(),
        data_sha256: String::new(),
    };
    Bank::new(meta, detectors)
}

/// Refuses `bank` (number `which`, from 1) if it cannot be merged with `first`, naming what differs.
fn check_same(first: &Bank, bank: &Bank, which: usize) -> Result<()> {
    let (a, b) = (&first.meta, &bank.meta);
    let differ = |what: &str, x: String, y: String| {
        Err(Error::invalid(format!(
            "bank {which} cannot be merged with bank 1: {what} differs ({x} in bank 1, {y} in bank {which})"
        )))
    };
    // The fields of two configs that differ, named: `seed 0 in bank 1, 5 in bank 2`.
    let fields = |what: &str, x: serde_json::Value, y: serde_json::Value| -> Result<()> {
        if x == y {
            return Ok(());
        }
        let diffs: Vec<String> = match (&x, &y) {
            (serde_json::Value::Object(mx), serde_json::Value::Object(my)) => mx
                .keys()
                .chain(my.keys().filter(|k| !mx.contains_key(*k)))
                .filter(|k| mx.get(*k) != my.get(*k))
                .map(|k| {
                    let show = |v: Option<&serde_json::Value>| v.map_or("unset".to_string(), |v| v.to_string());
                    format!("{k} {} in bank 1, {} in bank {which}", show(mx.get(k)), show(my.get(k)))
                })
                .collect(),
            _ => vec![format!("{x} in bank 1, {y} in bank {which}")],
        };
        Err(Error::invalid(format!("bank {which} cannot be merged with bank 1: {what} differs: {}", diffs.join("; "))))
    };
    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
    }
    if a.backbone.sha256 != b.backbone.sha256 || a.backbone.name != b.backbone.name {
        return differ(
            "the backbone",
            format!("'{}' sha256 {}", a.backbone.name, &a.backbone.sha256[..a.backbone.sha256.len().min(12)]),
            format!("'{}' sha256 {}", b.backbone.name, &b.backbone.sha256[..b.backbone.sha256.len().min(12)]),
        );
    }
    if a.front_end != b.front_end {
        return differ("the front end", front_end_summary(&a.front_end), front_end_summary(&b.front_end));
    }
    fields("the threshold rule", json(&a.threshold_rule), json(&b.threshold_rule))?;
    if a.members.len() != b.members.len() {
        let names = |m: &BankMeta| m.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>().join(" + ");
        return differ("the member layout", names(a), names(b));
    }
    for (x, y) in a.members.iter().zip(&b.members) {
        if x.name != y.name {
            return differ("a member's layers", x.name.clone(), y.name.clone());
        }
        fields(&format!("the detector of member '{}'", x.name), json(&x.detector), json(&y.detector))?;
        if x.dims != y.dims {
            return differ(
                &format!("the patch dimension of member '{}'", x.name),
                x.dims.to_string(),
                y.dims.to_string(),
            );
        }
        let plain =
            |e: &EmbeddingConfig| EmbeddingConfig { layer_weights: Vec::new(), position_weight: 0.0, ..e.clone() };
        fields(
            &format!("the embedding of member '{}'", x.name),
            json(&plain(&x.embedding)),
            json(&plain(&y.embedding)),
        )?;
    }
    Ok(())
}

/// The shards' embedding with pooled fitted weights: each weight is the inverse (layers) or a multiple (position)
/// of a root mean square norm measured on the shard, so the pooled norm is the seconds-weighted root mean square
/// of the shards' norms.
fn pooled_embedding(members: &[&MemberMeta], seconds: &[f64]) -> EmbeddingConfig {
    let mut e = members[0].embedding.clone();
    let total: f64 = seconds.iter().sum();
    if !e.layer_weights.is_empty() && members.iter().all(|m| m.embedding.layer_weights.len() == e.layer_weights.len()) {
        e.layer_weights = (0..e.layer_weights.len())
            .map(|l| {
                // weight = 1 / rms, so rms^2 = 1 / weight^2.
                let ms: f64 = members
                    .iter()
                    .zip(seconds)
                    .map(|(m, s)| s / (m.embedding.layer_weights[l] as f64).powi(2).max(1e-30))
                    .sum::<f64>()
                    / total;
                (1.0 / ms.sqrt()) as f32
            })
            .collect();
    }
    if e.position_weight > 0.0 {
        let ms: f64 =
            members.iter().zip(seconds).map(|(m, s)| s * (m.embedding.position_weight as f64).powi(2)).sum::<f64>()
                / total;
        e.position_weight = ms.sqrt() as f32;
    }
    e
}

/// The multiplier each patch column carries under embedding `e`: the layer weight of its layer (1 without
/// weights), and the position weight for the frequency-position column.
fn column_scales_target(e: &EmbeddingConfig, spec: &BackboneSpec, dims: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(dims);
    let layer_dims = e.layer_dims(spec);
    for (l, &c) in layer_dims.iter().enumerate() {
        out.extend(std::iter::repeat_n(e.layer_weights.get(l).copied().unwrap_or(1.0), c));
    }
    if e.frequency_position {
        out.push(if e.position_weight > 0.0 { e.position_weight } else { 1.0 });
    }
    if out.len() != dims {
        return Err(Error::invalid(format!(
            "the backbone '{}' gives {}-dimensional patches for layers {}, but the bank's have {dims}: merge with the \
             backbone the banks were fitted with",
            spec.name,
            out.len(),
            e.layers.join(",")
        )));
    }
    Ok(out)
}

/// Band levels pooled from the shards' per-band means and spreads (clip-weighted; within- plus between-shard
/// variance). `None` if a bank has none.
fn pooled_band_levels(banks: &[Bank]) -> Option<BandLevels> {
    let levels: Vec<(&BandLevels, f64)> = banks
        .iter()
        .map(|b| b.meta.band_levels.as_ref().map(|l| (l, b.meta.clips_fitted as f64)))
        .collect::<Option<_>>()?;
    let m = levels[0].0.mean.len();
    if levels.iter().any(|(l, _)| l.mean.len() != m || l.std.len() != m) {
        return None;
    }
    let n: f64 = levels.iter().map(|(_, c)| c).sum();
    let mut mean = vec![0f32; m];
    let mut std = vec![0f32; m];
    for b in 0..m {
        let mu = levels.iter().map(|(l, c)| c * l.mean[b] as f64).sum::<f64>() / n;
        let ss: f64 = levels
            .iter()
            .map(|(l, c)| (c - 1.0).max(0.0) * (l.std[b] as f64).powi(2) + c * (l.mean[b] as f64 - mu).powi(2))
            .sum();
        let floor = levels.iter().map(|(l, _)| l.std[b]).fold(f32::INFINITY, f32::min) as f64;
        mean[b] = mu as f32;
        std[b] = (ss / (n - 1.0).max(1.0)).sqrt().max(floor) as f32;
    }
    Some(BandLevels { mean, std })
}

/// The shard (index into `shards`) whose memory banks hold rows of the clip with fingerprint `fingerprint`
/// ([`crate::pipeline::clip_fingerprint`]), if any.
pub fn shard_of(shards: &[Bank], fingerprint: u64) -> Option<usize> {
    shards.iter().position(|b| b.detectors.iter().any(|d| d.row_sources().iter().any(|&s| same_clip(s, fingerprint))))
}

/// A merged bank calibrated on normal clips (the shards' own, best; see the module documentation): the clips are
/// grouped by the shard that gave rows of them ([`shard_of`]), and each group is scored against `merged` with its
/// own clips' rows left out and replaced from that group only ([`Fitter::held_out_against`]), as leave-one-out
/// refits of that shard would see them (RESULTS.md, "Sharded fits": pooling the replacements over all the shards'
/// clips instead flags more faults than those refits do). Clips of no shard are scored as they are. `model` must
/// be prepared for `merged`.
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than two clips, clips analysed for other members, a model not prepared for
/// the bank, or held-out scores that are all 0; [`Error::Cancelled`] if `progress` returned `false`.
pub fn calibrate_merged(
    merged: &Bank,
    shards: &[Bank],
    model: &Model,
    clips: Vec<AnalysedClip>,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Bank> {
    if clips.len() < 2 {
        return Err(Error::invalid(format!(
            "calibrating needs at least two normal recordings that can be read, got {}",
            clips.len()
        )));
    }
    let total = clips.len();
    let mut groups: Vec<Vec<AnalysedClip>> = (0..=shards.len()).map(|_| Vec::new()).collect();
    for c in clips {
        let g = shard_of(shards, c.fingerprint()).unwrap_or(shards.len());
        groups[g].push(c);
    }
    let mut held = Vec::with_capacity(total);
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let mut fitter = Fitter::new(model, FitConfig::for_bank(merged))?;
        for c in group {
            fitter.add_analysed(c)?;
        }
        let before = held.len();
        let part = fitter.held_out_against(model, merged, &mut |_| {
            progress(Progress { stage: "calibrating", done: before, total })
        })?;
        held.extend(part);
        if !progress(Progress { stage: "calibrating", done: held.len(), total }) {
            return Err(Error::Cancelled);
        }
    }
    calibrate(merged, &held)
}
