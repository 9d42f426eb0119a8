//! Audio in: decoding (symphonia), channel selection, resampling (rubato).
//!
//! Samples are `f32` in [-1, 1]. Channels are planar: `channels[c][i]` is sample `i` of channel `c`.
//!
//! # One decoder for both faces
//!
//! The command line and the web page read files through the same code: [`MonoStream`] decodes any seekable
//! source (a file natively, a `Blob` read in slices in the page's worker, bytes in memory) one packet at a time,
//! mixes or picks channels and resamples to the model's rate with bounded memory. [`decode`] and `decode_file`
//! (native only) give the planar samples at the file's own rate.
//!
//! # Damaged input
//!
//! Decoding never panics on hostile bytes (the decoder is also run under `catch_unwind` natively) and returns
//! [`Error::Audio`] with a message that says what was wrong. Files that are damaged in ways other decoders
//! tolerate are read, with a warning (see [`DecodedAudio::warnings`] and [`MonoStream::warnings`]):
//!
//! - **Repaired headers** (module `repair`): a WAV whose RIFF size is too small for its chunks (the writer bug
//!   that leaves out the data chunk's header), a WAV chunk of odd length without its pad byte, a FLAC whose
//!   STREAMINFO minimum block size is below 16. A WAV chunk list damaged beyond that is refused with a message
//!   that names the damaged chunk and its byte offset.
//! - **Truncated file** (the stream ends before the length its header announces): the samples that could be
//!   decoded are returned, a trailing partial frame is dropped, and a warning gives both durations. A file that
//!   yields no sample at all is an error.
//! - **Corrupt packets** in the middle of a stream: a packet the codec rejects is skipped (its samples are
//!   lost, the rest of the stream is kept, a warning counts them) up to [`MAX_BAD_PACKETS`] packets; one more
//!   fails the whole decode with the codec's last message.
//! - **Non-finite samples** (NaN, +-inf in float WAV): an error naming the first bad sample (index, channel and
//!   time), never silently replaced.
//! - **Chained streams** (concatenated Ogg streams, or a stream whose rate or channel count changes): every link
//!   is decoded. [`MonoStream`] resamples each link from its own rate to the target rate; [`decode`] returns
//!   the links at the first link's rate and channel count (a later link in another format is resampled from its
//!   own rate and its channels mixed, with a warning).
//!
//! # Resampling
//!
//! [`resample`] and [`MonoStream`] use rubato's synchronous FFT resampler (`FftFixedInOut`): the input is cut
//! into blocks of `N` samples (`N` an even multiple of `from_hz / gcd`, at least [`MIN_RESAMPLER_BLOCK`]),
//! each block is low-pass filtered by an `N`-tap Blackman-Harris² windowed sinc (cut-off about
//! `1 - 13.7 / N` of the lower Nyquist frequency) and resampled in the frequency domain, and the blocks are
//! overlap-added. The filter's delay (`M / 2` output samples, `M = N * to_hz / from_hz`, an integer because
//! `N` is chosen even with `M` even) is removed, so output sample `k` sits at time `k / to_hz` like input
//! sample `i` at `i / from_hz`. Because the block grid only depends on the sample position, streaming the same
//! samples in any piece sizes gives bit-identical output. A rate pair whose reduced ratio has a term above
//! [`MAX_RESAMPLER_RATIO_TERM`] (no large common factor, e.g. 484,799 Hz -> 22,050 Hz: blocks of a million
//! samples) is resampled at the closest ratio of smaller terms, within [`MAX_RESAMPLE_RATIO_ERROR`]; every pair
//! of common rates is resampled at its exact ratio.

use crate::error::{Error, Result};

use rubato::{FftFixedInOut, Resampler};
use symphonia::core::audio::{AudioBuffer, AudioBufferRef, Signal};
use symphonia::core::codecs::{CodecParameters, CodecType, Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
pub use symphonia::core::io::MediaSource;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadBytes, SeekBuffered};

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

mod repair;

/// How many undecodable packets a stream may contain before decoding fails (they are skipped until then).
pub const MAX_BAD_PACKETS: usize = 16;

/// Most links (chained streams, or changes of rate or channel count) a file may have; more is refused as
/// damaged.
pub const MAX_LINKS: usize = 1024;

/// Minimum input block of the FFT resampler, input samples (the actual block is an even multiple of
/// `from_hz / gcd(from_hz, to_hz)` of at least this size). The low-pass filter has as many taps.
pub const MIN_RESAMPLER_BLOCK: usize = 1024;

/// Highest sample rate [`resample`] and [`MonoStream`] accept, Hz (the lowest is [`MIN_SAMPLE_RATE`]). The FFT
/// blocks grow with the terms of the reduced rate ratio (bounded by [`MAX_RESAMPLER_RATIO_TERM`]) and with the
/// ratio itself (at most 768 : 1 between these rates).
pub const MAX_RESAMPLE_RATE_HZ: u32 = 768_000;

/// Largest term of the reduced rate ratio the resampler works at exactly (its FFT block is an even multiple of
/// the input term, its output block of the output term). Rate pairs beyond it (ratios without a large common
/// factor, e.g. 484,799 Hz -> 22,050 Hz, whose exact blocks would be a million samples long) are resampled at the
/// closest ratio of terms up to it, within [`MAX_RESAMPLE_RATIO_ERROR`].
pub const MAX_RESAMPLER_RATIO_TERM: u32 = 65_536;

/// Largest relative error of the rate ratio used for rate pairs beyond [`MAX_RESAMPLER_RATIO_TERM`] (the closest
/// fraction came within 7.6e-6, about `1 / (2 * 65536)`, of the ratio of every rate from 1 kHz to 768 kHz to the
/// models' rates and of 200,000 random pairs of such rates): a frequency
/// is off by at most that fraction (0.0008 %), a time by at most 36 ms an hour; the output keeps its length
/// `round(len * to_hz / from_hz)`. Pairs whose ratio cannot be approximated so closely are refused.
pub const MAX_RESAMPLE_RATIO_ERROR: f64 = 1e-5;

/// Largest magnitude of a sample [`resample`] and [`StreamResampler`] accept (audio is within +-1; the FFT of a
/// block stays finite far beyond this).
pub const MAX_RESAMPLE_ABS: f32 = 1.0e20;

/// Lowest sample rate a file may give and the resampler takes, Hz: below it the header is damaged (telephone audio
/// is 8000 Hz), and resampling a few samples a second up to the model's rate would take long for nothing.
pub const MIN_SAMPLE_RATE: u32 = 1000;

/// Target size of the chunks [`MonoStream::next_chunk`] yields, output samples (the last one may be shorter,
/// others may be longer by less than one resampler block).
pub const STREAM_CHUNK: usize = 16_384;

/// Most warnings kept per file; more are summed up in one last line.
const MAX_WARNINGS: usize = 12;

/// Formats the message suffix listing what is supported.
const SUPPORTED: &str = "supported: WAV (PCM, IEEE float, ADPCM), FLAC, OGG/Vorbis, MP3";

/// Words that start the reason of an error for a format this decoder does not read (see
/// [`is_unsupported_format`]).
const NOT_RECOGNISED: &str = "not a recognised audio file";
/// Same, for a container read but a codec not decoded.
const CODEC_UNSUPPORTED: &str = "the audio codec is not supported";

/// Decoded PCM audio, planar.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// `[channels][samples]`, all channels the same length.
    pub channels: Vec<Vec<f32>>,
    /// What was repaired, cut short, skipped or converted while decoding (plain sentences naming the file); empty
    /// for an intact file. Callers show them (the CLI on stderr, the page in its status line).
    pub warnings: Vec<String>,
}

impl DecodedAudio {
    /// Number of samples per channel.
    pub fn len(&self) -> usize {
        self.channels.first().map_or(0, |c| c.len())
    }
    /// True if there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Duration, seconds.
    pub fn duration_s(&self) -> f64 {
        self.len() as f64 / self.sample_rate.max(1) as f64
    }
}

/// One link of a stream: most files have one; chained Ogg streams and streams that change rate or channel count
/// have several, one after the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: usize,
    /// Codec (symphonia's short name: `pcm_s16le`, `flac`, `vorbis`, `mp3`, ...).
    pub codec: &'static str,
    /// Frames (samples per channel) the container announces for this link, if it says.
    pub announced_frames: Option<u64>,
    /// Most frames the file's bytes can hold, for uncompressed PCM of a known sample size (a damaged header may
    /// announce far more than the file holds).
    pub max_frames: Option<u64>,
    /// Frames decoded so far.
    pub frames: u64,
}

