//! The command line: one module per command (`fit`, `score`, `mix`, `eval`, `merge`, `info`), the options and
//! helpers they share here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use sonomaly::audio::{ChannelSelect, MonoStream, TargetRate};
use sonomaly::bank::Bank;
use sonomaly::detector::patchcore::DEFAULT_MAX_BANK_ROWS;
use sonomaly::detector::{DetectorConfig, DetectorOptions};
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::pipeline::{
    score_recording, AnalysedClip, FitConfig, FitPreset, Fitter, MemberConfig, MemberScore, Model, Progress, Recording,
    Segment, StreamVerdict, LONG_RECORDING_S,
};

mod eval;
mod fit;
mod info;
mod merge;
mod mix;
mod score;

/// Audio anomaly detection that shows where and when a sound is abnormal.
#[derive(Parser)]
#[command(name = "sonomaly", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fit a bank on recordings of normal sound.
    Fit(fit::FitArgs),
    /// Score recordings against a bank: one JSON object per line on stdout.
    Score(score::ScoreArgs),
    /// Build an EnvMix-style set: background clips, some with one event at a known onset and SNR, and masks.
    Mix(mix::MixArgs),
    /// Evaluate: fit on normal files (or load a bank), score a labelled test CSV, report the paper's metrics.
    Eval(eval::EvalArgs),
    /// Merge banks fitted on shards of one corpus into one bank (PatchCore members; see the README).
    Merge(merge::MergeArgs),
    /// Describe a bank file.
    Info(info::InfoArgs),
}

/// How patches are made and which detector is fitted: shared by `fit` and `eval`.
#[derive(clap::Args)]
struct FitOptions {
    /// Backbone folder with model.onnx and spec.json (default: the embedded EfficientAT mn04_as; models/aisfx-cnn14
    /// is the other shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Detector.
    #[arg(long, default_value = "patchcore", value_parser = detector_names())]
    detector: String,
    /// Which sounds the bank is for, choosing its members: `machine` (PatchCore on log-mel patches),
    /// `environment` (PatchCore on the backbone's recommended layers) or `both` (the two, fused by their
    /// largest z-score) [default: both]. Conflicts with --layers.
    #[arg(long, conflicts_with = "layers")]
    preset: Option<String>,
    /// Layers that make a member's patches, comma-separated (backbone outputs and/or `logmel`); repeat the
    /// option for several members, fused by their largest z-score (e.g. `--layers logmel --layers
    /// features.12,features.15`).
    #[arg(long)]
    layers: Vec<String>,
    /// Spectrogram frames (and mel bins) per patch: one value for every member, or one per member, comma-separated
    /// [default: a preset's members take the spec's strides (the default model: 6 for the log-mel member and its
    /// patch_grid_stride for the network member); 4 for a member given by --layers].
    #[arg(long)]
    grid_stride: Option<String>,
    /// PatchCore: fraction of normal patches kept in the memory bank.
    #[arg(long, default_value_t = 0.1)]
    coreset_ratio: f32,
    /// PatchCore: largest memory bank, rows; beyond it the coreset is chosen among a random subset of the
    /// patches, so fitting time grows linearly with the audio. `none`: no cap, the exact greedy over all
    /// patches (its time grows with the square of the audio).
    #[arg(long, default_value_t = BankCap(Some(DEFAULT_MAX_BANK_ROWS)), value_parser = parse_bank_cap)]
    max_bank_rows: BankCap,
    /// PaDiM: channels kept (random subset, capped at the patch dimension).
    #[arg(long, default_value_t = 100)]
    padim_d: usize,
    /// Seed of the detector (random projection, first coreset centre, PaDiM channels); in `eval` also of the
    /// bootstrap and the random faithfulness regions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Divide each clip by its peak before the front end (aisfx's own preprocessing).
    #[arg(long)]
    peak_normalize: bool,
    /// Scale each layer to unit RMS norm on the normal patches (so no layer dominates the distances).
    #[arg(long)]
    balance_layers: bool,
    /// Do not append the frequency position to the patches (patches may then match normal patches of any
    /// band).
    #[arg(long)]
    no_frequency_position: bool,
    /// Channel to analyse: `mix` or a 0-based index.
    #[arg(long, default_value = "mix")]
    channel: String,
    /// Clip threshold in robust z units of the held-out normal clips [default: 2].
    #[arg(long, allow_hyphen_values = true)]
    clip_z: Option<f32>,
    /// Segment threshold in robust z units of the held-out normal curve peaks [default: 2].
    #[arg(long, allow_hyphen_values = true)]
    segment_z: Option<f32>,
}

