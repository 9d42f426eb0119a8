//! Analysis windows: where they start, which frames each owns, and their patches for every member.

use std::ops::Range;

use crate::embedding::{embed, PatchGrid};
use crate::error::{Error, Result};
use crate::spectrogram::Spectrogram;

use super::Model;

/// One member's patches of one window.
#[derive(Clone)]
pub(super) struct MemberPatches {
    /// Patches of the whole window.
    pub grid: PatchGrid,
    /// Patch indices (rows of `grid.data`) whose centre lies in the window's owned frames.
    pub owned_patches: Range<usize>,
}

/// One analysed window.
#[derive(Clone)]
pub(super) struct Window {
    /// First frame of the window in the clip.
    pub start: usize,
    /// Frames of the clip this window owns (absolute).
    pub owned: Range<usize>,
    /// Patches for each member, in member order.
    pub members: Vec<MemberPatches>,
}

/// Window starts for `t` frames: `0, H, 2H, ...` and a last one ending at the clip's end.
pub(super) fn window_starts(t: usize, w: usize, h: usize) -> Vec<usize> {
    if t <= w {
        return vec![0];
    }
    let mut s: Vec<usize> = (0..).map(|i| i * h).take_while(|&s| s + w < t).collect();
    s.push(t - w);
    s
}

/// Owned frame range of each window: frames nearest to its centre.
pub(super) fn ownership(starts: &[usize], w: usize, t: usize) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(starts.len());
    let mut lo = 0;
    for i in 0..starts.len() {
        let hi = if i + 1 < starts.len() { (starts[i] + starts[i + 1] + w) / 2 } else { t };
        let hi = hi.min(t).max(lo);
        out.push(lo..hi);
        lo = hi;
    }
    out
}

/// The first `cols` columns of a patch grid.
fn crop_columns(grid: &PatchGrid, cols: usize) -> PatchGrid {
    let d = grid.dims;
    let mut data = Vec::with_capacity(grid.time * cols * d);
    for t in 0..grid.time {
        let row = t * grid.freq * d;
        data.extend_from_slice(&grid.data[row..row + cols * d]);
    }
    PatchGrid { time: grid.time, freq: cols, dims: d, data }
}

impl MemberPatches {
    /// Keeps the first `cols` grid columns.
    pub fn crop(&mut self, cols: usize) {
        if cols >= self.grid.freq {
            return;
        }
        self.owned_patches = self.cropped_owned(cols);
        self.grid = crop_columns(&self.grid, cols);
    }

    /// The owned patch indices once the first `cols` grid columns are kept ([`MemberPatches::crop`]).
    pub fn cropped_owned(&self, cols: usize) -> Range<usize> {
        let f = self.grid.freq;
        if cols >= f {
            return self.owned_patches.clone();
        }
        (self.owned_patches.start / f) * cols..(self.owned_patches.end / f) * cols
    }

    /// The owned patches `[n, dims]`.
    pub fn owned(&self) -> &[f32] {
        let d = self.grid.dims;
        &self.grid.data[self.owned_patches.start * d..self.owned_patches.end * d]
    }
}

impl Model {
    /// Cuts `lm` into windows and computes their patches for every member, keeping `cols[i]` grid columns of
    /// member `i`.
    pub(super) fn analyse(
        &self,
        lm: &Spectrogram,
        cols: &[usize],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Window>> {
        let (w, h) = (self.spec.window_frames, self.spec.window_hop);
        let t = lm.frames;
        if t == 0 {
            return Err(Error::audio("the audio is too short to give a single spectrogram frame"));
        }
        let starts = window_starts(t, w, h);
        let owned = ownership(&starts, w, t);
        self.analyse_windows(&lm.data, 0, t, &starts, &owned, cols, progress)
    }

    /// Patches of the windows at `starts` (absolute frames) with their `owned` frame ranges. `frames` holds the
    /// log-mel rows from absolute frame `buf_start` on; `total` is the clip's frame count (a clip shorter than a
    /// window is repeated to fill it).
    // The whole clip's and the stream's buffers are both passed as slices with their offsets: no struct to own them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn analyse_windows(
        &self,
        frames: &[f32],
        buf_start: usize,
        total: usize,
        starts: &[usize],
        owned: &[Range<usize>],
        cols: &[usize],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Window>> {
        let (w, m) = (self.spec.window_frames, self.logmel.config().n_mels);
        let mut out = Vec::with_capacity(starts.len());
        // Windows go through the backbone in batches: wider matrix products, progress still reported often.
        let items: Vec<(usize, &Range<usize>)> = starts.iter().copied().zip(owned).collect();
        let backbone = self.backbone();
        for batch in items.chunks(super::WINDOW_BATCH) {
            let bufs: Vec<Vec<f32>> = batch
                .iter()
                .map(|&(start, _)| {
                    let mut buf = vec![self.pad_value; w * m];
                    for r in 0..w {
                        let src = if total >= w { start + r } else { r % total } - buf_start;
                        buf[r * m..(r + 1) * m].copy_from_slice(&frames[src * m..(src + 1) * m]);
                    }
                    buf
                })
                .collect();
            let maps = match backbone {
                Some(b) => b.run_batch(&bufs.iter().map(|b| b.as_slice()).collect::<Vec<_>>())?,
                None => vec![Vec::new(); bufs.len()],
            };
            for ((&(start, own), buf), maps) in batch.iter().zip(&bufs).zip(&maps) {
                let mut members = Vec::with_capacity(self.embeddings.len());
                for (e, &c) in self.embeddings.iter().zip(cols) {
                    let s = e.grid_stride;
                    let mut grid = embed(e, buf, w, m, maps)?;
                    if c < grid.freq {
                        grid = crop_columns(&grid, c);
                    }
                    let rows: Vec<usize> = (0..grid.time).filter(|r| own.contains(&(start + r * s + s / 2))).collect();
                    let owned_patches = match (rows.first(), rows.last()) {
                        (Some(&a), Some(&b)) => a * grid.freq..(b + 1) * grid.freq,
                        _ => 0..0,
                    };
                    members.push(MemberPatches { grid, owned_patches });
                }
                out.push(Window { start, owned: own.clone(), members });
                progress(out.len(), starts.len());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_clip_once() {
        for t in [1usize, 50, 99, 100, 101, 149, 150, 431, 1000] {
            let s = window_starts(t, 100, 50);
            let o = ownership(&s, 100, t);
            assert_eq!(o.first().unwrap().start, 0);
            assert_eq!(o.last().unwrap().end, t);
            for (i, r) in o.iter().enumerate() {
                if i > 0 {
                    assert_eq!(o[i - 1].end, r.start);
                }
                if t >= 100 {
                    assert!(r.start >= s[i] && r.end <= s[i] + 100, "t={t} window {i}");
                }
            }
        }
        assert_eq!(window_starts(431, 100, 50), vec![0, 50, 100, 150, 200, 250, 300, 331]);
    }
}