/// Most frames `byte_len` bytes of uncompressed PCM with `params` can hold (none for other codecs).
fn pcm_max_frames(params: &CodecParameters, byte_len: Option<u64>) -> Option<u64> {
    let codec = symphonia::default::get_codecs().get_codec(params.codec)?.short_name;
    if !codec.starts_with("pcm_") {
        return None;
    }
    let bits = params.bits_per_coded_sample.or(params.bits_per_sample)? as u64;
    let channels = params.channels?.count() as u64;
    let byte_len = byte_len?;
    (bits > 0 && channels > 0).then(|| byte_len * 8 / (bits * channels))
}

impl Link {
    fn from_params(params: &CodecParameters) -> Link {
        let codec = symphonia::default::get_codecs().get_codec(params.codec).map_or("unknown", |d| d.short_name);
        Link {
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: params.channels.map_or(0, |c| c.count()),
            codec,
            announced_frames: params.n_frames,
            max_frames: None,
            frames: 0,
        }
    }

    fn describe(&self) -> String {
        let ch = match self.channels {
            1 => "mono".to_string(),
            2 => "stereo".to_string(),
            n => format!("{n} channels"),
        };
        format!("{} Hz {ch}", self.sample_rate)
    }
}

/// Which channel(s) make the mono signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelSelect {
    /// Average of all channels.
    #[default]
    Mix,
    /// One channel, 0-based (MIMII and DCASE baselines use channel 0).
    Channel(usize),
}

/// True if `e` says the data are in a format or codec this decoder does not read (as opposed to a file in a
/// supported format that is damaged): the page then lets the browser try (AAC/M4A, Opus, WebM).
pub fn is_unsupported_format(e: &Error) -> bool {
    match e {
        Error::Audio(m) => m.contains(NOT_RECOGNISED) || m.contains(CODEC_UNSUPPORTED),
        _ => false,
    }
}

// ------------------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------------------

/// Runs `f`, turning a panic inside symphonia (malformed data reaching an assertion) into an error.
fn guarded<T>(name: &str, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        Error::audio(format!(
            "{name}: the decoder failed on malformed data while {what}; the file is corrupt or not really in the \
             format its header claims: re-export it as WAV or FLAC"
        ))
    })
}

/// Names a codec symphonia knows of but this build does not decode, for messages.
fn codec_name(codec: CodecType) -> Option<&'static str> {
    use symphonia::core::codecs as c;
    [
        (c::CODEC_TYPE_OPUS, "Opus"),
        (c::CODEC_TYPE_AAC, "AAC"),
        (c::CODEC_TYPE_ALAC, "ALAC"),
        (c::CODEC_TYPE_SPEEX, "Speex"),
        (c::CODEC_TYPE_MP1, "MPEG layer I"),
        (c::CODEC_TYPE_MP2, "MPEG layer II"),
        (c::CODEC_TYPE_WAVPACK, "WavPack"),
        (c::CODEC_TYPE_EAC3, "E-AC-3"),
        (c::CODEC_TYPE_DCA, "DTS"),
    ]
    .into_iter()
    .find(|(t, _)| *t == codec)
    .map(|(_, n)| n)
}

fn make_decoder(name: &str, params: &CodecParameters) -> Result<Box<dyn Decoder>> {
    guarded(name, "creating the decoder", || symphonia::default::get_codecs().make(params, &DecoderOptions::default()))?
        .map_err(|e| {
            let what = match (&e, codec_name(params.codec)) {
                (SymError::Unsupported(_), Some(n)) => format!("{n}, which this decoder does not read"),
                (SymError::Unsupported(_), None) => format!("codec id {}", params.codec),
                _ => describe_sym(&e),
            };
            Error::audio(format!("{name}: {CODEC_UNSUPPORTED} ({what}); {SUPPORTED}: convert the file to WAV or FLAC"))
        })
}

/// The containers this decoder reads, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Wav,
    Flac,
    Ogg,
    Mp3,
}