impl FitOptions {
    /// The backbone, planned for the members these options ask for, and the fit configuration.
    fn model_and_config(&self) -> Result<(Model, FitConfig)> {
        let mut model = load_model(self.model.as_deref())?;
        let mut members = if self.layers.is_empty() {
            let preset = FitPreset::parse(self.preset.as_deref().unwrap_or(sonomaly::pipeline::DEFAULT_PRESET))?;
            preset.members(model.spec())?
        } else {
            self.layers
                .iter()
                .map(|l| Ok(MemberConfig::patchcore(EmbeddingConfig::default().with_layers(l)?)))
                .collect::<Result<Vec<_>>>()?
        };
        let detector = DetectorConfig::from_name(
            &self.detector,
            &DetectorOptions {
                coreset_ratio: self.coreset_ratio,
                max_bank_rows: self.max_bank_rows.0,
                seed: self.seed,
                padim_d: self.padim_d,
            },
        )?;
        if let Some(list) = &self.grid_stride {
            let strides = list
                .split(',')
                .map(|v| v.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("--grid-stride: '{v}' is not a number")))
                .collect::<Result<Vec<_>>>()?;
            if strides.len() != 1 && strides.len() != members.len() {
                bail!(
                    "--grid-stride gives {} values for {} members: give one, or one per member",
                    strides.len(),
                    members.len()
                );
            }
            for (k, m) in members.iter_mut().enumerate() {
                m.embedding.grid_stride = strides[k.min(strides.len() - 1)];
            }
        }
        for m in &mut members {
            m.embedding.balance_layers = self.balance_layers;
            m.embedding.frequency_position = !self.no_frequency_position;
            m.detector = detector.clone();
        }
        let mut config = FitConfig::with_members(members);
        for (flag, z, what) in [("--clip-z", self.clip_z, "clips"), ("--segment-z", self.segment_z, "curve peaks")] {
            if let Some(z) = z.filter(|z| !(z.is_finite() && *z >= 0.0)) {
                bail!(
                    "{flag} must be 0 or more z units, got {z}: below 0 the threshold is under the median of the \
                     normal {what}, so most normal sound would be flagged"
                );
            }
        }
        if let Some(z) = self.clip_z {
            config.clip_z = z;
        }
        if let Some(z) = self.segment_z {
            config.segment_z = z;
        }
        model.set_embeddings(config.embeddings())?;
        model.set_peak_normalize(self.peak_normalize)?;
        Ok((model, config))
    }
}

const AUDIO_EXTENSIONS: [&str; 6] = ["wav", "flac", "ogg", "mp3", "oga", "wave"];

/// Audio files of a folder and its subfolders, sorted.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, searched: &mut std::collections::HashSet<PathBuf>) -> Result<()> {
    // A folder reached again (a symbolic link to a folder above it or beside it) is searched once: a link loop
    // would otherwise be followed without end.
    let key = std::fs::canonicalize(dir).with_context(|| format!("reading folder {}", dir.display()))?;
    if !searched.insert(key) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for f in entries {
        if f.is_dir() {
            walk(&f, out, searched)?;
        } else if f.is_file()
            && f.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            // Regular files only: a pipe or a device named like audio would block the run.
            out.push(f);
        }
    }
    Ok(())
}

/// Files and folders (searched recursively for audio files) to a list of files without repeats.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut searched = std::collections::HashSet::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found, &mut searched)?;
            if found.is_empty() {
                bail!("folder {} holds no audio file ({})", p.display(), AUDIO_EXTENSIONS.join(", "));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::with_capacity(out.len());
    for f in out {
        let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
        if seen.insert(key) {
            unique.push(f);
        } else {
            eprintln!("note: {} is listed more than once; it is used once", f.display());
        }
    }
    Ok(unique)
}

