//! Header repairs in front of symphonia, for damaged files that other decoders read.
//!
//! [`repair`] looks at the first bytes of a seekable source and, for the cases below only, presents symphonia with
//! a corrected view of the file: the original bytes with a few header bytes replaced or a pad byte inserted
//! ([`Spliced`]); the audio data are never copied into memory. Each repair gives a note that the caller passes
//! on as a warning. Anything else goes through untouched.
//!
//! - **WAV whose RIFF size is too small for its chunks** (a known writer bug leaves out the 8 bytes of the data
//!   chunk's header; VLC, ffmpeg and libsndfile play such files, symphonia refuses them): the size is rewritten
//!   to the one the chunks imply.
//! - **WAV with an odd-length chunk that lacks its pad byte** (RIFF pads every chunk to an even length; some
//!   writers forget): when the next chunk header sits right after the odd chunk and not one byte later, a pad
//!   byte is inserted. When no chunk header follows at either place, the walk stops with a diagnosis that names
//!   the damaged chunk and its offset, used as the error message if symphonia then refuses the file.
//! - **FLAC whose STREAMINFO minimum block size is below 16** (0 is written by some encoders; libFLAC and ffmpeg
//!   ignore the field, symphonia refuses it), after an optional ID3v2 tag: the minimum is rewritten to the maximum
//!   for a fixed-blocksize stream (as the first frame header says) or to 16 for a variable one.
//!
//! - **WAV_FORMAT_EXTENSIBLE whose channel mask does not name as many channels as the file has**: the mask is
//!   rewritten to the first positions in order (symphonia's own correction overflows a 32-bit shift for some
//!   masks); a file of more channels than symphonia has positions for (18) is refused with a plain message.
//! - **Tags are never parsed.** symphonia allocates what a length in a tag says (up to 4 GB) before it checks it
//!   against the bytes there, so a damaged tag would exhaust memory (the wasm build aborts). sonomaly uses no
//!   tag, so FLAC tag, cue sheet and picture blocks are read as padding (the audio is untouched; a FLAC tag block
//!   whose lengths run past its own end is reported in a warning), and an ID3v2 tag in front of MP3 or FLAC is
//!   skipped unread by the container choice after this repair (`sniff_container` in `audio.rs`).
//!
//! Reference: the RIFF layout of Microsoft's "Multimedia Programming Interface and Data Specifications 1.0"
//! (1991, chunks and pad bytes); the FLAC format (RFC 9639, sections 8.2 STREAMINFO and 9.1 frame header).

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::io::MediaSource;

/// What [`repair`] found.
pub(crate) struct Repaired {
    /// The source to decode: the original, or a corrected view of it.
    pub source: Box<dyn MediaSource>,
    /// One sentence per repair made (for warnings).
    pub notes: Vec<String>,
    /// Where the file is damaged beyond repair, if the header walk found it (for the error message).
    pub diagnosis: Option<String>,
    /// The format the first bytes name ("WAV", "FLAC", "OGG"), for messages; `None` if they name none of these.
    pub format: Option<&'static str>,
    /// Why the file must be refused before symphonia reads it (a header symphonia cannot read safely).
    pub refuse: Option<String>,
}

/// Most chunks walked before the data chunk; files with more are passed through unchanged.
const MAX_CHUNKS: usize = 4096;
/// Most pad bytes inserted; more missing pads are reported, not repaired.
const MAX_PADS: usize = 64;

/// Chunk tags of WAV files seen in the wild: a known tag at the unpadded position beats an unknown one at the
/// padded position.
const KNOWN_TAGS: &[&[u8; 4]] = &[
    b"fmt ", b"data", b"LIST", b"fact", b"cue ", b"PEAK", b"bext", b"iXML", b"id3 ", b"ID3 ", b"smpl", b"inst",
    b"JUNK", b"junk", b"PAD ", b"FLLR", b"acid", b"DISP", b"cart", b"umid", b"axml", b"plst", b"labl", b"note",
    b"ltxt", b"ds64", b"wavl", b"slnt", b"minf", b"elm1", b"regn", b"ovwf", b"afsp", b"olym", b"SyLp",
];

