//! A recording read from its decoder to the end and scored: whole when it is short, window by window when it is
//! long. The command line (`sonomaly score`) and the page (`Engine.scoreReader`) both score files this way, so a
//! file gets the same verdict and segments in either.

use super::{score_clip, ClipResult, Model, StreamScorer, StreamUpdate, StreamVerdict};
use crate::audio::MonoStream;
use crate::bank::Bank;
use crate::error::Result;

/// Recordings longer than this, seconds, are scored as a stream with bounded memory (no full-length map):
/// those whose header announces more from the start, those without a duration in their header from the moment
/// this much has been decoded.
pub const LONG_RECORDING_S: f64 = 600.0;

/// A recording scored by [`score_recording`].
#[derive(Debug, Clone)]
pub enum Recording {
    /// At most [`LONG_RECORDING_S`]: decoded whole and scored by [`score_clip`]; `samples` is the mono audio at the
    /// stream's target rate.
    Whole { result: ClipResult, samples: Vec<f32> },
    /// Longer: scored window by window by a [`StreamScorer`]; `curve` is the whole temporal curve `[T]` (the
    /// map and log-mel went to the `on_update` callback, window by window).
    Streamed { verdict: StreamVerdict, curve: Vec<f32> },
}

impl Recording {
    /// The verdict (score, thresholds, segments, members), whichever way the recording was scored.
    pub fn verdict(&self) -> StreamVerdict {
        match self {
            Recording::Whole { result, .. } => result.verdict(),
            Recording::Streamed { verdict, .. } => verdict.clone(),
        }
    }
}

/// Reads `stream` to its end and scores it with `model` (prepared for `bank`) at the stream's target rate: whole
/// if it lasts at most [`LONG_RECORDING_S`], else as a stream (from the first chunk when the header announces a
/// longer file, from the moment the limit is passed otherwise), so that memory stays bounded. `on_update` sees
/// each stretch a streamed recording yields (log-mel, map and curve, for display); `on_chunk` the stream after
/// each decoded chunk (progress: [`MonoStream::decoded_s`]).
///
/// # Errors
/// As [`MonoStream::next_chunk`], [`score_clip`] and [`StreamScorer::push`] (a bank with a baseline member cannot
/// score a long recording).
pub fn score_recording(
    model: &Model,
    bank: &Bank,
    stream: &mut MonoStream,
    on_update: &mut dyn FnMut(&StreamUpdate),
    on_chunk: &mut dyn FnMut(&MonoStream),
) -> Result<Recording> {
    let rate = stream.target_sample_rate();
    let limit = (LONG_RECORDING_S * rate as f64) as usize;
    let mut feed = |updates: Vec<StreamUpdate>, curve: &mut Vec<f32>| {
        for u in updates {
            on_update(&u);
            curve.extend_from_slice(&u.curve);
        }
    };
    let mut samples: Vec<f32> = Vec::new();
    let mut streaming: Option<(StreamScorer, Vec<f32>)> = None;
    if stream.duration_s().is_some_and(|d| d > LONG_RECORDING_S) {
        streaming = Some((StreamScorer::new(model, bank, rate)?, Vec::new()));
    }
    while let Some(chunk) = stream.next_chunk()? {
        match &mut streaming {
            Some((scorer, curve)) => feed(scorer.push(model, bank, &chunk)?, curve),
            None => {
                samples.extend_from_slice(&chunk);
                if samples.len() > limit {
                    // No duration in the header, and longer than a short recording: a stream from here on.
                    let mut scorer = StreamScorer::new(model, bank, rate)?;
                    let mut curve = Vec::new();
                    feed(scorer.push(model, bank, &samples)?, &mut curve);
                    samples = Vec::new();
                    streaming = Some((scorer, curve));
                }
            }
        }
        on_chunk(stream);
    }
    match streaming {
        None => {
            samples.shrink_to_fit();
            let result = score_clip(model, bank, &samples, rate)?;
            Ok(Recording::Whole { result, samples })
        }
        Some((mut scorer, mut curve)) => {
            feed(scorer.finish(model, bank)?, &mut curve);
            let verdict = scorer.verdict(model, bank, &curve);
            Ok(Recording::Streamed { verdict, curve })
        }
    }
}