/// Reads up to `buf.len()` bytes at the stream's position and seeks back to it, so that they are read again.
fn peek(mss: &mut MediaSourceStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let start = mss.pos();
    let mut n = 0;
    while n < buf.len() {
        match std::io::Read::read(mss, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    mss.seek_buffered(start);
    Ok(n)
}

/// Whether `h` starts with an MPEG audio frame header (11-bit sync, then a valid version, layer, bit rate and
/// sample rate index; ISO/IEC 11172-3, 2.4.1.3), as symphonia's MP3 reader checks it. An AAC ADTS header (layer
/// 0) is not one.
fn is_mpeg_frame_header(h: &[u8]) -> bool {
    if h.len() < 4 {
        return false;
    }
    let w = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    w & 0xffe0_0000 == 0xffe0_0000
        && (w >> 19) & 3 != 1
        && (w >> 17) & 3 != 0
        && (w >> 12) & 0xf != 0xf
        && (w >> 10) & 3 != 3
}

/// Picks the container from the first bytes of `mss` and leaves the stream where that container starts: `RIFF`
/// .. `WAVE` is WAV, `fLaC` FLAC, `OggS` Ogg, an MPEG audio frame header MP3; an ID3v2 tag at the start (ID3v2.4
/// section 3.1: a 10-byte header, a syncsafe size, an optional 10-byte footer) is skipped unread, and is
/// followed by FLAC (`fLaC`) or else MP3 (whose reader syncs to the first frame). `None` for anything else.
///
/// No scan: symphonia's probe looks for format markers anywhere in the first megabyte and parses every ID3v2
/// tag and FLAC header it meets on the way, with the allocations their (possibly damaged) lengths ask for.
fn sniff_container(mss: &mut MediaSourceStream) -> std::io::Result<Option<Container>> {
    let mut h = [0u8; 12];
    let n = peek(mss, &mut h)?;
    let h = &h[..n];
    if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WAVE" {
        return Ok(Some(Container::Wav));
    }
    if h.starts_with(b"fLaC") {
        return Ok(Some(Container::Flac));
    }
    if h.starts_with(b"OggS") {
        return Ok(Some(Container::Ogg));
    }
    if is_mpeg_frame_header(h) {
        return Ok(Some(Container::Mp3));
    }
    if h.len() >= 10 && h.starts_with(b"ID3") {
        let size = h[6..10].iter().fold(0u64, |s, &b| (s << 7) | u64::from(b & 0x7f));
        let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
        mss.ignore_bytes(10 + size + footer)?;
        let mut m = [0u8; 4];
        let k = peek(mss, &mut m)?;
        return Ok(Some(if m[..k] == *b"fLaC" { Container::Flac } else { Container::Mp3 }));
    }
    Ok(None)
}

/// Constructs the format reader of the container [`sniff_container`] names (see there why not symphonia's
/// probe); an unrecognised start is [`SymError::Unsupported`].
fn open_container(
    mut mss: MediaSourceStream,
    fmt: &FormatOptions,
) -> std::result::Result<Box<dyn FormatReader>, SymError> {
    use symphonia::default::formats::{FlacReader, MpaReader, OggReader, WavReader};
    Ok(match sniff_container(&mut mss)? {
        Some(Container::Wav) => Box::new(WavReader::try_new(mss, fmt)?),
        Some(Container::Flac) => Box::new(FlacReader::try_new(mss, fmt)?),
        Some(Container::Ogg) => Box::new(OggReader::try_new(mss, fmt)?),
        Some(Container::Mp3) => Box::new(MpaReader::try_new(mss, fmt)?),
        None => return Err(SymError::Unsupported("no WAV, FLAC, OGG or MP3 header at the start")),
    })
}

/// A format reader and a decoder for the first audio track of each link, delivering planar `f32` packets.
struct PacketDecoder {
    /// Name used in messages: the file path or "input".
    name: String,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    /// The links met so far; the last one is being decoded. Never empty.
    links: Vec<Link>,
    /// The current link has not delivered a packet yet (its rate and channels are then taken from it).
    link_fresh: bool,
    /// Repairs made to the header, and other notes for the warnings.
    notes: Vec<String>,
    bad_packets: usize,
    /// Frames in the packets skipped as corrupt (as far as the container tells).
    lost_frames: u64,
    last_bad: String,
    scratch: Option<AudioBuffer<f32>>,
    /// The first packet, decoded at open time so that the channel count and the rate are known.
    primed: Option<Vec<Vec<f32>>>,
    done: bool,
}

impl PacketDecoder {
    /// Repairs what [`repair::repair`] knows, picks the container from the first bytes of `source`
    /// ([`sniff_container`]), picks the first audio track, makes its decoder and decodes the first packet.
    fn open(name: String, source: Box<dyn MediaSource>, extension_hint: Option<&str>) -> Result<Self> {
        let byte_len = source.byte_len();
        let repaired = repair::repair(source);
        if let Some(why) = &repaired.refuse {
            return Err(Error::audio(format!("{name}: {why}")));
        }
        let _ = extension_hint;
        let mss = MediaSourceStream::new(repaired.source, MediaSourceStreamOptions::default());
        let opened = guarded(&name, "reading the header", || {
            // Gapless: encoder delay and padding (MP3 LAME tags, Ogg granule positions) are trimmed, so that sample
            // positions, hence onsets, are those of the recording.
            let fmt = FormatOptions { enable_gapless: true, ..FormatOptions::default() };
            open_container(mss, &fmt)
        })?;
        let format = match opened {
            Ok(p) => p,
            Err(e) => {
                if let Some(d) = &repaired.diagnosis {
                    return Err(Error::audio(format!(
                        "{name}: the WAV file is damaged: {d}; re-export it, or repair it with a sound editor"
                    )));
                }
                return Err(match (&e, repaired.format) {
                    (SymError::Unsupported(_), _) | (_, None) => {
                        let why = match &e {
                            SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                                "no WAV, FLAC, OGG or MP3 header found before the end of the data".to_string()
                            }
                            SymError::Unsupported(_) => "no WAV, FLAC, OGG or MP3 header at its start".to_string(),
                            other => describe_sym(other),
                        };
                        Error::audio(format!(
                            "{name}: {NOT_RECOGNISED} ({why}); {SUPPORTED}: convert it to WAV or FLAC"
                        ))
                    }
                    (_, Some(fmt)) => Error::audio(format!(
                        "{name}: the {fmt} header is damaged ({}); re-export the file",
                        describe_sym(&e)
                    )),
                });
            }
        };
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| Error::audio(format!("{name}: the file has no audio track; {SUPPORTED}")))?;
        let track_id = track.id;
        let params = track.codec_params.clone();
        let decoder = make_decoder(&name, &params)?;
        if let Some(r) = params.sample_rate.filter(|&r| r < MIN_SAMPLE_RATE) {
            return Err(Error::audio(format!(
                "{name}: the header gives a sample rate of {r} Hz, below any audio's ({MIN_SAMPLE_RATE} Hz or more): the \
                 file is damaged; re-export it"
            )));
        }
        let mut dec = PacketDecoder {
            name,
            format,
            decoder,
            track_id,
            links: vec![Link { max_frames: pcm_max_frames(&params, byte_len), ..Link::from_params(&params) }],
            link_fresh: true,
            notes: repaired.notes,
            bad_packets: 0,
            lost_frames: 0,
            last_bad: String::new(),
            scratch: None,
            primed: None,
            done: false,
        };
        let mut first: Vec<Vec<f32>> = Vec::new();
        match dec.read_packet(&mut first)? {
            Some(_) => dec.primed = Some(first),
            None => return Err(dec.no_samples_error()),
        }
        Ok(dec)
    }

    fn no_samples_error(&self) -> Error {
        if self.bad_packets > 0 {
            Error::audio(format!(
                "{}: no audio could be decoded: {} packet(s) were corrupt (last error: {}); the file is damaged",
                self.name, self.bad_packets, self.last_bad
            ))
        } else {
            Error::audio(format!(
                "{}: the file holds no audio samples (a header without data, or cut off right after it); \
                 record or export it again",
                self.name
            ))
        }
    }

    /// The link being decoded.
    fn link(&self) -> &Link {
        self.links.last().expect("there is always a link")
    }

    /// "link 2 of 3: " for chained streams, nothing otherwise.
    fn link_prefix(&self, i: usize) -> String {
        if self.links.len() > 1 {
            format!("link {} of {}: ", i + 1, self.links.len())
        } else {
            String::new()
        }
    }

    /// Duration announced by the container for the links seen so far, seconds.
    fn duration_s(&self) -> Option<f64> {
        let mut s = 0.0;
        for l in &self.links {
            s += l.announced_frames?.min(l.max_frames.unwrap_or(u64::MAX)) as f64 / l.sample_rate.max(1) as f64;
        }
        Some(s)
    }

    /// What went wrong but did not stop the decoding (complete once the stream has ended).
    fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.notes.iter().map(|n| format!("{}: {n}", self.name)).collect();
        for (i, l) in self.links.iter().enumerate() {
            let Some(a) = l.announced_frames else { continue };
            if self.done && l.frames < a && l.sample_rate > 0 {
                let r = l.sample_rate as f64;
                // A damaged header may announce any 32-bit count: in hours, without the frame count, past 1e8.
                let announced = if a <= 100_000_000 {
                    format!("{:.3} s ({a} frames)", a as f64 / r)
                } else {
                    format!("{:.1} hours", a as f64 / r / 3600.0)
                };
                w.push(format!(
                    "{}: {}shorter than its header says: the header announces {announced} but only {:.3} s ({} \
                     frames) could be read; the file is cut off or damaged, and only the audio present is used",
                    self.name,
                    self.link_prefix(i),
                    l.frames as f64 / r,
                    l.frames
                ));
            }
        }
        if self.bad_packets > 0 {
            let lost = self.lost_frames as f64 / self.link().sample_rate.max(1) as f64;
            w.push(format!(
                "{}: {} corrupt packet(s) were skipped (about {lost:.3} s of audio lost; last error: {})",
                self.name, self.bad_packets, self.last_bad
            ));
        }
        if w.len() > MAX_WARNINGS {
            let more = w.len() - (MAX_WARNINGS - 1);
            w.truncate(MAX_WARNINGS - 1);
            w.push(format!("{}: ... and {more} more warning(s)", self.name));
        }
        w
    }

    /// Counts a bad packet of `frames` frames; fails after [`MAX_BAD_PACKETS`].
    fn bad_packet(&mut self, msg: String, frames: u64) -> Result<()> {
        self.bad_packets += 1;
        self.lost_frames = self.lost_frames.saturating_add(frames);
        self.last_bad = msg;
        if self.bad_packets > MAX_BAD_PACKETS {
            self.done = true;
            let good: u64 = self.links.iter().map(|l| l.frames).sum();
            return Err(Error::audio(format!(
                "{}: more than {MAX_BAD_PACKETS} corrupt packets (after {good} good frames; last error: {}); the file \
                 is damaged: re-export or re-record it",
                self.name, self.last_bad
            )));
        }
        Ok(())
    }

    /// Moves to the next link of a chained stream after the container asked for a reset. Returns false (and
    /// notes it) if the new link holds no audio track.
    fn next_link(&mut self) -> Result<bool> {
        let Some(track) = self.format.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL) else {
            self.notes.push(format!(
                "after link {} the file continues with a stream that holds no audio; that part was not read",
                self.links.len()
            ));
            return Ok(false);
        };
        let (id, params) = (track.id, track.codec_params.clone());
        if self.links.len() >= MAX_LINKS {
            return Err(Error::audio(format!(
                "{}: more than {MAX_LINKS} chained streams: the file is damaged or not a recording",
                self.name
            )));
        }
        let n = self.links.len() + 1;
        self.decoder = make_decoder(&self.name, &params)
            .map_err(|e| Error::audio(format!("link {n} of the chained stream: {}", strip_audio(&e))))?;
        self.track_id = id;
        self.scratch = None;
        self.links.push(Link::from_params(&params));
        self.link_fresh = true;
        Ok(true)
    }

    /// Replaces `out` with the next packet's samples (`[channels][samples]`, resized to the channel count of the
    /// packet's link, [`PacketDecoder::link`]). Returns the number of frames, or `None` at the end of the stream.
    /// Never returns `Some(0)`.
    fn read_packet(&mut self, out: &mut Vec<Vec<f32>>) -> Result<Option<usize>> {
        if let Some(first) = self.primed.take() {
            let n = first.first().map_or(0, |c| c.len());
            *out = first;
            return Ok(Some(n));
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let format = &mut self.format;
            let packet = match guarded(&self.name, "reading a packet", || format.next_packet()) {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            let packet = match packet {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // End of stream; for a truncated file, the end of the valid data.
                    self.done = true;
                    return Ok(None);
                }
                Err(SymError::ResetRequired) => {
                    // A new chained stream begins (the reader has read its headers): decode it too.
                    match self.next_link() {
                        Ok(true) => continue,
                        Ok(false) => {
                            self.done = true;
                            return Ok(None);
                        }
                        Err(e) => {
                            self.done = true;
                            return Err(e);
                        }
                    }
                }
                Err(SymError::IoError(e)) => {
                    self.done = true;
                    return Err(Error::audio(format!(
                        "{}: read error after {} frames: {e}",
                        self.name,
                        self.link().frames
                    )));
                }
                Err(SymError::DecodeError(msg)) => {
                    self.bad_packet(format!("container: {msg}"), 0)?;
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Err(Error::audio(format!(
                        "{}: cannot read the stream after {} frames ({}); the file is damaged or uses an \
                         unsupported feature; {SUPPORTED}",
                        self.name,
                        self.link().frames,
                        describe_sym(&e)
                    )));
                }
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let packet_frames = packet.dur();
            let decoder = &mut self.decoder;
            let scratch = &mut self.scratch;
            // Decode and convert to f32 inside the guard; the buffer borrows the decoder.
            let decoded = guarded(&self.name, "decoding a packet", || -> std::result::Result<_, SymError> {
                let buf = decoder.decode(&packet)?;
                let spec = *buf.spec();
                let frames = buf.frames();
                if frames == 0 {
                    return Ok((spec, 0usize));
                }
                let fits = scratch.as_ref().is_some_and(|s| s.spec() == &spec && s.capacity() >= buf.capacity());
                if !fits {
                    *scratch = Some(buf.make_equivalent::<f32>());
                }
                let dst = scratch.as_mut().expect("scratch buffer was just made");
                match buf {
                    AudioBufferRef::F32(b) => {
                        // Already f32: copy planes without conversion.
                        dst.clear();
                        dst.render_reserved(Some(frames));
                        for c in 0..spec.channels.count() {
                            dst.chan_mut(c).copy_from_slice(b.chan(c));
                        }
                    }
                    other => other.convert(dst),
                }
                Ok((spec, frames))
            });
            let decoded = match decoded {
                Ok(r) => r,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            let (spec, n) = match decoded {
                Ok(r) => r,
                Err(SymError::DecodeError(msg)) => {
                    self.bad_packet(format!("codec: {msg}"), packet_frames)?;
                    continue;
                }
                Err(SymError::IoError(e)) => {
                    // The packet ended before the codec expected: treat it as a corrupt packet.
                    self.bad_packet(format!("codec: packet too short ({e})"), packet_frames)?;
                    continue;
                }
                Err(SymError::ResetRequired) => {
                    // The codec cannot go on with its state: start it afresh, losing this packet.
                    self.decoder.reset();
                    self.bad_packet("codec: the decoder had to be reset".to_string(), packet_frames)?;
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Err(Error::audio(format!(
                        "{}: cannot decode the audio after {} frames ({}); {SUPPORTED}",
                        self.name,
                        self.link().frames,
                        describe_sym(&e)
                    )));
                }
            };
            if n == 0 {
                continue;
            }
            let ch = spec.channels.count();
            if ch == 0 {
                self.done = true;
                return Err(Error::audio(format!("{}: the stream has zero channels: the file is corrupt", self.name)));
            }
            if spec.rate == 0 {
                self.done = true;
                return Err(Error::audio(format!(
                    "{}: the stream has a sample rate of 0 Hz: the file is corrupt",
                    self.name
                )));
            }
            if self.link_fresh {
                // The decoded data decide the link's format (the header may not say, or say otherwise).
                let l = self.links.last_mut().expect("there is always a link");
                l.sample_rate = spec.rate;
                l.channels = ch;
                self.link_fresh = false;
            } else if ch != self.link().channels || spec.rate != self.link().sample_rate {
                // The stream changes format in the middle: the rest is a new link.
                if self.links.len() >= MAX_LINKS {
                    self.done = true;
                    return Err(Error::audio(format!(
                        "{}: the stream changes its rate or channel count more than {MAX_LINKS} times: the file is \
                         damaged",
                        self.name
                    )));
                }
                let codec = self.link().codec;
                self.links.push(Link {
                    sample_rate: spec.rate,
                    channels: ch,
                    codec,
                    announced_frames: None,
                    max_frames: None,
                    frames: 0,
                });
            }
            let src = self.scratch.as_ref().expect("a decoded packet leaves its samples in scratch");
            // Non-finite check (and values no audio has, which the resampler cannot take): the first bad sample in
            // time order (lowest index, then lowest channel).
            let mut first_bad: Option<(usize, usize, f32)> = None;
            for c in 0..ch {
                let plane = &src.chan(c)[..n];
                let limit = first_bad.map_or(n, |(i, _, _)| i);
                if let Some(i) = plane[..limit].iter().position(|x| x.is_nan() || x.abs() > MAX_RESAMPLE_ABS) {
                    first_bad = Some((i, c, plane[i]));
                }
            }
            if let Some((i, c, v)) = first_bad {
                self.done = true;
                let index = self.link().frames + i as u64;
                let kind = if v.is_nan() {
                    "NaN: the file holds non-finite".to_string()
                } else if v.is_infinite() {
                    format!("{}infinity: the file holds non-finite", if v > 0.0 { "+" } else { "-" })
                } else {
                    format!("{v:e}: the file holds absurdly large")
                };
                return Err(Error::audio(format!(
                    "{}: {}sample {index} of channel {c} (at {:.6} s) is {kind} floating-point samples; clean it or \
                     re-export it (e.g. as 16-bit PCM)",
                    self.name,
                    self.link_prefix(self.links.len() - 1),
                    index as f64 / spec.rate as f64
                )));
            }
            out.resize_with(ch, Vec::new);
            for (c, o) in out.iter_mut().enumerate() {
                o.clear();
                o.extend_from_slice(&src.chan(c)[..n]);
            }
            self.links.last_mut().expect("there is always a link").frames += n as u64;
            return Ok(Some(n));
        }
    }

    /// Decodes everything that is left into a [`DecodedAudio`] at the first link's rate and channel count (see
    /// the module documentation for chained streams).
    fn read_all(mut self) -> Result<DecodedAudio> {
        // Per link: [channels][samples].
        let mut per_link: Vec<Vec<Vec<f32>>> = Vec::new();
        let mut packet: Vec<Vec<f32>> = Vec::new();
        while self.read_packet(&mut packet)?.is_some() {
            let li = self.links.len() - 1;
            if per_link.len() <= li {
                per_link.resize_with(li + 1, Vec::new);
            }
            let dst = &mut per_link[li];
            if dst.is_empty() {
                dst.resize_with(packet.len(), Vec::new);
            }
            for (d, s) in dst.iter_mut().zip(&packet) {
                d.extend_from_slice(s);
            }
        }
        let mut warnings = self.warnings();
        let mut links = per_link.into_iter().enumerate().filter(|(_, l)| l.first().is_some_and(|c| !c.is_empty()));
        let Some((first_i, mut channels)) = links.next() else {
            return Err(self.no_samples_error());
        };
        let (rate, n_ch) = (self.links[first_i].sample_rate, channels.len());
        for (i, planes) in links {
            let l = &self.links[i];
            if l.sample_rate == rate && planes.len() == n_ch {
                for (c, p) in channels.iter_mut().zip(planes) {
                    c.extend(p);
                }
                continue;
            }
            // Another format: resample from this link's own rate; mix its channels if their count differs.
            let mut how = Vec::new();
            let planes = if planes.len() == n_ch {
                planes
            } else {
                how.push(format!("its channels mixed to mono and copied to {n_ch} channel(s)"));
                let mut m = Vec::new();
                mono_into(&planes, ChannelSelect::Mix, &mut m);
                vec![m; n_ch]
            };
            if l.sample_rate != rate {
                how.insert(0, format!("resampled from {} Hz to {rate} Hz", l.sample_rate));
            }
            for (c, p) in channels.iter_mut().zip(planes) {
                c.extend(resample(&p, l.sample_rate, rate)?);
            }
            warnings.push(format!(
                "{}: link {} of {} of the chained stream is {}, unlike link {} ({}): {} to follow it",
                self.name,
                i + 1,
                self.links.len(),
                l.describe(),
                first_i + 1,
                self.links[first_i].describe(),
                how.join(" and ")
            ));
        }
        channels.iter_mut().for_each(|c| c.shrink_to_fit());
        Ok(DecodedAudio { sample_rate: rate, channels, warnings })
    }
}

/// The message of an [`Error::Audio`] without its "audio: " prefix.
fn strip_audio(e: &Error) -> String {
    match e {
        Error::Audio(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Short description of a symphonia error.
fn describe_sym(e: &SymError) -> String {
    match e {
        SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the data ends too early".to_string()
        }
        other => other.to_string(),
    }
}

/// Decodes a whole file held in memory (WAV, FLAC, OGG/Vorbis, MP3) to planar `f32` (`[channels][samples]`),
/// any channel count, at the file's sample rate. `extension_hint` (e.g. `"wav"`) is not needed: the first bytes
/// decide. See the module documentation for damaged and chained files; what was repaired or lost is in
/// [`DecodedAudio::warnings`].
///
/// # Errors
/// [`Error::Audio`] for empty, unsupported or corrupt data, for zero channels or sample rate, and for NaN or
/// infinite samples.
pub fn decode(bytes: &[u8], extension_hint: Option<&str>) -> Result<DecodedAudio> {
    if bytes.is_empty() {
        return Err(Error::audio("the input is empty (0 bytes): expected an audio file"));
    }
    let source = Box::new(std::io::Cursor::new(bytes.to_vec()));
    PacketDecoder::open("input".to_string(), source, extension_hint)?.read_all()
}

/// Opens `path` for symphonia, reporting I/O errors with the path.
#[cfg(not(target_arch = "wasm32"))]
fn open_file(path: &Path) -> Result<PacketDecoder> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
    let name = path.display().to_string();
    if len == 0 {
        return Err(Error::audio(format!("{name}: the file is empty (0 bytes)")));
    }
    let ext = path.extension().and_then(|e| e.to_str());
    PacketDecoder::open(name, Box::new(file), ext)
}

/// Decodes the file at `path` like [`decode`] (`[channels][samples]`, at the file's rate), reading it through a
/// buffered stream (the file is not loaded whole besides the decoded samples). Native only.
///
/// # Errors
/// [`Error::Io`] naming the path when the file cannot be opened or read; [`Error::Audio`] as for [`decode`].
#[cfg(not(target_arch = "wasm32"))]
pub fn decode_file(path: &Path) -> Result<DecodedAudio> {
    open_file(path)?.read_all()
}

// ------------------------------------------------------------------------------------------------------------
// Channels
// ------------------------------------------------------------------------------------------------------------

/// Checks `select` against a channel count.
fn check_select(select: ChannelSelect, n_channels: usize) -> Result<()> {
    if n_channels == 0 {
        return Err(Error::invalid("the audio has no channel"));
    }
    if let ChannelSelect::Channel(i) = select {
        if i >= n_channels {
            return Err(Error::invalid(format!(
                "channel {i} does not exist: the audio has {n_channels} channel(s), numbered 0 to {}; pick one \
                 of those or mix them",
                n_channels - 1
            )));
        }
    }
    Ok(())
}

/// Appends the mono signal of `planar` (`[channels][samples]`, equal lengths, `select` already checked).
fn mono_into(planar: &[Vec<f32>], select: ChannelSelect, out: &mut Vec<f32>) {
    match select {
        ChannelSelect::Channel(i) => out.extend_from_slice(&planar[i]),
        ChannelSelect::Mix if planar.len() == 1 => out.extend_from_slice(&planar[0]),
        ChannelSelect::Mix => {
            let start = out.len();
            out.extend_from_slice(&planar[0]);
            let mixed = &mut out[start..];
            for ch in &planar[1..] {
                for (m, &x) in mixed.iter_mut().zip(ch.iter()) {
                    *m += x;
                }
            }
            let n = planar.len() as f32;
            for m in mixed.iter_mut() {
                *m /= n;
            }
        }
    }
}

/// Mono mixdown (mean of the channels) or channel pick: `[samples]`, same sample rate.
///
/// # Errors
/// [`Error::InvalidInput`] if the chosen channel does not exist (the message gives the channel count), if
/// there is no channel, or if the channels differ in length.
pub fn to_mono(audio: &DecodedAudio, select: ChannelSelect) -> Result<Vec<f32>> {
    check_select(select, audio.channels.len())?;
    let n = audio.len();
    if let Some((c, ch)) = audio.channels.iter().enumerate().find(|(_, ch)| ch.len() != n) {
        return Err(Error::invalid(format!(
            "channel {c} has {} samples but channel 0 has {n}: all channels must have the same length",
            ch.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    mono_into(&audio.channels, select, &mut out);
    Ok(out)
}

// ------------------------------------------------------------------------------------------------------------
// Resampling
// ------------------------------------------------------------------------------------------------------------

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The reduced ratio `(in, out)` the resampler works at for `from_hz -> to_hz`: `from_hz / gcd` and `to_hz / gcd`
/// when both are at most [`MAX_RESAMPLER_RATIO_TERM`] (every pair of common rates: the largest is 44,056 Hz ->
/// 22,050 Hz, 22,028 : 11,025), else the closest fraction of terms up to that bound (a best rational
/// approximation from the continued fraction of the ratio), within [`MAX_RESAMPLE_RATIO_ERROR`] of it.
fn resampler_ratio(from_hz: u32, to_hz: u32) -> Result<(usize, usize)> {
    let g = gcd(from_hz as u64, to_hz as u64);
    let (p, q) = (from_hz as u64 / g, to_hz as u64 / g);
    let bound = MAX_RESAMPLER_RATIO_TERM as u64;
    if p.max(q) <= bound {
        return Ok((p as usize, q as usize));
    }
    // The ratio as small / large <= 1, approximated with a denominator (hence both terms) up to the bound.
    let (a, b) = best_fraction(p.min(q), p.max(q), bound);
    let (small, large) = (p.min(q), p.max(q));
    let error = (a as f64 * large as f64 - small as f64 * b as f64).abs() / (small as f64 * b as f64);
    if a == 0 || error > MAX_RESAMPLE_RATIO_ERROR {
        return Err(Error::invalid(format!(
            "cannot resample {from_hz} Hz -> {to_hz} Hz: the rates are too far apart (no fraction of terms up to \
             {bound} comes within {MAX_RESAMPLE_RATIO_ERROR:e} of their ratio)"
        )));
    }
    Ok(if p < q { (a as usize, b as usize) } else { (b as usize, a as usize) })
}

/// The fraction closest to `num / den` (in lowest terms, `num <= den`) whose denominator is at most `max_den`:
/// the last convergent of its continued fraction within the bound, or the semiconvergent after it, whichever
/// is closer (as Python's `Fraction.limit_denominator`).
fn best_fraction(num: u64, den: u64, max_den: u64) -> (u64, u64) {
    if den <= max_den {
        return (num, den);
    }
    let (mut p0, mut q0, mut p1, mut q1) = (0u64, 1u64, 1u64, 0u64);
    let (mut n, mut d) = (num, den);
    while d != 0 {
        let a = n / d;
        let q2 = q0 + a * q1;
        if q2 > max_den {
            break;
        }
        (p0, q0, p1, q1) = (p1, q1, p0 + a * p1, q2);
        (n, d) = (d, n - a * d);
    }
    let k = (max_den - q0) / q1;
    let (p2, q2) = (p0 + k * p1, q0 + k * q1);
    // |p / q - num / den| = |p den - num q| / (q den): compare the two candidates' distances exactly.
    let dist = |p: u64, q: u64| (p as i128 * den as i128 - num as i128 * q as i128).unsigned_abs();
    if dist(p1, q1) * q2 as u128 <= dist(p2, q2) * q1 as u128 {
        (p1, q1)
    } else {
        (p2, q2)
    }
}

/// Output length for `len` input samples: `round(len * to / from)` (halves round up).
fn output_len(len: u64, from_hz: u32, to_hz: u32) -> u64 {
    let num = len as u128 * to_hz as u128;
    ((num + from_hz as u128 / 2) / from_hz as u128) as u64
}

/// Streaming form of [`resample`] for mono samples arriving in pieces (microphone, long files), with bounded
/// memory: feed pieces with [`StreamResampler::push`], end with [`StreamResampler::finish`]. The concatenated
/// output equals [`resample`] of the concatenated input bit for bit, whatever the piece sizes (the filter's
/// delay is removed, the block grid depends only on the sample position). Output lags the input by up to one
/// block plus half a block (see the module documentation). Identity when the rates are equal.
pub struct StreamResampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` when the rates are equal.
    inner: Option<FftFixedInOut<f32>>,
    /// Input block, samples.
    block_in: usize,
    /// Output block, samples.
    block_out: usize,
    /// Input not yet processed (shorter than a block).
    pending: Vec<f32>,
    out_buf: Vec<Vec<f32>>,
    /// Output samples still to drop (the filter's delay).
    skip: usize,
    /// Input samples pushed so far.
    pushed: u64,
    /// Output samples emitted so far.
    emitted: u64,
    finished: bool,
}

impl StreamResampler {
    /// A resampler from `from_hz` to `to_hz` (Hz).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a rate below [`MIN_SAMPLE_RATE`] or above [`MAX_RESAMPLE_RATE_HZ`].
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self> {
        for (what, hz) in [("source", from_hz), ("target", to_hz)] {
            // Below MIN_SAMPLE_RATE, the ratio (up to 768,000 : 1) would make output blocks of hundreds of millions
            // of samples (found by fuzzing: 1 Hz -> 22,050 Hz asked for 180 MB at once).
            if !(MIN_SAMPLE_RATE..=MAX_RESAMPLE_RATE_HZ).contains(&hz) {
                return Err(Error::invalid(format!(
                    "the {what} sample rate {hz} Hz is out of range: it must be between {MIN_SAMPLE_RATE} and \
                     {MAX_RESAMPLE_RATE_HZ} Hz"
                )));
            }
        }
        let mut r = StreamResampler {
            from_hz,
            to_hz,
            inner: None,
            block_in: 0,
            block_out: 0,
            pending: Vec::new(),
            out_buf: Vec::new(),
            skip: 0,
            pushed: 0,
            emitted: 0,
            finished: false,
        };
        if from_hz == to_hz {
            return Ok(r);
        }
        let (in_r, out_r) = resampler_ratio(from_hz, to_hz)?;
        // An even number of reduced blocks makes both N and M even, so the delay M / 2 is a whole sample.
        let mut chunks = MIN_RESAMPLER_BLOCK.div_ceil(in_r).max(2);
        chunks += chunks % 2;
        let inner = FftFixedInOut::<f32>::new(in_r, out_r, chunks * in_r, 1)
            .map_err(|e| Error::invalid(format!("cannot resample {from_hz} Hz -> {to_hz} Hz: {e}")))?;
        let (n, m) = (inner.input_frames_next(), inner.output_frames_next());
        if n != chunks * in_r || m != chunks * out_r || m % 2 != 0 {
            return Err(Error::invalid(format!(
                "cannot resample {from_hz} Hz -> {to_hz} Hz: unexpected resampler block {n} -> {m}"
            )));
        }
        r.block_in = n;
        r.block_out = m;
        r.skip = m / 2;
        r.out_buf = vec![vec![0.0; m]];
        r.pending = Vec::with_capacity(n);
        r.inner = Some(inner);
        Ok(r)
    }

    /// Source sample rate, Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Target sample rate, Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Resamples one full block and appends its output (less the remaining delay, and never past `limit`
    /// emitted samples in total) to `out`.
    fn process_block(&mut self, block: &[f32], limit: u64, out: &mut Vec<f32>) -> Result<()> {
        let inner = self.inner.as_mut().expect("process_block is only called when resampling");
        let (_, m) = inner
            .process_into_buffer(&[block], &mut self.out_buf, None)
            .map_err(|e| Error::invalid(format!("resampling {} Hz -> {} Hz failed: {e}", self.from_hz, self.to_hz)))?;
        let mut produced = &self.out_buf[0][..m];
        let drop = self.skip.min(produced.len());
        self.skip -= drop;
        produced = &produced[drop..];
        let room = limit.saturating_sub(self.emitted) as usize;
        let take = produced.len().min(room);
        out.extend_from_slice(&produced[..take]);
        self.emitted += take as u64;
        Ok(())
    }

    /// Feeds mono input samples (`[samples]` at the source rate) and appends the output that is final so far
    /// (`[samples]` at the target rate, possibly none) to `out`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] after [`StreamResampler::finish`]; [`Error::Audio`] (nothing is taken) for a NaN,
    /// infinite or larger than [`MAX_RESAMPLE_ABS`] sample when the rates differ.
    pub fn push(&mut self, mut x: &[f32], out: &mut Vec<f32>) -> Result<()> {
        if self.finished {
            return Err(Error::invalid("the resampler is finished: start a new StreamResampler"));
        }
        if self.inner.is_some() {
            // The FFT of a block holding NaN, an infinity or a value near the f32 limit fails inside rubato (a
            // panic): such input is refused first.
            if let Some(i) = x.iter().position(|v| v.is_nan() || v.abs() > MAX_RESAMPLE_ABS) {
                return Err(Error::audio(format!(
                    "sample {} is {:e}: not audio (a finite value within +-{MAX_RESAMPLE_ABS:e}); the resampler \
                     cannot take it",
                    self.pushed + i as u64,
                    x[i]
                )));
            }
        }
        self.pushed += x.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(x);
            self.emitted += x.len() as u64;
            return Ok(());
        }
        let n = self.block_in;
        if !self.pending.is_empty() {
            let take = (n - self.pending.len()).min(x.len());
            self.pending.extend_from_slice(&x[..take]);
            x = &x[take..];
            if self.pending.len() == n {
                let block = std::mem::take(&mut self.pending);
                self.process_block(&block, u64::MAX, out)?;
                self.pending = block;
                self.pending.clear();
            }
        }
        while x.len() >= n {
            self.process_block(&x[..n], u64::MAX, out)?;
            x = &x[n..];
        }
        self.pending.extend_from_slice(x);
        Ok(())
    }

    /// Ends the input: appends the rest of the output to `out`, so that exactly `round(pushed * to_hz /
    /// from_hz)` samples have been emitted in total (the input is padded with zeros past its end). Calling it
    /// again does nothing.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if rubato fails (it does not for valid blocks).
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if self.inner.is_none() {
            return Ok(());
        }
        let total = output_len(self.pushed, self.from_hz, self.to_hz);
        let n = self.block_in;
        while self.emitted < total {
            let mut block = std::mem::take(&mut self.pending);
            block.resize(n, 0.0);
            self.process_block(&block, total, out)?;
            block.clear();
            self.pending = block;
        }
        self.pending.clear();
        Ok(())
    }
}

/// Resamples mono `samples` (`[samples]`) from `from_hz` to `to_hz` with rubato's band-limited synchronous FFT
/// resampler (see the module documentation for the filter). The output has `round(len * to_hz / from_hz)`
/// samples and no added delay: output sample `k` is the signal at `k / to_hz` seconds. Works for any length,
/// including empty input and inputs shorter than a resampler block (they are zero-padded). Identity when the
/// rates are equal.
///
/// # Errors
/// [`Error::InvalidInput`] for a rate below [`MIN_SAMPLE_RATE`] or above [`MAX_RESAMPLE_RATE_HZ`]; [`Error::Audio`] for a sample
/// that is not finite or larger than [`MAX_RESAMPLE_ABS`] when the rates differ.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    let mut r = StreamResampler::new(from_hz, to_hz)?;
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    let total = output_len(samples.len() as u64, from_hz, to_hz);
    let mut out = Vec::with_capacity(total as usize);
    if total == 0 {
        // Nothing comes out, but samples that are not audio are refused as for a longer input.
        r.push(samples, &mut Vec::new())?;
        return Ok(out);
    }
    r.push(samples, &mut out)?;
    r.finish(&mut out)?;
    debug_assert_eq!(out.len() as u64, total);
    Ok(out)
}

// ------------------------------------------------------------------------------------------------------------
// Streaming
// ------------------------------------------------------------------------------------------------------------

/// The rate [`MonoStream`] delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetRate {
    /// The rate of the file's first link (no resampling for a file of one link; later links of a chained stream
    /// in another format are resampled to it from their own rates).
    FileRate,
    /// This rate, Hz (every link is resampled to it from its own rate).
    Hz(u32),
}

impl From<u32> for TargetRate {
    fn from(hz: u32) -> TargetRate {
        TargetRate::Hz(hz)
    }
}

/// A file decoded, mixed to mono and resampled piece by piece with bounded memory: the one reading path of the
/// command line and the page.
///
/// The source is read through symphonia's `MediaSourceStream` (64 KiB buffer), one packet at a time; memory does
/// not grow with the file's length. Each link of a chained stream is resampled from its own rate. For a file of
/// one link, the concatenated chunks equal `resample(&to_mono(&decode(bytes)?, select)?, rate, target_hz)` bit
/// for bit (the resampler's block grid depends only on the sample position).
pub struct MonoStream {
    decoder: PacketDecoder,
    select: ChannelSelect,
    resampler: StreamResampler,
    target_hz: u32,
    /// Index of the link the resampler is fed from.
    link: usize,
    planar: Vec<Vec<f32>>,
    mono: Vec<f32>,
    finished: bool,
}

impl MonoStream {
    /// Opens `path`, tells its format from the first bytes and decodes its first packet (so a header-only file
    /// fails here), ready to yield mono samples at `target` (Hz, or the file's own rate). Native only.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path if it cannot be opened; otherwise as [`MonoStream::from_source`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &Path, select: ChannelSelect, target: impl Into<TargetRate>) -> Result<MonoStream> {
        MonoStream::new(open_file(path)?, select, target.into())
    }

    /// Opens a file held in memory; `name` names it in messages, `extension_hint` (e.g. `"ogg"`) is not needed
    /// (the first bytes tell the format).
    ///
    /// # Errors
    /// As [`MonoStream::from_source`] (empty bytes included).
    pub fn from_bytes(
        bytes: Vec<u8>,
        name: &str,
        extension_hint: Option<&str>,
        select: ChannelSelect,
        target: impl Into<TargetRate>,
    ) -> Result<MonoStream> {
        if bytes.is_empty() {
            return Err(Error::audio(format!("{name}: the file is empty (0 bytes)")));
        }
        MonoStream::from_source(Box::new(std::io::Cursor::new(bytes)), name, extension_hint, select, target)
    }

    /// Opens any seekable source (the page's worker passes a `Blob` read in slices); `name` names it in messages.
    ///
    /// # Errors
    /// [`Error::Audio`] as for [`decode`], and for an empty source; [`Error::InvalidInput`] if `select` names a
    /// channel the file does not have (the message gives the channel count) or a rate is out of range for
    /// [`resample`].
    pub fn from_source(
        source: Box<dyn MediaSource>,
        name: &str,
        extension_hint: Option<&str>,
        select: ChannelSelect,
        target: impl Into<TargetRate>,
    ) -> Result<MonoStream> {
        if source.byte_len() == Some(0) {
            return Err(Error::audio(format!("{name}: the file is empty (0 bytes)")));
        }
        MonoStream::new(PacketDecoder::open(name.to_string(), source, extension_hint)?, select, target.into())
    }

    fn new(decoder: PacketDecoder, select: ChannelSelect, target: TargetRate) -> Result<MonoStream> {
        let first = decoder.link().clone();
        let target_hz = match target {
            TargetRate::FileRate => first.sample_rate,
            TargetRate::Hz(hz) => hz,
        };
        check_select(select, first.channels).map_err(|e| match e {
            Error::InvalidInput(m) => Error::invalid(format!("{}: {m}", decoder.name)),
            other => other,
        })?;
        let resampler = StreamResampler::new(first.sample_rate, target_hz)?;
        Ok(MonoStream {
            decoder,
            select,
            resampler,
            target_hz,
            link: 0,
            planar: Vec::new(),
            mono: Vec::new(),
            finished: false,
        })
    }

    /// Follows the decoder to a new link: checks the channel choice and, if the rate changes, flushes the
    /// resampler into `out` and starts one from the new rate.
    fn enter_link(&mut self, out: &mut Vec<f32>) -> Result<()> {
        let li = self.decoder.links.len() - 1;
        let l = self.decoder.links[li].clone();
        check_select(self.select, l.channels).map_err(|e| match e {
            Error::InvalidInput(m) => {
                Error::invalid(format!("{}: {}{m}", self.decoder.name, self.decoder.link_prefix(li)))
            }
            other => other,
        })?;
        if l.sample_rate != self.resampler.from_hz() {
            self.resampler.finish(out)?;
            self.resampler = StreamResampler::new(l.sample_rate, self.target_hz)?;
        }
        self.link = li;
        Ok(())
    }

    /// The next chunk of mono samples at the target rate (`[samples]`, about [`STREAM_CHUNK`] long; the last
    /// one may be shorter), or `None` after the end. Chunks are consecutive: no overlap, no gap.
    ///
    /// # Errors
    /// [`Error::Audio`] for corrupt data met on the way (see the module documentation), non-finite samples
    /// (naming the sample index in the source, its channel and time) or a read error; [`Error::InvalidInput`]
    /// when a later link lacks the chosen channel. After an error the stream is finished.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(STREAM_CHUNK + self.resampler.block_out.max(8192));
        match self.fill(&mut out) {
            Ok(()) => {}
            Err(e) => {
                self.finished = true;
                return Err(e);
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn fill(&mut self, out: &mut Vec<f32>) -> Result<()> {
        while out.len() < STREAM_CHUNK {
            match self.decoder.read_packet(&mut self.planar)? {
                Some(_) => {
                    if self.decoder.links.len() - 1 != self.link {
                        self.enter_link(out)?;
                    }
                    self.mono.clear();
                    mono_into(&self.planar, self.select, &mut self.mono);
                    let mono = std::mem::take(&mut self.mono);
                    let r = self.resampler.push(&mono, out);
                    self.mono = mono;
                    r?;
                }
                None => {
                    self.finished = true;
                    self.resampler.finish(out)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads what is left into one vector (`[samples]` at the target rate).
    ///
    /// # Errors
    /// As [`MonoStream::next_chunk`].
    pub fn read_to_end(&mut self) -> Result<Vec<f32>> {
        let mut all = Vec::new();
        while let Some(c) = self.next_chunk()? {
            all.extend_from_slice(&c);
        }
        all.shrink_to_fit();
        Ok(all)
    }

    /// Sample rate of the file (its first link), Hz.
    pub fn source_sample_rate(&self) -> u32 {
        self.decoder.links[0].sample_rate
    }

    /// Number of channels in the file (its first link).
    pub fn source_channels(&self) -> usize {
        self.decoder.links[0].channels
    }

    /// Sample rate of the chunks, Hz.
    pub fn target_sample_rate(&self) -> u32 {
        self.target_hz
    }

    /// Duration of the file, seconds, if its header tells (a truncated file yields less); for uncompressed PCM at
    /// most what the file's bytes can hold, whatever the header says. For a chained stream, the links met so far.
    pub fn duration_s(&self) -> Option<f64> {
        self.decoder.duration_s()
    }

    /// Seconds of audio decoded so far (all links, each at its own rate).
    pub fn decoded_s(&self) -> f64 {
        self.decoder.links.iter().map(|l| l.frames as f64 / l.sample_rate.max(1) as f64).sum()
    }

    /// The links met so far (one for most files).
    pub fn links(&self) -> &[Link] {
        &self.decoder.links
    }

    /// The name used in messages (the path, or the name given).
    pub fn name(&self) -> &str {
        &self.decoder.name
    }

    /// What was repaired, cut short or skipped (plain sentences naming the file; see the module documentation);
    /// complete once [`MonoStream::next_chunk`] has returned `None`.
    pub fn warnings(&self) -> Vec<String> {
        self.decoder.warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, f: f64, rate: f64) -> Vec<f32> {
        (0..n).map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / rate).sin() as f32 * 0.5).collect()
    }

    /// Relative RMS error of `y` against the analytic sine on the middle half.
    fn rel_rms_mid(y: &[f32], f: f64, rate: f64) -> f64 {
        let (a, b) = (y.len() / 4, 3 * y.len() / 4);
        let mut err = 0.0;
        let mut ref_e = 0.0;
        for (k, &v) in y.iter().enumerate().take(b).skip(a) {
            let r = (2.0 * std::f64::consts::PI * f * k as f64 / rate).sin() * 0.5;
            err += (v as f64 - r).powi(2);
            ref_e += r * r;
        }
        (err / ref_e).sqrt()
    }

    #[test]
    fn resample_sine_aligned_and_accurate() {
        for &(from, to, f) in &[
            (16_000u32, 44_100u32, 1000.0),
            (16_000, 44_100, 5_300.0),
            (44_100, 32_000, 3000.0),
            (44_100, 32_000, 11_000.0),
            (11_025, 44_100, 2500.0),
            (22_050, 16_000, 700.0),
            (48_000, 44_100, 9000.0),
            (44_099, 44_100, 440.0),
        ] {
            let x = sine(from as usize, f, from as f64);
            let y = resample(&x, from, to).unwrap();
            assert_eq!(y.len(), to as usize);
            let e = rel_rms_mid(&y, f, to as f64);
            println!("{from} -> {to} Hz, {f} Hz sine: relative RMS error {e:.2e}");
            assert!(e < 1e-4, "{from} -> {to}: relative RMS error {e}");
        }
    }

    #[test]
    fn resample_lengths_short_and_empty() {
        assert_eq!(resample(&[], 16_000, 44_100).unwrap(), Vec::<f32>::new());
        assert_eq!(resample(&[0.5], 16_000, 44_100).unwrap().len(), 3); // round(2.756)
        assert_eq!(resample(&[0.5; 7], 44_100, 16_000).unwrap().len(), 3); // round(2.54)
        assert_eq!(resample(&[0.5; 1], 44_100, 16_000).unwrap().len(), 0); // round(0.36)
        for len in [2usize, 10, 100, 1279, 1280, 1281, 5000] {
            let y = resample(&vec![0.1; len], 16_000, 44_100).unwrap();
            assert_eq!(y.len() as u64, output_len(len as u64, 16_000, 44_100), "len {len}");
            assert!(y.iter().all(|v| v.is_finite()));
        }
        // A short constant block: the middle of the output keeps the level.
        let y = resample(&vec![0.25; 400], 16_000, 44_100).unwrap();
        let mid = y[y.len() / 2];
        assert!((mid - 0.25).abs() < 1e-3, "mid {mid}");
    }

    #[test]
    fn resample_identity_and_bad_rates() {
        let x = sine(1000, 100.0, 16_000.0);
        assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x);
        assert!(matches!(resample(&x, 0, 16_000), Err(Error::InvalidInput(_))));
        assert!(matches!(resample(&x, 16_000, 0), Err(Error::InvalidInput(_))));
        assert!(matches!(resample(&x, 16_000, 10_000_000), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn resample_refuses_what_its_fft_cannot_take() {
        for bad in [f32::NAN, f32::INFINITY, -3e38, 2e20] {
            let mut x = sine(3000, 100.0, 16_000.0);
            x[2345] = bad;
            let e = resample(&x, 16_000, 44_100).unwrap_err();
            assert!(matches!(e, Error::Audio(ref m) if m.contains("sample 2345")), "{bad}: {e}");
            // Streamed: the offending piece is refused, the stream can go on.
            let mut r = StreamResampler::new(16_000, 44_100).unwrap();
            let mut out = Vec::new();
            r.push(&x[..2000], &mut out).unwrap();
            assert!(r.push(&x[2000..], &mut out).is_err());
            r.push(&x[..10], &mut out).unwrap();
        }
        // Loud but finite audio is resampled; the same rate passes anything through.
        let x = vec![1e19f32; 5000];
        assert!(resample(&x, 16_000, 44_100).unwrap().iter().all(|v| v.is_finite()));
        assert_eq!(resample(&[f32::NAN], 8000, 8000).unwrap().len(), 1);
    }

    #[test]
    fn streaming_pieces_equal_whole() {
        let x = sine(40_000, 1234.0, 22_050.0);
        let whole = resample(&x, 22_050, 32_000).unwrap();
        let mut r = StreamResampler::new(22_050, 32_000).unwrap();
        let mut out = Vec::new();
        let mut pos = 0;
        for (i, piece) in [1usize, 7, 1000, 3333, 1, 12_000].iter().cycle().enumerate() {
            if pos >= x.len() || i > 1000 {
                break;
            }
            let end = (pos + piece).min(x.len());
            r.push(&x[pos..end], &mut out).unwrap();
            pos = end;
        }
        r.finish(&mut out).unwrap();
        assert_eq!(out, whole);
    }

    /// Seeded noise plus a sine, `n` samples.
    fn noisy_sine(n: usize) -> Vec<f32> {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                0.5 * (i as f32 * 0.05).sin() + 0.25 * ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn common_rates_are_resampled_at_their_exact_ratio_as_rubato_does() {
        // The reference: rubato's FftFixedInOut at the rates themselves over the whole zero-padded signal, its delay
        // dropped, cut to round(len * to / from); bit for bit.
        let x = noisy_sine(20_000);
        for (from, to) in [
            (44_100u32, 16_000u32),
            (48_000, 16_000),
            (22_050, 16_000),
            (8_000, 16_000),
            (44_100, 32_000),
            (48_000, 32_000),
            (16_000, 44_100),
            (96_000, 44_100),
            (48_000, 44_100),
            (44_056, 22_050),
            (768_000, 11_025),
            (11_025, 768_000),
            (44_099, 44_100),
        ] {
            let g = gcd(from as u64, to as u64) as usize;
            let (p, q) = (from as usize / g, to as usize / g);
            assert_eq!(resampler_ratio(from, to).unwrap(), (p, q), "{from} -> {to}");
            let mut chunks = MIN_RESAMPLER_BLOCK.div_ceil(p).max(2);
            chunks += chunks % 2;
            let mut rubato = FftFixedInOut::<f32>::new(from as usize, to as usize, chunks * p, 1).unwrap();
            let (n, m) = (rubato.input_frames_next(), rubato.output_frames_next());
            let total = output_len(x.len() as u64, from, to) as usize;
            let blocks = (m / 2 + total).div_ceil(m);
            let mut padded = x.clone();
            padded.resize((blocks * n).max(x.len().div_ceil(n) * n), 0.0);
            let mut want = Vec::new();
            for block in padded.chunks(n) {
                want.extend_from_slice(&rubato.process(&[block], None).unwrap()[0]);
            }
            let want = &want[m / 2..m / 2 + total];
            let got = resample(&x, from, to).unwrap();
            assert_eq!(got.len(), want.len(), "{from} -> {to}");
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "{from} -> {to}: not bit for bit");
        }
    }

    #[test]
    fn rates_without_a_large_common_factor_use_a_close_ratio_of_small_terms() {
        // Found by fuzzing: 484,799 Hz -> 768,000 Hz (coprime) made blocks of a million samples (over 10 s under the
        // fuzzer's sanitizer for 15 samples).
        for (from, to) in [(484_799u32, 768_000u32), (484_799, 22_050), (1_000, 767_999), (65_537, 65_536)] {
            let (p, q) = resampler_ratio(from, to).unwrap();
            assert!(p.max(q) <= MAX_RESAMPLER_RATIO_TERM as usize, "{from} -> {to}: {p} : {q}");
            let err = (p as f64 * to as f64 / (q as f64 * from as f64) - 1.0).abs();
            println!("{from} -> {to} Hz: resampled at {p} : {q}, ratio off by {err:.2e}");
            assert!(err <= MAX_RESAMPLE_RATIO_ERROR, "{from} -> {to}: {err}");
            // A sine of 1 s comes out at its frequency, in place (the drift is 1 s x the ratio error).
            let (n, f) = (from as usize, (from.min(to) / 10).min(1000) as f64);
            let y = resample(&sine(n, f, from as f64), from, to).unwrap();
            assert_eq!(y.len() as u64, output_len(n as u64, from, to));
            let (e, drift) = (rel_rms_mid(&y, f, to as f64), 2.0 * std::f64::consts::PI * f * err);
            println!("    relative RMS error {e:.2e} (phase drift at the end {drift:.2e} rad)");
            assert!(e < 1e-4 + drift, "{from} -> {to}: relative RMS error {e}");
        }
        // 767,999 Hz -> 16 kHz is resampled at 48 : 1, as 768 kHz -> 16 kHz is (off by 1.3e-6): the same samples.
        assert_eq!(resampler_ratio(767_999, 16_000).unwrap(), (48, 1));
        let x = noisy_sine(96_000);
        assert_eq!(resample(&x, 767_999, 16_000).unwrap(), resample(&x, 768_000, 16_000).unwrap());
        // The best fraction: the continued fraction's convergents and the semiconvergent between them.
        assert_eq!(best_fraction(22_050, 484_799, 100), (1, 22));
        assert_eq!(best_fraction(22_050, 484_799, 65_536), (2857, 62_815));
        assert_eq!(best_fraction(484_799, 768_000, 65_536), (24_245, 38_408));
        assert_eq!(best_fraction(1, 3, 2), (1, 2));
        assert_eq!(best_fraction(3, 7, 10), (3, 7));
        // Rates too far apart to approximate are refused in plain words (the resampler takes no rate below 1000 Hz,
        // found by fuzzing: 1 Hz -> 22,050 Hz made an output block of 22.6 million samples).
        let e = resampler_ratio(3, 768_000).unwrap_err().to_string();
        assert!(e.contains("too far apart"), "{e}");
        let e = StreamResampler::new(1, 22_050).err().unwrap().to_string();
        assert!(
            e.contains("the source sample rate 1 Hz is out of range: it must be between 1000 and 768000 Hz"),
            "{e}"
        );
    }

    #[test]
    fn to_mono_mix_pick_and_errors() {
        let a = DecodedAudio {
            sample_rate: 8000,
            channels: vec![vec![1.0, 0.0], vec![0.0, -1.0], vec![0.5, 0.5]],
            warnings: vec![],
        };
        assert_eq!(to_mono(&a, ChannelSelect::Mix).unwrap(), vec![0.5, -0.5 / 3.0]);
        assert_eq!(to_mono(&a, ChannelSelect::Channel(1)).unwrap(), vec![0.0, -1.0]);
        let e = to_mono(&a, ChannelSelect::Channel(3)).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(ref m) if m.contains("3 channel")), "{e}");
        let empty = DecodedAudio { sample_rate: 8000, channels: vec![], warnings: vec![] };
        assert!(matches!(to_mono(&empty, ChannelSelect::Mix), Err(Error::InvalidInput(_))));
        let ragged = DecodedAudio { sample_rate: 8000, channels: vec![vec![1.0], vec![]], warnings: vec![] };
        assert!(matches!(to_mono(&ragged, ChannelSelect::Mix), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn decode_rejects_empty_and_garbage() {
        assert!(matches!(decode(&[], Some("wav")), Err(Error::Audio(_))));
        // Deterministic pseudo-random bytes.
        let mut s = 0x1234_5678_9abc_def0u64;
        let bytes: Vec<u8> = (0..100_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        for hint in [None, Some("wav"), Some("mp3"), Some("flac"), Some("ogg")] {
            let r = decode(&bytes, hint);
            assert!(matches!(r, Err(Error::Audio(_))), "{hint:?}: {r:?}");
        }
    }
}
