//! `sonomaly`: fit banks on normal recordings, score recordings, inspect banks.
//!
//! Exit codes: 0 success; 1 nothing could be done (bad bank, model or arguments); 2 usage error;
//! 3 some files of a batch failed (each is reported on stderr, the others were processed).

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::run());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
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
        score_clip, FitConfig, FitPreset, Fitter, MemberConfig, MemberScore, Model, Progress, Segment, StreamScorer,
        StreamVerdict,
    };

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
        Fit {
            /// Where to write the bank file (refuses to overwrite unless --force).
            #[arg(long)]
            out: PathBuf,
            #[command(flatten)]
            patch: FitOptions,
            /// Overwrite --out if it exists.
            #[arg(long)]
            force: bool,
            /// Normal recordings (WAV, FLAC, OGG, MP3) or folders of them.
            #[arg(required = true)]
            files: Vec<PathBuf>,
        },
        /// Score recordings against a bank: one JSON object per line on stdout.
        Score {
            /// Bank file from `sonomaly fit`.
            #[arg(long)]
            bank: PathBuf,
            /// Backbone folder (default: the embedded model the bank was fitted with, EfficientAT mn04_as or aisfx CNN14).
            #[arg(long)]
            model: Option<PathBuf>,
            /// Write a PNG per file: spectrogram with the anomaly map, score curve, segments.
            #[arg(long)]
            heatmap_dir: Option<PathBuf>,
            /// Clip-score threshold instead of the bank's label-free default.
            #[arg(long)]
            threshold: Option<f32>,
            /// Add `frames`, `mel_bins`, the anomaly map (`map`, [frames * mel_bins]) and the temporal curve
            /// (`curve`) to each JSON line (files of 10 minutes or less).
            #[arg(long)]
            include_map: bool,
            /// Channel to analyse: `mix` or a 0-based index.
            #[arg(long, default_value = "mix")]
            channel: String,
            /// Read the paths to score from this file, one per line (blank lines ignored); `-` reads standard
            /// input as it arrives, so a pipe can feed paths one by one and read each file's line when it is done.
            #[arg(long, conflicts_with = "files")]
            files_from: Option<PathBuf>,
            /// Recordings or folders of them.
            #[arg(required_unless_present = "files_from")]
            files: Vec<PathBuf>,
        },
        /// Build an EnvMix-style set: background clips, some with one event at a known onset and SNR, and masks.
        Mix {
            /// Background recordings or folders of them.
            #[arg(long, required = true, num_args = 1..)]
            backgrounds: Vec<PathBuf>,
            /// Event recordings or folders of them.
            #[arg(long, required = true, num_args = 1..)]
            events: Vec<PathBuf>,
            /// Output folder (fit/, test/, test/masks/, fit.csv, test.csv, split.json).
            #[arg(long)]
            out: PathBuf,
            /// Clip length, seconds.
            #[arg(long, default_value_t = 10.0)]
            length: f64,
            /// Sample rate of the written clips, Hz.
            #[arg(long, default_value_t = 16000)]
            sample_rate: u32,
            /// Normal clips for fitting.
            #[arg(long, default_value_t = 30)]
            fit_clips: usize,
            /// Normal test clips.
            #[arg(long, default_value_t = 30)]
            test_normal: usize,
            /// Anomalous test clips (spread evenly over the SNRs).
            #[arg(long, default_value_t = 60)]
            test_anomalous: usize,
            /// Event-to-background SNRs in dB, comma-separated.
            #[arg(long, default_value = "-6,0,6", allow_hyphen_values = true)]
            snr: String,
            /// Seed of every random choice.
            #[arg(long, default_value_t = 0)]
            seed: u64,
            /// Backbone folder whose front end the masks use (default: the embedded EfficientAT mn04_as).
            #[arg(long)]
            model: Option<PathBuf>,
        },
        /// Evaluate: fit on normal files (or load a bank), score a labelled test CSV, report the paper's metrics.
        Eval {
            /// Normal recordings for fitting: files, folders, or a CSV with a `path` column (relative to it).
            #[arg(long, num_args = 1.., required_unless_present = "bank")]
            fit: Vec<PathBuf>,
            /// Test list: CSV with `path,label` and optionally `onset_s,offset_s,snr_db,mask`.
            #[arg(long)]
            test: PathBuf,
            /// Use this bank instead of fitting one.
            #[arg(long, conflicts_with = "fit")]
            bank: Option<PathBuf>,
            #[command(flatten)]
            patch: FitOptions,
            /// Bootstrap resamples for the 95 % intervals (0: no intervals).
            #[arg(long, default_value_t = 1000)]
            bootstrap: usize,
            /// Anomalous clips used for faithfulness (0 = skip it).
            #[arg(long, default_value_t = 30)]
            faithfulness_clips: usize,
            /// Name of the set in the report.
            #[arg(long, default_value = "test")]
            name: String,
            /// Print the report as JSON on stdout (instead of the Markdown table).
            #[arg(long)]
            json: bool,
            /// Also write the Markdown report here.
            #[arg(long)]
            markdown: Option<PathBuf>,
            /// Also write a self-contained HTML report here.
            #[arg(long)]
            html: Option<PathBuf>,
        },
        /// Merge banks fitted on shards of one corpus into one bank (PatchCore members; see the README).
        Merge {
            /// Where to write the merged bank (refuses to overwrite unless --force).
            #[arg(long)]
            out: PathBuf,
            /// Overwrite --out if it exists.
            #[arg(long)]
            force: bool,
            /// Backbone folder (default: the embedded model the banks were fitted with).
            #[arg(long)]
            model: Option<PathBuf>,
            /// Normal recordings or folders to set the merged bank's thresholds on (best: the shards' own clips,
            /// each scored without the memory-bank rows it gave). Without them the shards' held-out scores are
            /// pooled, which flags fewer faults with small shards.
            #[arg(long, num_args = 1..)]
            calibrate: Vec<PathBuf>,
            /// Channel of the --calibrate recordings: `mix` or a 0-based index (as the shards were fitted).
            #[arg(long, default_value = "mix")]
            channel: String,
            /// Bank files from `sonomaly fit` on the shards (same backbone, front end and members).
            #[arg(required = true, num_args = 2..)]
            banks: Vec<PathBuf>,
        },
        /// Describe a bank file.
        Info {
            /// Bank file.
            bank: PathBuf,
            /// Print JSON instead of text.
            #[arg(long)]
            json: bool,
        },
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
        /// [default: 4 for log-mel patches, the spec's patch_grid_stride for a preset's network member].
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
                    .map(|v| {
                        v.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("--grid-stride: '{v}' is not a number"))
                    })
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
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for f in entries {
            if f.is_dir() {
                walk(&f, out)?;
            } else if f
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(f);
            }
        }
        Ok(())
    }

    /// Files and folders (searched recursively for audio files) to a list of files without repeats.
    fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                let mut found = Vec::new();
                walk(p, &mut found)?;
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
            let bytes = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
            if !sonomaly::bank::looks_like_bank(&bytes) {
                bail!(
                    "{} exists and is not a sonomaly bank; refusing to overwrite it even with --force",
                    out.display()
                );
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
        Ok(())
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

    pub fn run() -> i32 {
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Fit { out, patch, force, files } => fit(FitArgs { out, patch, force, files }),
            Command::Score { bank, model, heatmap_dir, threshold, channel: ch, include_map, files_from, files } => {
                let paths = match &files_from {
                    Some(list) => Paths::From(list),
                    None => Paths::Listed(&files),
                };
                score(&bank, model.as_deref(), heatmap_dir.as_deref(), threshold, &ch, include_map, paths)
            }
            Command::Info { bank, json } => info(&bank, json),
            Command::Merge { out, force, model, calibrate, channel: ch, banks } => {
                merge(&out, force, model.as_deref(), &banks, &calibrate, &ch)
            }
            Command::Eval { fit, test, bank, patch, bootstrap, faithfulness_clips, name, json, markdown, html } => {
                eval(EvalArgs { fit, test, bank, patch, bootstrap, faithfulness_clips, name, json, markdown, html })
            }
            Command::Mix {
                backgrounds,
                events,
                out,
                length,
                sample_rate,
                fit_clips,
                test_normal,
                test_anomalous,
                snr,
                seed,
                model,
            } => mix(MixArgs {
                backgrounds,
                events,
                out,
                length,
                sample_rate,
                fit_clips,
                test_normal,
                test_anomalous,
                snr,
                seed,
                model,
            }),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    }

    struct FitArgs {
        out: PathBuf,
        patch: FitOptions,
        force: bool,
        files: Vec<PathBuf>,
    }

    /// Decodes and analyses `files` in parallel (a progress bar) into a fitter for `config`; files that cannot be
    /// used are reported on stderr, one line each, and counted.
    fn analyse_files(
        files: &[PathBuf],
        select: ChannelSelect,
        model: &Model,
        config: FitConfig,
    ) -> Result<(Fitter, usize)> {
        let pb = bar(files.len() as u64, "analysing");
        let analysed: Vec<_> = files
            .par_iter()
            .map(|f| {
                pb.set_message(f.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()));
                let r = read_mono(f, select, &pb).and_then(|(x, sr)| Fitter::analyse_clip(model, &x, sr));
                pb.inc(1);
                (f, r)
            })
            .collect();
        pb.finish_and_clear();
        let mut fitter = Fitter::new(model, config)?;
        let mut failed = 0;
        for (f, r) in analysed {
            if let Err(e) = r.and_then(|c| fitter.add_analysed(c)) {
                failed += 1;
                eprintln!("skipped {}: {}", f.display(), about_file(f, &e));
            }
        }
        Ok((fitter, failed))
    }

    fn fit(a: FitArgs) -> Result<i32> {
        let select = channel(&a.patch.channel)?;
        let files = expand(&a.files)?;
        check_out(&a.out, a.force, &files)?;
        let (model, config) = a.patch.model_and_config()?;
        let start = Instant::now();
        let (fitter, failed) = analyse_files(&files, select, &model, config)?;
        if fitter.clips() == 0 {
            bail!("no file could be used: nothing to fit");
        }
        let pb = bar(1, "fitting");
        let (fitter_clips, seconds) = (fitter.clips(), fitter.seconds());
        let bank = fitter.finish(&model, &mut |p: Progress| {
            pb.set_length(p.total as u64);
            pb.set_position(p.done as u64);
            pb.set_message(p.stage);
            true
        })?;
        pb.finish_and_clear();
        let bytes = bank.to_bytes()?;
        // Write beside the target, then rename: an interrupted write never leaves half a bank.
        let tmp = PathBuf::from(format!("{}.partial", a.out.display()));
        let written = std::fs::write(&tmp, &bytes)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|_| std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display())));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if fitter_clips < 3 || seconds < 30.0 {
            eprintln!(
                "warning: fitted on {fitter_clips} clip(s), {seconds:.1} s of normal audio; the threshold is rough \
                 with so little. 30 s or more in several clips is better"
            );
        }
        let i = bank.info();
        eprintln!(
            "wrote {} ({:.1} MB): {} clips, {:.1} s of audio, memory bank {}, threshold {:.4}, in {:.1} s",
            a.out.display(),
            bytes.len() as f64 / 1e6,
            i.clips_fitted,
            i.seconds_fitted,
            i.memory_bank,
            i.threshold,
            start.elapsed().as_secs_f64()
        );
        Ok(if failed > 0 { 3 } else { 0 })
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

    /// Files longer than this are scored as a stream with bounded memory (no heatmap PNG).
    const LONG_FILE_S: f64 = 600.0;

    /// The verdict on a long file, read and scored window by window.
    fn score_long(
        path: &Path,
        select: ChannelSelect,
        model: &Model,
        bank: &Bank,
        pb: &ProgressBar,
    ) -> sonomaly::Result<StreamVerdict> {
        // At the file's rate, as for short files (and the page): the scorer resamples, and judges only the bands
        // below the file's Nyquist frequency.
        let mut stream = MonoStream::open(path, select, TargetRate::FileRate)?;
        let rate = stream.target_sample_rate();
        let mut scorer = StreamScorer::new(model, bank, rate)?;
        let mut curve = Vec::new();
        while let Some(chunk) = stream.next_chunk()? {
            for u in scorer.push(model, bank, &chunk)? {
                curve.extend(u.curve);
            }
        }
        for u in scorer.finish(model, bank)? {
            curve.extend(u.curve);
        }
        print_warnings(&stream, pb);
        Ok(scorer.verdict(model, bank, &curve))
    }

    fn load_bank(path: &Path) -> Result<Bank> {
        let bytes = std::fs::read(path).with_context(|| format!("reading bank {}", path.display()))?;
        Bank::from_bytes(&bytes).with_context(|| format!("loading bank {}", path.display()))
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
        if let Some(d) = heatmap_dir {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let pb = match paths {
            Paths::Listed(_) => bar(files.len() as u64, "scoring"),
            Paths::From(_) => ProgressBar::hidden(),
        };
        let stdout = Mutex::new(std::io::stdout());
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let write_failed = std::sync::atomic::AtomicBool::new(false);
        let one = |i: usize, f: &PathBuf| {
            let long = MonoStream::open(f, select, model.sample_rate())
                .ok()
                .and_then(|s| s.duration_s())
                .is_some_and(|d| d > LONG_FILE_S);
            if long {
                match score_long(f, select, &model, &bank, &pb) {
                    Ok(v) => {
                        if heatmap_dir.is_some() {
                            pb.suspend(|| {
                                eprintln!(
                                    "{}: longer than {LONG_FILE_S} s, scored as a stream, no heatmap",
                                    f.display()
                                )
                            });
                        }
                        let line = ScoreLine {
                            file: f.display().to_string(),
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
                        };
                        let json = serde_json::to_string(&line).expect("serialisable");
                        pb.suspend(|| {
                            let mut out = stdout.lock().expect("stdout lock");
                            if writeln!(out, "{json}").and_then(|_| out.flush()).is_err() {
                                write_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        });
                    }
                    Err(e) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        pb.suspend(|| eprintln!("error: {}: {}", f.display(), about_file(f, &e)));
                    }
                }
                pb.inc(1);
                return;
            }
            let r = read_mono(f, select, &pb).and_then(|(x, sr)| score_clip(&model, &bank, &x, sr));
            match r {
                Ok(r) => {
                    let heatmap = heatmap_dir.map(|d| {
                        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
                        d.join(format!("{i:04}_{stem}.png"))
                    });
                    if let Some(p) = &heatmap {
                        if let Err(e) = sonomaly::render::save_png(&r, p) {
                            pb.suspend(|| eprintln!("{}: heatmap not written: {e}", f.display()));
                        }
                    }
                    let line = ScoreLine {
                        file: f.display().to_string(),
                        score: r.score,
                        threshold: r.threshold,
                        is_anomaly: r.is_anomaly,
                        segments: &r.segments,
                        segment_threshold: r.segment_threshold,
                        duration_s: r.duration_s,
                        units: r.units,
                        members: &r.members,
                        level_distance: r.level_distance,
                        out_of_distribution: r.out_of_distribution.as_deref(),
                        heatmap: heatmap.map(|p| p.display().to_string()),
                        frames: include_map.then_some(r.frames),
                        mel_bins: include_map.then_some(r.mel_bins),
                        map: include_map.then_some(r.map.as_slice()),
                        curve: include_map.then_some(r.curve.as_slice()),
                    };
                    let json = serde_json::to_string(&line).expect("serialisable");
                    pb.suspend(|| {
                        let mut out = stdout.lock().expect("stdout lock");
                        if writeln!(out, "{json}").and_then(|_| out.flush()).is_err() {
                            write_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                Err(e) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    pb.suspend(|| eprintln!("error: {}: {}", f.display(), about_file(f, &e)));
                }
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
        Ok(0)
    }

    struct EvalArgs {
        fit: Vec<PathBuf>,
        test: PathBuf,
        bank: Option<PathBuf>,
        patch: FitOptions,
        bootstrap: usize,
        faithfulness_clips: usize,
        name: String,
        json: bool,
        markdown: Option<PathBuf>,
        html: Option<PathBuf>,
    }

    /// Files from paths: a `.csv` contributes its `path` column (relative to the CSV), folders their audio files.
    fn expand_lists(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for p in paths {
            if p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
                let items = sonomaly::eval::read_test_csv(p)?;
                if items.iter().any(|i| i.anomaly) {
                    bail!("{} lists anomalous clips; fitting takes normal clips only", p.display());
                }
                out.extend(items.into_iter().map(|i| i.path));
            } else {
                out.extend(expand(std::slice::from_ref(p))?);
            }
        }
        Ok(out)
    }

    fn eval(a: EvalArgs) -> Result<i32> {
        let select = channel(&a.patch.channel)?;
        let items = sonomaly::eval::read_test_csv(&a.test)?;
        let start = Instant::now();
        let (mut model, bank) = match &a.bank {
            // The bank brings its own embeddings and front end; only the backbone comes from the options.
            Some(b) => {
                let bank = load_bank(b)?;
                (model_for_bank(a.patch.model.as_deref(), &bank)?, bank)
            }
            None => {
                let (model, config) = a.patch.model_and_config()?;
                let files = expand_lists(&a.fit)?;
                let pb = ProgressBar::hidden();
                let analysed: Vec<_> = files
                    .par_iter()
                    .map(|f| (f, read_mono(f, select, &pb).and_then(|(x, sr)| Fitter::analyse_clip(&model, &x, sr))))
                    .collect();
                let mut fitter = Fitter::new(&model, config)?;
                for (f, r) in analysed {
                    fitter
                        .add_analysed(r.with_context(|| format!("fitting on {}", f.display()))?)
                        .with_context(|| format!("fitting on {}", f.display()))?;
                }
                let bank = fitter.finish(&model, &mut |_| true)?;
                (model, bank)
            }
        };
        let fit_s = start.elapsed().as_secs_f64();
        model.prepare_for(&bank)?;
        let cfg = sonomaly::eval::EvalConfig {
            bootstrap_rounds: a.bootstrap,
            seed: a.patch.seed,
            faithfulness_clips: a.faithfulness_clips,
            channel: select,
        };
        let report = sonomaly::eval::evaluate(&model, &bank, &items, &cfg, &a.name)?;
        let md = sonomaly::eval::markdown(&report);
        if let Some(p) = &a.markdown {
            std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(p) = &a.html {
            std::fs::write(p, sonomaly::eval::html(std::slice::from_ref(&report)))
                .with_context(|| format!("writing {}", p.display()))?;
        }
        if a.json {
            let mut v = serde_json::to_value(&report)?;
            v["fit_seconds"] = serde_json::json!(fit_s);
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print!("{md}");
        }
        eprintln!(
            "eval: fit {:.1} s, scoring {:.1} s, faithfulness {:.1} s",
            fit_s, report.score_seconds, report.faithfulness_seconds
        );
        Ok(0)
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

    struct MixArgs {
        backgrounds: Vec<PathBuf>,
        events: Vec<PathBuf>,
        out: PathBuf,
        length: f64,
        sample_rate: u32,
        fit_clips: usize,
        test_normal: usize,
        test_anomalous: usize,
        snr: String,
        seed: u64,
        model: Option<PathBuf>,
    }

    fn mix(a: MixArgs) -> Result<i32> {
        let snrs_db = a
            .snr
            .split(',')
            .map(|s| s.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("--snr: '{s}' is not a number")))
            .collect::<Result<Vec<f64>>>()?;
        let cfg = sonomaly::mix::MixConfig {
            length_s: a.length,
            sample_rate: a.sample_rate,
            fit_clips: a.fit_clips,
            test_normal: a.test_normal,
            test_anomalous: a.test_anomalous,
            snrs_db,
            seed: a.seed,
            ..Default::default()
        };
        let model = load_model(a.model.as_deref())?;
        let backgrounds = expand(&a.backgrounds)?;
        let events = expand(&a.events)?;
        let start = Instant::now();
        let s = sonomaly::mix::make_set(&backgrounds, &events, &a.out, &cfg, model.logmel())?;
        eprintln!(
            "wrote {} fit and {} test clips to {} ({} fit / {} test backgrounds, {} events, {} too short) in {:.1} s",
            s.fit.len(),
            s.test.len(),
            a.out.display(),
            s.fit_backgrounds.len(),
            s.test_backgrounds.len(),
            s.events.len(),
            s.skipped_short.len(),
            start.elapsed().as_secs_f64()
        );
        Ok(0)
    }

    /// `sonomaly merge`: the library's [`sonomaly::merge::merge_banks`], written as `fit` writes.
    fn merge(
        out: &Path,
        force: bool,
        model_dir: Option<&Path>,
        paths: &[PathBuf],
        calibrate: &[PathBuf],
        ch: &str,
    ) -> Result<i32> {
        let select = channel(ch)?;
        check_out(out, force, paths)?;
        let files = if calibrate.is_empty() { Vec::new() } else { expand(calibrate)? };
        check_out(out, force, &files)?;
        let start = Instant::now();
        let banks = paths.iter().map(|p| load_bank(p)).collect::<Result<Vec<_>>>()?;
        let mut model = model_for_bank(model_dir, &banks[0])?;
        let mut bank = sonomaly::merge::merge_banks(&banks, model.spec())?;
        let mut failed = 0;
        if !files.is_empty() {
            model.prepare_for(&bank)?;
            let fitter;
            (fitter, failed) = analyse_files(&files, select, &model, FitConfig::for_bank(&bank))?;
            if fitter.clips() < 2 {
                bail!(
                    "calibrating needs at least two normal recordings that can be read, got {}: nothing written",
                    fitter.clips()
                );
            }
            let pb = bar(1, "calibrating");
            let held = fitter.held_out_against(&model, &bank, &mut |p: Progress| {
                pb.set_length(p.total as u64);
                pb.set_position(p.done as u64);
                true
            })?;
            pb.finish_and_clear();
            bank = sonomaly::pipeline::calibrate(&bank, &held)?;
        }
        let bytes = bank.to_bytes()?;
        let tmp = PathBuf::from(format!("{}.partial", out.display()));
        let written = std::fs::write(&tmp, &bytes)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|_| std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display())));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let i = bank.info();
        eprintln!(
            "wrote {} ({:.1} MB): {} banks merged, {} clips, {:.1} s of audio, memory bank {}, threshold {:.4}, \
             calibrated on {}, in {:.1} s",
            out.display(),
            bytes.len() as f64 / 1e6,
            banks.len(),
            i.clips_fitted,
            i.seconds_fitted,
            i.memory_bank,
            i.threshold,
            if files.is_empty() {
                "the shards' pooled held-out scores (give --calibrate with the shards' clips to measure them on the \
                 merged bank)"
                    .to_string()
            } else {
                format!("{} normal recordings", files.len() - failed)
            },
            start.elapsed().as_secs_f64()
        );
        Ok(if failed > 0 { 3 } else { 0 })
    }

    fn info(path: &Path, json: bool) -> Result<i32> {
        let bytes = std::fs::read(path).with_context(|| format!("reading bank {}", path.display()))?;
        let bank = Bank::from_bytes(&bytes).with_context(|| format!("loading bank {}", path.display()))?;
        let mut i = bank.info();
        i.size_bytes = bytes.len();
        let text = if json {
            serde_json::to_string_pretty(&i)?
        } else {
            let mut lines = vec![
                format!("bank          {} (format version {})", path.display(), bank.meta.version),
                format!("backbone      {} (sha256 {}...)", i.backbone, i.backbone_sha256),
                format!("front end     {}", i.front_end),
            ];
            for (k, m) in bank.meta.members.iter().enumerate() {
                let e = &m.embedding;
                lines.push(format!(
                    "member {k}      {}: {} on {} (grid stride {}, frequency position {}), {} x {}, held-out normal \
                     median {:.4}, spread {:.4}",
                    m.name,
                    serde_json::to_string(&m.detector)?,
                    e.layers.join(","),
                    e.grid_stride,
                    if e.frequency_position { "on" } else { "off" },
                    m.state_rows,
                    m.dims,
                    m.score_norm.loc,
                    m.score_norm.scale,
                ));
            }
            lines.extend([
                format!("fitted on     {} clips, {:.1} s", i.clips_fitted, i.seconds_fitted),
                format!(
                    "threshold     {:.4} (clip), {:.4} (segments), {} units",
                    i.threshold, i.segment_threshold, i.units
                ),
                format!("created       {}", i.created),
                format!("size          {:.2} MB", i.size_bytes as f64 / 1e6),
            ]);
            lines.join("\n")
        };
        writeln!(std::io::stdout(), "{text}").context("writing to standard output")?;
        Ok(0)
    }
}
