//! `sonomaly fit`: a bank from recordings of normal sound.

use super::*;

/// The arguments of `sonomaly fit`.
#[derive(clap::Args)]
#[command(after_help = after_help())]
pub(super) struct FitArgs {
    /// Where to write the bank file (refuses to overwrite unless --force).
    #[arg(long)]
    pub(super) out: PathBuf,
    #[command(flatten)]
    pub(super) patch: FitOptions,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub(super) force: bool,
    /// Normal recordings (WAV, FLAC, OGG, MP3) or folders of them.
    #[arg(required = true)]
    pub(super) files: Vec<PathBuf>,
}

/// The exit statuses, and the bound of the rough-threshold warning ([`sonomaly::threshold::ThresholdSupport`]).
fn after_help() -> String {
    format!(
        "Exit status: 0 when every file was used; 3 when some files could not be used (each named on stderr, the \
         bank fitted on the others); 1 on an error (nothing written). A bank fitted on fewer than {} clips or {:.0} s \
         of normal sound is written with a warning that its threshold is rough.",
        sonomaly::threshold::STEADY_CLIPS,
        sonomaly::threshold::STEADY_SECONDS
    )
}

pub(super) fn fit(a: FitArgs) -> Result<i32> {
    let select = channel(&a.patch.channel)?;
    let files = expand(&a.files)?;
    check_out(&a.out, a.force, &files)?;
    let (model, config) = a.patch.model_and_config()?;
    let start = Instant::now();
    let mut fitter = Fitter::new(&model, config)?;
    // Clips are added as they are analysed, and their patches go to a temporary file past the budget: a fit on
    // hours of audio holds one batch of clips, not all of them.
    fitter.spill_above(Some(sonomaly::pipeline::SPILL_ABOVE_BYTES))?;
    let failed = analyse_files(&files, select, &model, &mut |c| fitter.add_analysed(c))?;
    // Diagnostics for benches/fit_scaling.sh, beside the fitting stages' lines.
    if std::env::var_os("SONOMALY_CORESET_LOG").is_some() {
        eprintln!("stage: decoding and analysis in {:.3} s", start.elapsed().as_secs_f64());
        eprintln!("spilled: {:.1} MB of patches to a temporary file", fitter.spilled_bytes() as f64 / 1e6);
    }
    if fitter.clips() == 0 {
        bail!("no file could be used: nothing to fit");
    }
    let pb = bar(1, "fitting");
    let bank = fitter.finish(&model, &mut |p: Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(p.stage);
        true
    })?;
    pb.finish_and_clear();
    let bytes = bank.to_bytes()?;
    // Written beside the target, then renamed: an interrupted write never leaves half a bank.
    save_bank(&a.out, &bytes)?;
    let i = bank.info();
    if let Some(note) = &i.threshold_note {
        eprintln!("warning: {note}");
    }
    eprintln!(
        "wrote {} ({:.1} MB): {}, {:.1} s of audio, memory bank {}, threshold {:.4}, in {:.1} s",
        a.out.display(),
        bytes.len() as f64 / 1e6,
        plural(i.clips_fitted, "clip"),
        i.seconds_fitted,
        i.memory_bank,
        i.threshold,
        start.elapsed().as_secs_f64()
    );
    Ok(if failed > 0 { 3 } else { 0 })
}
