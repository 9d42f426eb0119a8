//! Where a [`super::Fitter`] keeps its clips' patches: in memory, or, natively, once they pass a budget, in an
//! unnamed temporary file (created in the system's temporary directory, `TMPDIR` on Unix, and removed by the
//! system when the fitter is dropped or the process ends, however it ends), so that a fit on hours of audio holds
//! one clip's patches at a time instead of all of them.
//!
//! A spilled clip keeps its windows' shapes (grid sizes, owned ranges) with empty data; its patches are the
//! grids' values, window by window and member by member, as little-endian `f32` at one byte range of the file.
//! Reading gives back the windows exactly as they were written.

use std::ops::Range;

use super::windows::Window;
use crate::error::{Error, Result};

/// The spill file of one fitter (none on wasm, where nothing is spilled).
#[derive(Default)]
pub(super) struct Spill {
    #[cfg(not(target_arch = "wasm32"))]
    file: Option<std::fs::File>,
    /// Bytes written so far (the next clip's offset).
    end: u64,
}

impl Spill {
    /// Bytes written so far.
    pub(super) fn bytes(&self) -> u64 {
        self.end
    }

    /// Makes the temporary file if it is not made yet, so that a folder that cannot be written is found before the
    /// fit's work rather than when the first clip is spilled.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be made; [`Error::InvalidInput`] on wasm, which has no file to spill to.
    pub(super) fn open(&mut self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            if self.file.is_none() {
                let f = tempfile::tempfile().map_err(|e| {
                    let what = format!(
                        "making a temporary file for the fit's patches in {} (set TMPDIR to a folder where files can \
                         be written, with about 0.3 MB free per 10 s of audio)",
                        std::env::temp_dir().display()
                    );
                    Error::io(what, e)
                })?;
                self.file = Some(f);
            }
            Ok(())
        }
        #[cfg(target_arch = "wasm32")]
        Err(Error::invalid("a fit cannot spill its patches to a file in the browser"))
    }

    /// Writes the patches of `windows` and empties their grids' data, returning the byte range they were written
    /// to (the file is made at the first call, if [`Spill::open`] did not make it).
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary file cannot be made or written (a full disk, say); [`Error::InvalidInput`]
    /// on wasm, which has no file to spill to.
    pub(super) fn write(&mut self, windows: &mut [Window]) -> Result<Range<u64>> {
        self.open()?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            use std::os::unix::fs::FileExt;
            let file = self.file.as_ref().expect("made by open");
            let mut bytes = Vec::new();
            for w in windows.iter_mut() {
                for m in &mut w.members {
                    bytes.extend(m.grid.data.iter().flat_map(|v| v.to_le_bytes()));
                    m.grid.data = Vec::new();
                }
            }
            let at = self.end..self.end + bytes.len() as u64;
            file.write_all_at(&bytes, at.start).map_err(|e| {
                let what = format!(
                    "writing the fit's patches to a temporary file in {} (is it full? TMPDIR chooses the folder; \
                     about 0.3 MB are needed per 10 s of audio)",
                    std::env::temp_dir().display()
                );
                Error::io(what, e)
            })?;
            self.end = at.end;
            Ok(at)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = windows;
            unreachable!("open refuses on wasm")
        }
    }

    /// The windows of a clip written at `at` by [`Spill::write`], whose shapes are `shapes` (the windows as
    /// [`Spill::write`] left them).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::InvalidInput`] if `at` does not hold `shapes`' patches.
    pub(super) fn read(&self, shapes: &[Window], at: &Range<u64>) -> Result<Vec<Window>> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            use std::os::unix::fs::FileExt;
            let file = self.file.as_ref().ok_or_else(|| Error::invalid("internal: no patches were spilled"))?;
            let len: usize =
                shapes.iter().flat_map(|w| &w.members).map(|m| m.grid.time * m.grid.freq * m.grid.dims).sum();
            if (at.end - at.start) as usize != len * 4 {
                return Err(Error::invalid("internal: a spilled clip's bytes do not match its windows"));
            }
            let mut bytes = vec![0u8; len * 4];
            file.read_exact_at(&mut bytes, at.start)
                .map_err(|e| Error::io("reading the fit's patches back from its temporary file", e))?;
            let mut values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
            let mut out = shapes.to_vec();
            for w in &mut out {
                for m in &mut w.members {
                    let n = m.grid.time * m.grid.freq * m.grid.dims;
                    m.grid.data = values.by_ref().take(n).collect();
                }
            }
            Ok(out)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (shapes, at);
            Err(Error::invalid("internal: no patches were spilled"))
        }
    }
}

/// Returns the memory freed so far to the system where the allocator keeps it (glibc's `malloc_trim`; nothing
/// elsewhere). A fit that adds clips from several threads frees each clip's transient buffers between long-lived
/// allocations, and glibc then holds the pages: without this call after each batch of clips, a fit's peak memory
/// kept growing with the clips although its patches were spilled (BENCH.md, "Bounded memory of a fit").
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only gives free pages back to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