/// Refuses an output path that would destroy something: a folder, a device, a file that is not a bank (even
/// with --force), an input file, or a place whose folder does not exist.
fn check_out(out: &Path, force: bool, inputs: &[PathBuf]) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(out) {
        if !meta.is_file() {
            bail!("{} exists and is not a regular file; choose another --out", out.display());
        }
        if !force {
            bail!("{} already exists; pass --force to overwrite it or choose another --out", out.display());
        }
        if !sonomaly::bank::file_looks_like_bank(out) {
            bail!("{} exists and is not a sonomaly bank; refusing to overwrite it even with --force", out.display());
        }
        let target = std::fs::canonicalize(out).ok();
        if inputs.iter().any(|i| std::fs::canonicalize(i).ok() == target) {
            bail!("{} is also an input file; choose another --out", out.display());
        }
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("the folder of --out, {}, does not exist", parent.display());
    }
    // A folder the bank cannot be written to is found now, not after the fit.
    tempfile::Builder::new().prefix(".sonomaly-write-test").tempfile_in(parent).with_context(|| {
        format!("the folder of --out, {}, cannot be written to; choose another --out", parent.display())
    })?;
    Ok(())
}

/// Writes a bank the command made to `out` ([`sonomaly::bank::write_file_atomically`]); if that fails (the disk
/// is full, the folder was removed), the bank is written to the temporary folder instead, so that the work is
/// not lost, and the error says where it is.
fn save_bank(out: &Path, bytes: &[u8]) -> Result<()> {
    let Err(e) = sonomaly::bank::write_file_atomically(out, bytes) else { return Ok(()) };
    let name = out.file_name().map_or_else(|| "bank.safetensors".into(), |n| n.to_string_lossy().into_owned());
    let kept = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .suffix(".safetensors")
        .tempfile()
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes).and_then(|_| f.as_file().sync_all()).map(|_| f))
        .and_then(|f| f.keep().map_err(|e| e.error));
    match kept {
        Ok((_, path)) => bail!("{e}; the bank was saved to {} instead: move it where you want it", path.display()),
        Err(e2) => bail!("{e}; saving it to the temporary folder failed too ({e2}): the bank is lost"),
    }
}

fn channel(s: &str) -> Result<ChannelSelect> {
    if s.eq_ignore_ascii_case("mix") {
        return Ok(ChannelSelect::Mix);
    }
    s.parse::<usize>()
        .map(ChannelSelect::Channel)
        .map_err(|_| anyhow::anyhow!("--channel must be 'mix' or a 0-based channel number, got '{s}'"))
}

fn load_model(dir: Option<&Path>) -> Result<Model> {
    Ok(match dir {
        Some(d) => Model::from_dir(d)?,
        None => Model::embedded_default()?,
    })
}

/// The model to score `bank` with: the folder given, else the embedded model the bank was fitted with (banks of
/// the aisfx CNN14 keep working), else the default (which then refuses the bank naming both backbones).
fn model_for_bank(dir: Option<&Path>, bank: &Bank) -> Result<Model> {
    if dir.is_none() {
        if let Some(m) = Model::embedded_for(&bank.meta.backbone) {
            return Ok(m?);
        }
    }
    load_model(dir)
}

/// Mono samples of `path` at the file's own rate (later links of a chained stream resampled to it), the
/// decoder's warnings printed on stderr above the progress bar.
fn read_mono(path: &Path, select: ChannelSelect, pb: &ProgressBar) -> sonomaly::Result<(Vec<f32>, u32)> {
    let mut s = MonoStream::open(path, select, TargetRate::FileRate)?;
    let x = s.read_to_end()?;
    print_warnings(&s, pb);
    Ok((x, s.target_sample_rate()))
}

/// An error about file `f` for a line that already names it: without the error kind's prefix ("audio: ",
/// "invalid input: ", ...) and without the file's name repeated at its start.
fn about_file(f: &Path, e: &dyn std::fmt::Display) -> String {
    if sonomaly::bank::file_looks_like_bank(f) {
        return "this is a bank file, not a recording: give banks with --bank".into();
    }
    let mut m = e.to_string();
    for prefix in ["audio: ", "invalid input: ", "model: ", "bank: "] {
        if let Some(rest) = m.strip_prefix(prefix) {
            m = rest.to_string();
            break;
        }
    }
    let path = f.display().to_string();
    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for p in [path, name] {
        if !p.is_empty() {
            if let Some(rest) = m.strip_prefix(&format!("{p}: ")) {
                return rest.to_string();
            }
        }
    }
    m
}