/// Looks for the repairable damage described in the module documentation; see [`Repaired`].
pub(crate) fn repair(mut src: Box<dyn MediaSource>) -> Repaired {
    let len = match (src.is_seekable(), src.byte_len()) {
        (true, Some(n)) => n,
        _ => return Repaired { source: src, notes: Vec::new(), diagnosis: None, format: None, refuse: None },
    };
    let h = read_at(&mut src, 0, 12);
    let (found, format) = match h {
        Some(h) if &h[..4] == b"RIFF" && &h[8..12] == b"WAVE" => (wav(&mut src, len, &h), Some("WAV")),
        Some(h) if &h[..4] == b"fLaC" || &h[..3] == b"ID3" => {
            let (found, is_flac) = flac(&mut src, len, &h);
            (found, is_flac.then_some("FLAC"))
        }
        Some(h) if &h[..4] == b"OggS" => (Found::default(), Some("OGG")),
        _ => (Found::default(), None),
    };
    // The format is told from the start.
    if src.seek(SeekFrom::Start(0)).is_err() {
        return Repaired { source: src, notes: Vec::new(), diagnosis: found.diagnosis, format, refuse: found.refuse };
    }
    if found.edits.is_empty() {
        return Repaired { source: src, notes: found.notes, diagnosis: found.diagnosis, format, refuse: found.refuse };
    }
    let source = Box::new(Spliced::new(src, len, found.edits));
    Repaired { source, notes: found.notes, diagnosis: found.diagnosis, format, refuse: found.refuse }
}

/// One change to the byte stream, at an offset of the original file.
#[derive(Debug, Clone, PartialEq)]
enum Edit {
    /// Replace `bytes.len()` bytes at `at` with `bytes`.
    Replace { at: u64, bytes: Vec<u8> },
    /// Insert `bytes` before the original byte at `at`.
    Insert { at: u64, bytes: Vec<u8> },
}

#[derive(Default)]
struct Found {
    edits: Vec<Edit>,
    notes: Vec<String>,
    diagnosis: Option<String>,
    refuse: Option<String>,
}

/// Channel positions symphonia knows (`Channels`, FRONT_LEFT .. TOP_REAR_RIGHT).
const MAX_MASK_CHANNELS: u32 = 18;

/// Checks a `fmt ` chunk of `n` bytes at `off`: for WAVE_FORMAT_EXTENSIBLE, the channel mask against the channel
/// count (see the module documentation).
fn wav_fmt(src: &mut Box<dyn MediaSource>, off: u64, n: u32, f: &mut Found) {
    if n < 16 {
        return;
    }
    let Some(b) = read_at(src, off + 8, 16) else { return };
    // symphonia panics on a rate of 0 (a time base of 0) before any check of its own.
    if u32le(&b[4..8]) == 0 {
        f.refuse = Some("the WAV header gives a sample rate of 0 Hz: the file is damaged; re-export it".into());
        return;
    }
    // symphonia's ADPCM decoders handle one or two channels and panic (unreachable) on more.
    let (format, channels) = (u16::from_le_bytes([b[0], b[1]]), u16::from_le_bytes([b[2], b[3]]));
    if matches!(format, 0x0002 | 0x0011) && channels > 2 {
        f.refuse = Some(format!(
            "the WAV file is ADPCM with {channels} channels; ADPCM is read in mono or stereo only (convert it to PCM)"
        ));
        return;
    }
    if n < 40 {
        return;
    }
    let Some(b) = read_at(src, off + 8, 24) else { return };
    if u16::from_le_bytes([b[0], b[1]]) != 0xfffe {
        return;
    }
    let channels = u16::from_le_bytes([b[2], b[3]]) as u32;
    let mask = u32le(&b[20..24]);
    if mask.count_ones() == channels {
        return;
    }
    if channels > MAX_MASK_CHANNELS {
        f.refuse = Some(format!(
            "the WAV file says it has {channels} channels; at most {MAX_MASK_CHANNELS} are read (convert it with a \
             sound editor, or extract the channel to judge)"
        ));
        return;
    }
    let fixed = if channels == 0 { 0 } else { u32::MAX >> (32 - channels) };
    f.edits.push(Edit::Replace { at: off + 8 + 20, bytes: fixed.to_le_bytes().to_vec() });
    f.notes.push(format!(
        "the WAV channel mask names {} channels but the file has {channels}; the channels are read in order",
        mask.count_ones()
    ));
}

