//! `sonomaly score`: recordings against a bank, one JSON line each.

use super::*;

/// The arguments of `sonomaly score`.
#[derive(clap::Args)]
pub(super) struct ScoreArgs {
    /// Bank file from `sonomaly fit`.
    #[arg(long)]
    pub(super) bank: PathBuf,
    /// Backbone folder (default: the embedded model the bank was fitted with, EfficientAT mn04_as or aisfx CNN14).
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
    /// Write a PNG per file: spectrogram with the anomaly map, score curve, segments.
    #[arg(long)]
    pub(super) heatmap_dir: Option<PathBuf>,
    /// Clip-score threshold instead of the bank's label-free default.
    #[arg(long)]
    pub(super) threshold: Option<f32>,
    /// Add `frames`, `mel_bins`, the anomaly map (`map`, [frames * mel_bins]) and the temporal curve
    /// (`curve`) to each JSON line (files of 10 minutes or less).
    #[arg(long)]
    pub(super) include_map: bool,
    /// Channel to analyse: `mix` or a 0-based index.
    #[arg(long, default_value = "mix")]
    pub(super) channel: String,
    /// Read the paths to score from this file, one per line (blank lines ignored); `-` reads standard
    /// input as it arrives, so a pipe can feed paths one by one and read each file's line when it is done.
    #[arg(long, conflicts_with = "files")]
    pub(super) files_from: Option<PathBuf>,
    /// Recordings or folders of them.
    #[arg(required_unless_present = "files_from")]
    pub(super) files: Vec<PathBuf>,
}

#[derive(Serialize)]
struct ScoreLine<'a> {
    file: String,
    score: f32,
    threshold: f32,
    is_anomaly: bool,
    segments: &'a [Segment],
    segment_threshold: f32,
    duration_s: f64,
    /// `z` or `distance` (banks of format version 1).
    units: &'static str,
    members: &'a [MemberScore],
    /// How far the clip's band levels lie from the normal clips' (in their spreads).
    #[serde(skip_serializing_if = "Option::is_none")]
    level_distance: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_of_distribution: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heatmap: Option<String>,
    /// With --include-map: frames `T`, mel bins `M`, the map `[T * M]` and the curve `[T]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    frames: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mel_bins: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    curve: Option<&'a [f32]>,
}

impl<'a> ScoreLine<'a> {
    /// The line of `file` with verdict `v`, without the heatmap, map or curve.
    fn new(file: &Path, v: &'a StreamVerdict) -> Self {
        ScoreLine {
            file: file.display().to_string(),
            score: v.score,
            threshold: v.threshold,
            is_anomaly: v.is_anomaly,
            segments: &v.segments,
            segment_threshold: v.segment_threshold,
            duration_s: v.duration_s,
            units: v.units,
            members: &v.members,
            level_distance: v.level_distance,
            out_of_distribution: v.out_of_distribution.as_deref(),
            heatmap: None,
            frames: None,
            mel_bins: None,
            map: None,
            curve: None,
        }
    }
}

/// A file decoded and scored whole or, if long, as a stream ([`score_recording`]).
fn score_file(
    path: &Path,
    select: ChannelSelect,
    model: &Model,
    bank: &Bank,
    pb: &ProgressBar,
) -> sonomaly::Result<Recording> {
    // At the file's rate, as the page does: the scorer resamples, and judges only the bands below the file's
    // Nyquist frequency.
    let mut stream = MonoStream::open(path, select, TargetRate::FileRate)?;
    let r = score_recording(model, bank, &mut stream, &mut |_| {}, &mut |_| {})?;
    print_warnings(&stream, pb);
    Ok(r)
}