/// The decoder's warnings (a file shorter than its header says, repaired headers, skipped packets) on stderr.
fn print_warnings(s: &MonoStream, pb: &ProgressBar) {
    let w = s.warnings();
    if !w.is_empty() {
        pb.suspend(|| w.iter().for_each(|w| eprintln!("warning: {w}")));
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {wide_msg} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Decodes and analyses `files` in parallel (a progress bar) for `model`'s members, a few files per thread at a
/// time, and hands each clip to `each` in the files' order as soon as its batch is analysed, so that one batch of
/// clips is held at a time. Files that cannot be used, or that `each` refuses, are reported on stderr, one line
/// each, and counted (the count is returned).
///
/// # Errors
/// An input/output error from `each` (spilling the fit's patches to a full disk, say) stops the whole run.
fn analyse_files(
    files: &[PathBuf],
    select: ChannelSelect,
    model: &Model,
    each: &mut dyn FnMut(AnalysedClip) -> sonomaly::Result<()>,
) -> Result<usize> {
    let pb = bar(files.len() as u64, "analysing");
    let mut failed = 0;
    for batch in files.chunks(4 * rayon::current_num_threads()) {
        let analysed: Vec<_> = batch
            .par_iter()
            .map(|f| {
                pb.set_message(f.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
                let r = read_mono(f, select, &pb).and_then(|(x, sr)| Fitter::analyse_clip(model, &x, sr));
                pb.inc(1);
                r
            })
            .collect();
        for (f, r) in batch.iter().zip(analysed) {
            // A file that cannot be read or analysed, or that `each` refuses, is skipped; an input/output error of
            // `each` (the fit's temporary file) is no file's fault and stops the run.
            let e = match r.map(&mut *each) {
                Ok(Ok(())) => continue,
                Ok(Err(e @ sonomaly::Error::Io { .. })) => {
                    pb.finish_and_clear();
                    return Err(e.into());
                }
                Ok(Err(e)) | Err(e) => e,
            };
            failed += 1;
            pb.suspend(|| eprintln!("warning: skipped {}: {}", f.display(), about_file(f, &e)));
        }
        sonomaly::pipeline::release_freed_memory();
    }
    pb.finish_and_clear();
    Ok(failed)
}

/// `n` and `word`, with an `s` unless `n` is 1: `1 clip`, `3 clips`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn load_bank(path: &Path) -> Result<Bank> {
    let bytes = read_bank_file(path)?;
    Bank::from_bytes(&bytes).with_context(|| format!("loading bank {}", path.display()))
}

/// The bytes of the bank file at `path`, refusing what is not a regular file (a device such as /dev/zero or a pipe
/// would be read without end, a folder cannot be read).
fn read_bank_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading bank {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file (a folder, a device or a pipe): give a bank file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading bank {}", path.display()))?;
    if let Some(kind) = audio_kind(&bytes) {
        bail!(
            "{} is a recording ({kind}), not a bank: give a bank file from `sonomaly fit` (to score, the bank \
             after --bank and the recordings as the other arguments)",
            path.display()
        );
    }
    Ok(bytes)
}

/// The container a file's first bytes name, if it is one of the audio formats read here.
fn audio_kind(bytes: &[u8]) -> Option<&'static str> {
    let kinds: [(&[u8], &str); 5] =
        [(b"RIFF", "WAV"), (b"RF64", "WAV"), (b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"ID3", "MP3")];
    kinds.iter().find(|(magic, _)| bytes.starts_with(magic)).map(|(_, k)| *k).or_else(|| {
        // An MP3 without an ID3 tag starts with a frame sync (11 bits set).
        (bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0).then_some("MP3")
    })
}

/// `--max-bank-rows`: a number of rows, or `none`.
#[derive(Debug, Clone, Copy)]
struct BankCap(Option<usize>);

impl std::fmt::Display for BankCap {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "none"),
        }
    }
}

fn parse_bank_cap(s: &str) -> std::result::Result<BankCap, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(BankCap(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(BankCap(Some(n))),
        _ => Err(format!("'{s}' is not a number of rows of at least 1, nor 'none' (no cap)")),
    }
}

/// The detectors' names with a line of help each, as the library lists them.
fn detector_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        DetectorConfig::KINDS.iter().map(|&(name, help)| clap::builder::PossibleValue::new(name).help(help)),
    )
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM while a bank is being written: its temporary file removed (the bank it would have replaced
    // is left as it was), exit status 130. A fit's spilled patches are in an unnamed file the system removes.
    let _ = ctrlc::set_handler(|| {
        sonomaly::bank::remove_partial_files();
        std::process::exit(130);
    });
    let result = match cli.command {
        Command::Fit(a) => fit::fit(a),
        Command::Score(a) => score::run(a),
        Command::Mix(a) => mix::mix(a),
        Command::Eval(a) => eval::eval(a),
        Command::Merge(a) => merge::run(a),
        Command::Info(a) => info::info(&a.bank, a.json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