/// A length for a message: exact in bytes up to 100,000, else in MB or GB (a damaged header's length can be any
/// 32-bit number, which says nothing to a reader in digits).
fn size(n: u64) -> String {
    match n {
        0..=99_999 => format!("{n} bytes"),
        100_000..=999_999_999 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

/// Reads exactly `n` bytes at `at`, or `None` (end of file, read error).
fn read_at(src: &mut Box<dyn MediaSource>, at: u64, n: usize) -> Option<Vec<u8>> {
    src.seek(SeekFrom::Start(at)).ok()?;
    let mut b = vec![0u8; n];
    src.read_exact(&mut b).ok()?;
    Some(b)
}

fn u32le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn printable_tag(t: &[u8]) -> bool {
    t.len() == 4 && t[0] != b' ' && t.iter().all(|&c| (0x20..=0x7e).contains(&c))
}

fn show_tag(t: &[u8]) -> String {
    if printable_tag(t) {
        format!("'{}'", String::from_utf8_lossy(t))
    } else {
        format!("0x{}", t.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// How plausible a chunk header at `at` is: 2 = a known tag whose length fits the file, 1 = a printable tag
/// whose length fits, 0 = no chunk header there.
fn chunk_score(src: &mut Box<dyn MediaSource>, at: u64, file_len: u64) -> u8 {
    let Some(h) = read_at(src, at, 8) else { return 0 };
    if !printable_tag(&h[..4]) {
        return 0;
    }
    let n = u32le(&h[4..]) as u64;
    // A data chunk may run past the end (a truncated file) or be "unknown" (0xFFFFFFFF).
    let fits = &h[..4] == b"data" || at + 8 + n <= file_len;
    match (fits, KNOWN_TAGS.iter().any(|t| t[..] == h[..4])) {
        (false, _) => 0,
        (true, true) => 2,
        (true, false) => 1,
    }
}

/// Walks the chunks of a RIFF/WAVE file up to its data chunk (see the module documentation).
fn wav(src: &mut Box<dyn MediaSource>, file_len: u64, h: &[u8]) -> Found {
    let mut f = Found::default();
    let riff_len = u32le(&h[4..8]);
    let mut off = 12u64;
    let mut pads: Vec<u64> = Vec::new();
    let mut prev: Option<(Vec<u8>, u64)> = None;
    let mut data: Option<(u64, u32)> = None;
    for _ in 0..MAX_CHUNKS {
        if off + 8 > file_len {
            f.diagnosis = Some(match &prev {
                Some((t, at)) => format!(
                    "the file ends at byte {file_len}, after the {} chunk at byte {at}, before any data chunk: it \
                     is cut off or is a header without audio",
                    show_tag(t)
                ),
                None => format!("the file ends at byte {file_len}, right after the RIFF header: it holds no chunk"),
            });
            return f;
        }
        let Some(ch) = read_at(src, off, 8) else { return f };
        let (tag, n) = (&ch[..4], u32le(&ch[4..]));
        if !printable_tag(tag) {
            f.diagnosis = Some(match &prev {
                Some((t, at)) => format!(
                    "the {} chunk at byte {at} is followed at byte {off} by {} where a chunk header should be: the \
                     file is damaged at byte {off} (or that chunk's length is wrong)",
                    show_tag(t),
                    show_tag(tag)
                ),
                None => {
                    format!("byte 12 should start the first chunk but holds {}: the file is damaged", show_tag(tag))
                }
            });
            return f;
        }
        if tag == b"data" {
            data = Some((off, n));
            break;
        }
        if tag == b"fmt " {
            wav_fmt(src, off, n, &mut f);
            if f.refuse.is_some() {
                return f;
            }
        }
        let next = off + 8 + n as u64;
        if next > file_len {
            f.diagnosis = Some(format!(
                "the {} chunk at byte {off} says it holds {}, past the end of the file ({file_len} bytes), and \
                 no data chunk comes before it: the file is cut off or damaged",
                show_tag(tag),
                size(n as u64)
            ));
            return f;
        }
        let mut step = next;
        if n % 2 == 1 {
            let padded = chunk_score(src, next + 1, file_len);
            let unpadded = chunk_score(src, next, file_len);
            if padded > 0 && padded >= unpadded {
                step = next + 1;
            } else if unpadded > 0 && pads.len() < MAX_PADS {
                pads.push(next);
                f.notes.push(format!(
                    "the {} chunk at byte {off} has an odd length ({n} bytes) but lacks the pad byte RIFF requires \
                     after it; read as if the pad byte were there",
                    show_tag(tag)
                ));
            } else {
                f.diagnosis = Some(format!(
                    "the {} chunk at byte {off} has an odd length ({n} bytes) and no chunk header follows it, with or \
                     without the pad byte RIFF requires: the file is damaged in or after that chunk",
                    show_tag(tag)
                ));
                return f;
            }
        }
        prev = Some((tag.to_vec(), off));
        off = step;
    }
    let Some((data_off, data_len)) = data else { return f };
    // symphonia counts the chunks from byte 12 against the RIFF size, which also counts the 4 bytes of "WAVE":
    // it accepts a RIFF size down to 4 bytes short of the right one.
    let inserted = pads.len() as u64;
    let right = data_off + inserted + 8 + data_len as u64 - 8;
    let accepted = right - 4;
    let mut edits = Vec::new();
    if data_len == u32::MAX && riff_len != u32::MAX {
        // ffmpeg writing to a pipe: both sizes unknown; symphonia accepts that only when both say so.
        edits.push(Edit::Replace { at: 4, bytes: u32::MAX.to_le_bytes().to_vec() });
        f.notes.push(format!(
            "the data chunk's size is unknown (0xFFFFFFFF) but the RIFF size says {riff_len} bytes; read as unknown \
             too"
        ));
    } else if data_len != u32::MAX && (riff_len as u64) < accepted {
        let fixed = right.min(u32::MAX as u64) as u32;
        let short = right - riff_len as u64;
        let why = if short == 8 { " (a known writer bug that leaves out the data chunk's 8-byte header)" } else { "" };
        edits.push(Edit::Replace { at: 4, bytes: fixed.to_le_bytes().to_vec() });
        f.notes.push(format!(
            "the RIFF header gives a size of {riff_len} bytes, {short} short of the chunks it holds{why}; read as \
             {fixed}"
        ));
    }
    edits.extend(pads.into_iter().map(|at| Edit::Insert { at, bytes: vec![0] }));
    f.edits.extend(edits);
    f
}

/// Checks the STREAMINFO block of a FLAC stream, after an optional ID3v2 tag (see the module documentation).
/// Also says whether the stream is FLAC at all.
fn flac(src: &mut Box<dyn MediaSource>, file_len: u64, h: &[u8]) -> (Found, bool) {
    let mut f = Found::default();
    let mut off = 0u64;
    if &h[..3] == b"ID3" {
        // ID3v2: 10-byte header, syncsafe size, optional 10-byte footer (flag bit 4).
        let size = h[6..10].iter().fold(0u64, |s, &b| (s << 7) | (b & 0x7f) as u64);
        off = 10 + size + if h[5] & 0x10 != 0 { 10 } else { 0 };
    }
    let Some(b) = read_at(src, off, 12) else { return (f, false) };
    if &b[..4] != b"fLaC" {
        return (f, false);
    }
    // The STREAMINFO header: type 0 (the top bit marks the last block), length 34. The other blocks are walked
    // whatever it says, as symphonia reads them.
    let streaminfo = b[4] & 0x7f == 0 && b[5..8] == [0, 0, 34];
    // The sample rate: 20 bits at byte 10 of STREAMINFO; 0 is invalid (and symphonia panics on it).
    if streaminfo {
        if let Some(r) = read_at(src, off + 8 + 10, 3) {
            if (u32::from(r[0]) << 12 | u32::from(r[1]) << 4 | u32::from(r[2]) >> 4) == 0 {
                f.refuse =
                    Some("the FLAC header gives a sample rate of 0 Hz: the file is damaged; re-export it".into());
                return (f, true);
            }
        }
    }
    let min = u16::from_be_bytes([b[8], b[9]]);
    let max = u16::from_be_bytes([b[10], b[11]]);
    // The metadata blocks: damaged tag blocks are read as padding. The first frame header follows the last
    // block: its sync code says fixed (0xFFF8) or variable (0xFFF9) block sizes.
    let mut pos = off + 4;
    let mut fixed = true;
    for _ in 0..MAX_CHUNKS {
        let Some(bh) = read_at(src, pos, 4) else { break };
        let n = u32::from_be_bytes([0, bh[1], bh[2], bh[3]]);
        // VORBIS_COMMENT, CUESHEET, PICTURE: read as PADDING (1), the last-block flag kept.
        if matches!(bh[0] & 0x7f, 4..=6) {
            f.edits.push(Edit::Replace { at: pos, bytes: vec![(bh[0] & 0x80) | 1] });
            if bh[0] & 0x7f == 4 {
                if let Some(why) = vorbis_comment_damage(src, pos + 4, n) {
                    f.notes.push(format!("the FLAC tag block at byte {pos} is damaged ({why}); its tags are ignored"));
                }
            }
        }
        pos += 4 + n as u64;
        if bh[0] & 0x80 != 0 {
            if let Some(sync) = read_at(src, pos, 2) {
                fixed = sync != [0xff, 0xf9];
            }
            break;
        }
        if pos >= file_len {
            break;
        }
    }
    if !streaminfo || min >= 16 || max < 16 {
        return (f, true);
    }
    let new_min = if fixed { max } else { 16 };
    f.edits.push(Edit::Replace { at: off + 8, bytes: new_min.to_be_bytes().to_vec() });
    f.notes.push(format!(
        "the FLAC STREAMINFO gives a minimum block size of {min} samples (libFLAC and ffmpeg ignore this field); read \
         as {new_min}"
    ));
    (f, true)
}

/// Most comments checked in a tag block; a block with more is left to symphonia (each length is still bounded by
/// the 16 MB block).
const MAX_COMMENTS: u32 = 65_536;

/// Whether a Vorbis comment block of `n` bytes at `at` gives a length past its own end (vendor string, comment
/// count, each comment), and which.
fn vorbis_comment_damage(src: &mut Box<dyn MediaSource>, at: u64, n: u32) -> Option<String> {
    let n = n as u64;
    let len_at = |src: &mut Box<dyn MediaSource>, p: u64| read_at(src, at + p, 4).map(|b| u32le(&b) as u64);
    let past = |what: &str, len: u64| format!("{what} says {}, the block holds {}", size(len), size(n));
    let Some(vendor) = len_at(src, 0) else { return Some(past("it", 4)) };
    if 4 + vendor + 4 > n {
        return Some(past("the vendor string", vendor));
    }
    let mut p = 4 + vendor;
    let count = len_at(src, p)?;
    p += 4;
    if count.saturating_mul(4) > n - p {
        return Some(format!("it says it holds {count} comments, the block holds {}", size(n)));
    }
    for _ in 0..count.min(MAX_COMMENTS as u64) {
        let len = len_at(src, p)?;
        if p + 4 + len > n {
            return Some(past("a comment", len));
        }
        p += 4 + len;
    }
    None
}

/// One piece of the corrected view.
#[derive(Debug)]
enum Piece {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// `len` bytes of the original source from `start`.
    Range { start: u64, len: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Range { len, .. } => *len,
        }
    }
}

/// A source seen through edits: the original bytes in order, some replaced, some inserted. Reads and seeks go
/// to the original source; only the edited bytes are held in memory.
pub(crate) struct Spliced {
    inner: Box<dyn MediaSource>,
    /// Pieces in order with their start in the corrected view.
    pieces: Vec<(u64, Piece)>,
    len: u64,
    pos: u64,
}

impl Spliced {
    /// `edits` at offsets of the original (`inner`, `inner_len` bytes); replacements must not overlap.
    fn new(inner: Box<dyn MediaSource>, inner_len: u64, mut edits: Vec<Edit>) -> Spliced {
        let at = |e: &Edit| match e {
            Edit::Replace { at, .. } | Edit::Insert { at, .. } => *at,
        };
        edits.sort_by_key(at);
        let mut raw: Vec<Piece> = Vec::new();
        let mut cursor = 0u64;
        for e in edits {
            let a = at(&e).min(inner_len).max(cursor);
            if a > cursor {
                raw.push(Piece::Range { start: cursor, len: a - cursor });
            }
            match e {
                Edit::Insert { bytes, .. } => {
                    raw.push(Piece::Bytes(bytes));
                    cursor = a;
                }
                Edit::Replace { bytes, .. } => {
                    let n = (bytes.len() as u64).min(inner_len - a);
                    raw.push(Piece::Bytes(bytes[..n as usize].to_vec()));
                    cursor = a + n;
                }
            }
        }
        if cursor < inner_len {
            raw.push(Piece::Range { start: cursor, len: inner_len - cursor });
        }
        let mut pieces = Vec::with_capacity(raw.len());
        let mut v = 0u64;
        for p in raw {
            let n = p.len();
            pieces.push((v, p));
            v += n;
        }
        Spliced { inner, pieces, len: v, pos: 0 }
    }
}

impl Read for Spliced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        // The last piece starting at or before pos.
        let i = self.pieces.partition_point(|(s, _)| *s <= self.pos) - 1;
        let (start, piece) = &self.pieces[i];
        let within = self.pos - start;
        let room = (piece.len() - within).min(buf.len() as u64) as usize;
        let n = match piece {
            Piece::Bytes(b) => {
                buf[..room].copy_from_slice(&b[within as usize..within as usize + room]);
                room
            }
            Piece::Range { start: s, .. } => {
                self.inner.seek(SeekFrom::Start(s + within))?;
                self.inner.read(&mut buf[..room])?
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Spliced {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file")),
        }
    }
}

impl MediaSource for Spliced {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn spliced(bytes: &[u8], edits: Vec<Edit>) -> Vec<u8> {
        let mut s = Spliced::new(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64, edits);
        let mut out = Vec::new();
        // Small reads cross piece boundaries.
        let mut buf = [0u8; 3];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out.len() as u64, s.byte_len().unwrap());
        out
    }

    #[test]
    fn splicing_replaces_and_inserts() {
        let b: Vec<u8> = (0u8..20).collect();
        let out =
            spliced(&b, vec![Edit::Insert { at: 10, bytes: vec![99] }, Edit::Replace { at: 2, bytes: vec![50, 51] }]);
        let mut want = b.clone();
        want[2] = 50;
        want[3] = 51;
        want.insert(10, 99);
        assert_eq!(out, want);
        // Seeking then reading.
        let mut s = Spliced::new(Box::new(Cursor::new(b.clone())), 20, vec![Edit::Insert { at: 0, bytes: vec![7] }]);
        s.seek(SeekFrom::End(-2)).unwrap();
        let mut two = [0u8; 2];
        s.read_exact(&mut two).unwrap();
        assert_eq!(two, [18, 19]);
        assert!(s.seek(SeekFrom::Current(-100)).is_err());
        // An edit past the end is clamped.
        assert_eq!(spliced(&b[..4], vec![Edit::Replace { at: 3, bytes: vec![9, 9, 9] }]), vec![0, 1, 2, 9]);
    }

    fn wav_with(chunks: &[(&[u8; 4], Vec<u8>, bool)], riff_delta: i64) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (tag, payload, pad) in chunks {
            body.extend_from_slice(&tag[..]);
            body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            body.extend_from_slice(payload);
            if *pad && payload.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&((body.len() as i64 + riff_delta) as u32).to_le_bytes());
        out.extend(body);
        out
    }

    fn fmt_pcm16_mono() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&8000u32.to_le_bytes());
        f.extend_from_slice(&16000u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f
    }

    fn run(bytes: Vec<u8>) -> (Vec<u8>, Vec<String>, Option<String>) {
        let r = repair(Box::new(Cursor::new(bytes)));
        let mut src = r.source;
        let mut out = Vec::new();
        src.read_to_end(&mut out).unwrap();
        (out, r.notes, r.diagnosis)
    }

    #[test]
    fn intact_files_pass_through() {
        let w = wav_with(&[(b"fmt ", fmt_pcm16_mono(), true), (b"data", vec![1, 2, 3, 4], true)], 0);
        let (out, notes, diag) = run(w.clone());
        assert_eq!((out, notes, diag), (w, vec![], None));
        let (out, notes, _) = run(b"OggS and more".to_vec());
        assert_eq!((out, notes.len()), (b"OggS and more".to_vec(), 0));
    }

    #[test]
    fn short_riff_size_is_rewritten() {
        let w = wav_with(&[(b"fmt ", fmt_pcm16_mono(), true), (b"data", vec![1, 2, 3, 4], true)], -8);
        let (out, notes, diag) = run(w.clone());
        assert_eq!(u32le(&out[4..]) as usize, w.len() - 8);
        assert_eq!(out[8..], w[8..]);
        assert!(notes[0].contains("8-byte header"), "{notes:?}");
        assert_eq!(diag, None);
    }

    #[test]
    fn missing_pad_byte_is_inserted_or_named() {
        let w = wav_with(
            &[(b"fmt ", fmt_pcm16_mono(), true), (b"note", b"abc".to_vec(), false), (b"data", vec![1, 2], true)],
            0,
        );
        let (out, notes, diag) = run(w.clone());
        assert_eq!(out.len(), w.len() + 1);
        assert_eq!(&out[36 + 8 + 3..36 + 8 + 4], &[0]);
        assert_eq!(&out[36 + 8 + 4..36 + 8 + 8], b"data");
        assert!(notes.iter().any(|n| n.contains("'note' chunk at byte 36") && n.contains("pad byte")), "{notes:?}");
        assert_eq!(diag, None);
        // Garbage after the odd chunk: nothing to repair, the chunk is named.
        let mut bad = w.clone();
        bad[36 + 8 + 3..36 + 8 + 7].copy_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        let (out, _, diag) = run(bad.clone());
        assert_eq!(out, bad);
        let d = diag.unwrap();
        assert!(d.contains("'note' chunk at byte 36") && d.contains("odd length (3 bytes)"), "{d}");
    }

    #[test]
    fn flac_minimum_block_size() {
        // fLaC, STREAMINFO (last block) with min 0 / max 4096, then a fixed-blocksize frame sync.
        let mut f = b"fLaC".to_vec();
        f.extend_from_slice(&[0x80, 0, 0, 34]);
        let mut info = vec![0u8; 34];
        info[2..4].copy_from_slice(&4096u16.to_be_bytes());
        info[10..13].copy_from_slice(&[0x03, 0xe8, 0x01]); // 16000 Hz, mono

        f.extend_from_slice(&info);
        f.extend_from_slice(&[0xff, 0xf8, 0x69, 0x08]);
        let (out, notes, _) = run(f.clone());
        assert_eq!(&out[8..10], &4096u16.to_be_bytes());
        assert_eq!(out.len(), f.len());
        assert!(notes[0].contains("minimum block size of 0"), "{notes:?}");
        // Variable block sizes, behind an ID3v2 tag of 5 bytes.
        let mut g = b"ID3\x04\x00\x00\x00\x00\x00\x05hello".to_vec();
        let at = g.len();
        g.extend_from_slice(&f);
        let n = g.len();
        g[n - 3] = 0xf9;
        let (out, _, _) = run(g);
        assert_eq!(&out[at + 8..at + 10], &16u16.to_be_bytes());
    }

    fn repaired(bytes: Vec<u8>) -> Repaired {
        repair(Box::new(Cursor::new(bytes)))
    }

    /// A minimal FLAC header: STREAMINFO (block sizes 4096) then one VORBIS_COMMENT block holding `comment`, the
    /// last block.
    fn flac_with_comment(comment_len_field: u32, comment: &[u8]) -> Vec<u8> {
        let mut b = b"fLaC".to_vec();
        b.extend_from_slice(&[0, 0, 0, 34, 0x10, 0, 0x10, 0]);
        // Frame sizes unknown, then 16000 Hz (20 bits), mono, 16 bits, the rest zero.
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0x01, 0xf0]);
        b.extend_from_slice(&[0u8; 20]);
        let mut body = Vec::new();
        body.extend_from_slice(&4u32.to_le_bytes());
        body.extend_from_slice(b"test");
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&comment_len_field.to_le_bytes());
        body.extend_from_slice(comment);
        let n = body.len() as u32;
        b.extend_from_slice(&[0x84, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        b.extend_from_slice(&body);
        b.extend_from_slice(&[0xff, 0xf8, 0, 0]);
        b
    }

    #[test]
    fn a_flac_tag_block_with_a_comment_past_its_end_is_read_as_padding() {
        // Found by fuzzing: symphonia allocated the 3.7 GB this comment claims before reading it.
        let bad = flac_with_comment(3_722_304_989, b"ARTIST=x");
        let r = repaired(bad.clone());
        assert!(r.notes.iter().any(|n| n.contains("tag block at byte 42 is damaged")), "{:?}", r.notes);
        let mut s = r.source;
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out[42], 0x81, "read as the last block, of type PADDING");
        assert_eq!(out[..42], bad[..42]);
        // A sound block is read as padding too, without a warning: tags are never parsed.
        let good = flac_with_comment(8, b"ARTIST=x");
        let r = repaired(good);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        let mut s = r.source;
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out[42], 0x81);
    }

    /// A WAVE_FORMAT_EXTENSIBLE header of `channels` channels and `mask`, with 4 bytes of data.
    fn extensible_wav(channels: u16, mask: u32) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&0xfffeu16.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&16_000u32.to_le_bytes());
        fmt.extend_from_slice(&(16_000u32 * 2 * channels as u32).to_le_bytes());
        fmt.extend_from_slice(&(2 * channels).to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&mask.to_le_bytes());
        fmt.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]);
        let mut b = b"RIFF".to_vec();
        b.extend_from_slice(&(4 + 8 + fmt.len() as u32 + 8 + 4).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        b.extend_from_slice(&fmt);
        b.extend_from_slice(b"data");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    #[test]
    fn a_wav_channel_mask_that_does_not_match_the_channels_is_rewritten_or_refused() {
        // Found by fuzzing: symphonia's own correction of such a mask overflows a shift.
        let r = repaired(extensible_wav(2, 0x8000_0000));
        assert!(
            r.notes.iter().any(|n| n.contains("channel mask names 1 channels but the file has 2")),
            "{:?}",
            r.notes
        );
        let mut out = Vec::new();
        let mut s = r.source;
        s.read_to_end(&mut out).unwrap();
        assert_eq!(u32le(&out[40..44]), 0b11);
        assert!(repaired(extensible_wav(2, 0b11)).notes.is_empty());
        let r = repaired(extensible_wav(40, 0));
        assert!(r.refuse.as_deref().is_some_and(|w| w.contains("40 channels")), "{:?}", r.refuse);
    }

    #[test]
    fn a_wav_or_flac_of_sample_rate_0_is_refused_before_symphonia_reads_it() {
        // symphonia panics on a time base of 0 (the wasm build then aborts).
        let mut wav = extensible_wav(2, 0b11);
        wav[24..28].copy_from_slice(&0u32.to_le_bytes());
        let r = repaired(wav);
        assert!(r.refuse.as_deref().is_some_and(|w| w.contains("sample rate of 0 Hz")), "{:?}", r.refuse);
        let mut flac = flac_with_comment(8, b"ARTIST=x");
        flac[18..21].copy_from_slice(&[0, 0, 0]);
        let r = repaired(flac);
        assert!(r.refuse.as_deref().is_some_and(|w| w.contains("sample rate of 0 Hz")), "{:?}", r.refuse);
    }

    #[test]
    fn adpcm_of_more_than_two_channels_is_refused() {
        // Found by fuzzing: symphonia's ADPCM decoders reach `unreachable!()` for three channels or more.
        let mut wav = extensible_wav(3, 0b111);
        wav[20..22].copy_from_slice(&0x0011u16.to_le_bytes());
        let r = repaired(wav);
        assert!(r.refuse.as_deref().is_some_and(|w| w.contains("ADPCM with 3 channels")), "{:?}", r.refuse);
    }
}
