//! `sonomaly merge`: banks fitted on shards of a corpus into one, optionally calibrated on their clips.

use super::*;

/// The arguments of `sonomaly merge`.
#[derive(clap::Args)]
pub(super) struct MergeArgs {
    /// Where to write the merged bank (refuses to overwrite unless --force).
    #[arg(long)]
    pub(super) out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub(super) force: bool,
    /// Backbone folder (default: the embedded model the banks were fitted with).
    #[arg(long)]
    pub(super) model: Option<PathBuf>,
    /// Normal recordings or folders to set the merged bank's thresholds on (best: the shards' own clips,
    /// each scored without the memory-bank rows it gave). Without them the shards' held-out scores are
    /// pooled, which flags fewer faults with small shards.
    #[arg(long, num_args = 1..)]
    pub(super) calibrate: Vec<PathBuf>,
    /// Channel of the --calibrate recordings: `mix` or a 0-based index (as the shards were fitted).
    #[arg(long, default_value = "mix")]
    pub(super) channel: String,
    /// Bank files from `sonomaly fit` on the shards (same backbone, front end and members).
    #[arg(required = true, num_args = 2..)]
    pub(super) banks: Vec<PathBuf>,
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
        let mut clips: Vec<AnalysedClip> = Vec::new();
        failed = analyse_files(&files, select, &model, &mut |c| {
            clips.push(c);
            Ok(())
        })?;
        if clips.len() < 2 {
            bail!(
                "calibrating needs at least two normal recordings that can be read, got {}: nothing written",
                clips.len()
            );
        }
        let pb = bar(clips.len() as u64, "calibrating");
        bank = sonomaly::merge::calibrate_merged(&bank, &banks, &model, clips, &mut |p: Progress| {
            pb.set_position(p.done as u64);
            true
        })?;
        pb.finish_and_clear();
    }
    let bytes = bank.to_bytes()?;
    save_bank(out, &bytes)?;
    let i = bank.info();
    if let Some(note) = &i.threshold_note {
        eprintln!("warning: {note}");
    }
    eprintln!(
        "wrote {} ({:.1} MB): {} banks merged, {}, {:.1} s of audio, memory bank {}, threshold {:.4}, \
         calibrated on {}, in {:.1} s",
        out.display(),
        bytes.len() as f64 / 1e6,
        banks.len(),
        plural(i.clips_fitted, "clip"),
        i.seconds_fitted,
        i.memory_bank,
        i.threshold,
        if files.is_empty() {
            "the shards' pooled held-out scores (give --calibrate with the shards' clips to measure them on the \
             merged bank)"
                .to_string()
        } else {
            plural(files.len() - failed, "normal recording")
        },
        start.elapsed().as_secs_f64()
    );
    Ok(if failed > 0 { 3 } else { 0 })
}

/// Runs `sonomaly merge`.
pub(super) fn run(a: MergeArgs) -> Result<i32> {
    merge(&a.out, a.force, a.model.as_deref(), &a.banks, &a.calibrate, &a.channel)
}
