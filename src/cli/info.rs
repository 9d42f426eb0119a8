//! `sonomaly info`: a bank file described.

use super::*;

/// The arguments of `sonomaly info`.
#[derive(clap::Args)]
pub(super) struct InfoArgs {
    /// Bank file.
    pub(super) bank: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) fn info(path: &Path, json: bool) -> Result<i32> {
    let bytes = read_bank_file(path)?;
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
            format!("fitted on     {}, {:.1} s", plural(i.clips_fitted, "clip"), i.seconds_fitted),
            format!(
                "threshold     {:.4} (clip), {:.4} (segments), {} units",
                i.threshold, i.segment_threshold, i.units
            ),
            format!(
                "held out      {}, each scored without what it gave the bank: {}",
                if i.held_out_units > i.clips_fitted {
                    format!("{} of {}", plural(i.held_out_units, "part"), plural(i.clips_fitted, "normal clip"))
                } else {
                    plural(i.held_out_units, "normal clip")
                },
                i.threshold_note.as_deref().unwrap_or("enough normal sound for a steady threshold")
            ),
            format!("created       {}", i.created),
            format!("size          {:.2} MB", i.size_bytes as f64 / 1e6),
        ]);
        lines.join("\n")
    };
    writeln!(std::io::stdout(), "{text}").context("writing to standard output")?;
    Ok(0)
}