/// The files `score` reads: listed on the command line, or one per line of a file or standard input (`-`).
enum Paths<'a> {
    Listed(&'a [PathBuf]),
    From(&'a Path),
}

/// The non-blank lines of `list` (`-`: standard input), read lazily, as paths.
fn path_lines(list: &Path) -> Result<Box<dyn Iterator<Item = std::io::Result<PathBuf>> + Send>> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead + Send> = if list == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(list).with_context(|| format!("reading --files-from {}", list.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    Ok(Box::new(reader.lines().filter_map(|l| match l {
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(Ok(PathBuf::from(l.trim_end_matches(['\r', '\n'])))),
        Err(e) => Some(Err(e)),
    })))
}

fn score(
    bank_path: &Path,
    model_dir: Option<&Path>,
    heatmap_dir: Option<&Path>,
    threshold: Option<f32>,
    ch: &str,
    include_map: bool,
    paths: Paths,
) -> Result<i32> {
    let select = channel(ch)?;
    let files = match paths {
        Paths::Listed(files) => expand(files)?,
        Paths::From(_) => Vec::new(),
    };
    let mut bank = load_bank(bank_path)?;
    if let Some(t) = threshold {
        bank.override_threshold(t).context("--threshold")?;
    }
    let mut model = model_for_bank(model_dir, &bank)?;
    model.prepare_for(&bank)?;
    if let Some(d) = heatmap_dir.filter(|d| d.exists() && !d.is_dir()) {
        bail!("--heatmap-dir {} is a file, not a folder: give a folder (it is made if it does not exist)", d.display());
    }
    if let Some(d) = heatmap_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pb = match paths {
        Paths::Listed(_) => bar(files.len() as u64, "scoring"),
        Paths::From(_) => ProgressBar::hidden(),
    };
    let stdout = Mutex::new(std::io::stdout());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let no_heatmap = std::sync::atomic::AtomicUsize::new(0);
    let write_failed = std::sync::atomic::AtomicBool::new(false);
    // One JSON line per file, written whole and flushed at once (a pipe reading lines sees each file when done).
    let emit = |line: &ScoreLine| {
        let json = serde_json::to_string(line).expect("serialisable");
        pb.suspend(|| {
            let mut out = stdout.lock().expect("stdout lock");
            if writeln!(out, "{json}").and_then(|_| out.flush()).is_err() {
                write_failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    };
    let report = |f: &Path, e: &dyn std::fmt::Display| {
        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pb.suspend(|| eprintln!("error: {}: {}", f.display(), about_file(f, e)));
    };
    let one = |i: usize, f: &PathBuf| {
        match score_file(f, select, &model, &bank, &pb) {
            Ok(Recording::Whole { result: r, .. }) => {
                let mut heatmap = heatmap_dir.map(|d| {
                    let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
                    d.join(format!("{i:04}_{stem}.png"))
                });
                if let Some(p) = &heatmap {
                    if let Err(e) = sonomaly::render::save_png(&r, p) {
                        // The line then names no heatmap, and the exit status says that something was not done.
                        no_heatmap.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        pb.suspend(|| eprintln!("warning: {}: heatmap not written: {e}", f.display()));
                        heatmap = None;
                    }
                }
                let v = r.verdict();
                emit(&ScoreLine {
                    heatmap: heatmap.map(|p| p.display().to_string()),
                    frames: include_map.then_some(r.frames),
                    mel_bins: include_map.then_some(r.mel_bins),
                    map: include_map.then_some(r.map.as_slice()),
                    curve: include_map.then_some(r.curve.as_slice()),
                    ..ScoreLine::new(f, &v)
                });
            }
            Ok(Recording::Streamed { verdict: v, .. }) => {
                if heatmap_dir.is_some() || include_map {
                    pb.suspend(|| {
                        eprintln!(
                            "note: {}: longer than {LONG_RECORDING_S} s, scored as a stream: no heatmap or map",
                            f.display()
                        )
                    });
                }
                emit(&ScoreLine::new(f, &v));
            }
            Err(e) => report(f, &e),
        }
        pb.inc(1);
    };
    let total = match paths {
        Paths::Listed(_) => {
            files.par_iter().enumerate().for_each(|(i, f)| one(i, f));
            files.len()
        }
        Paths::From(list) => {
            // Paths are scored as they arrive (rayon takes them from the reader one by one), each line written
            // and flushed when its file is done, so a pipe gets results while it is still sending paths.
            let seen = std::sync::atomic::AtomicUsize::new(0);
            let read_error = Mutex::new(None);
            path_lines(list)?.enumerate().par_bridge().for_each(|(i, p)| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match p {
                    Ok(f) => one(i, &f),
                    Err(e) => *read_error.lock().expect("lock") = Some(e),
                }
            });
            if let Some(e) = read_error.into_inner().expect("lock") {
                bail!("reading the paths from {}: {e}", list.display());
            }
            let n = seen.into_inner();
            if n == 0 {
                bail!("{} gave no path to score (one path per line)", list.display());
            }
            n
        }
    };
    pb.finish_and_clear();
    if write_failed.into_inner() {
        bail!("writing the results to standard output failed (is the disk full or the pipe closed?)");
    }
    let failed = failed.into_inner();
    if failed == total {
        bail!("none of the {total} files could be scored");
    }
    if failed > 0 {
        eprintln!("{failed} of {total} files could not be scored");
        return Ok(3);
    }
    let no_heatmap = no_heatmap.into_inner();
    if no_heatmap > 0 {
        eprintln!("{} of {total} heatmaps could not be written (the scores are complete)", no_heatmap);
        return Ok(3);
    }
    Ok(0)
}

/// Runs `sonomaly score`.
pub(super) fn run(a: ScoreArgs) -> Result<i32> {
    let paths = match &a.files_from {
        Some(list) => Paths::From(list),
        None => Paths::Listed(&a.files),
    };
    score(&a.bank, a.model.as_deref(), a.heatmap_dir.as_deref(), a.threshold, &a.channel, a.include_map, paths)
}
