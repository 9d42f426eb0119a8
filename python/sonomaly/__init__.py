"""sonomaly: audio anomaly detection that shows where and when a sound is abnormal.

Log-mel spectrogram -> pre-trained backbone (EfficientAT mn04_as by default, ONNX via tract) -> patch embeddings ->
PatchCore (Roth et al., CVPR 2022) or PaDiM (Defard et al., ICPR 2021) -> anomaly map, calibrated on held-out
normal clips so that scores are robust z-scores. The same bank files as the command line and the web page.

    >>> import sonomaly
    >>> bank = sonomaly.fit(["normal/00.wav", "normal/01.wav"])          # a Bank
    >>> r = sonomaly.score(bank, "test/clip.wav")
    >>> r.score, r.is_anomaly, r.segments, r.map.shape                    # z, bool, [(onset_s, offset_s, peak)], (T, M)

Every call that computes releases the GIL, so threads score in parallel. Errors raise :class:`Error` subclasses
(:class:`InvalidInputError` is also a ``ValueError``) carrying the core's message.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from . import _core
from ._errors import AudioError, BankError, Error, InvalidInputError, IOError, ModelError

__all__ = [
    "Model",
    "Bank",
    "Result",
    "fit",
    "score",
    "merge",
    "held_out",
    "calibrate",
    "Error",
    "AudioError",
    "BankError",
    "ModelError",
    "InvalidInputError",
    "IOError",
    "SkippedFileWarning",
    "RoughThresholdWarning",
]
__version__ = _core.__version__


class SkippedFileWarning(UserWarning):
    """A file left out of a fit with ``on_error="skip"``: the message names it and says why."""


class RoughThresholdWarning(UserWarning):
    """A bank whose threshold rests on too little normal sound to be trusted (:func:`fit`, :func:`merge` and
    :func:`calibrate` warn): the message says how many clips and seconds it was set from and how much more normal
    sound to fit on. The rule is the core's, as ``sonomaly fit`` and ``sonomaly info`` apply it; the bank's
    :attr:`Bank.info` carries it too (``held_out_units``, ``threshold_rough``, ``threshold_note``)."""


def _warn_rough(bank: "Bank", stacklevel: int) -> None:
    note = bank.info.get("threshold_note")
    if note:
        warnings.warn(note, RoughThresholdWarning, stacklevel=stacklevel + 1)

Result = _core.Result
Result.__doc__ = """One clip's result, as the command line's ``score`` gives it.

Attributes:
    file: the path scored, or None for samples.
    score: clip score in ``units`` (``z``: robust z-score against the bank's held-out normal clips, the largest
        member's; ``distance`` for banks of format version 1).
    threshold: the bank's clip threshold (same units); ``is_anomaly`` is ``score > threshold``.
    units: ``"z"`` or ``"distance"``.
    members: list of dicts ``{"name", "score" (z), "raw" (detector units)}``, one per bank member.
    segments: list of ``(onset_s, offset_s, peak)``: where the temporal curve exceeds ``segment_threshold``;
        seconds from the start of the clip, peak in ``units``.
    segment_threshold: the curve threshold.
    duration_s: the clip's duration, seconds.
    level_distance, out_of_distribution: how far the clip's band levels lie from the normal clips' (in their
        spreads), and a warning when it is another kind of sound (else None).
    frames, mel_bins, hop_s: the map's shape ``[frames, mel_bins]`` and the frame hop, seconds.
    map: numpy float32 ``[frames, mel_bins]``, the anomaly map in ``units`` (frame ``t`` spans
        ``[t * hop_s, (t + 1) * hop_s)``; mel bin 0 is the lowest band). Owns the core's buffer (no copy).
    curve: numpy float32 ``[frames]``, the temporal curve (the map's maximum over mel bins per frame).

Methods:
    to_json(): the command line's JSON line for this clip (without the map).
"""


def _clip(x: Any) -> Any:
    """A path (str or os.PathLike) as str, or samples as a contiguous 1-D float32 array."""
    if isinstance(x, (str, os.PathLike)):
        return os.fspath(x)
    a = np.asarray(x)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise InvalidInputError(
            f"samples must be a 1-D array (mono), got shape {a.shape}; mix the channels down first, e.g. x.mean(axis=1)"
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise InvalidInputError(
            f"samples must be floating point in [-1, 1], got dtype {a.dtype}; divide integer PCM by its full scale"
        )
    return np.ascontiguousarray(a, dtype=np.float32)


class Model:
    """A backbone and its front end (log-mel parameters, layers, analysis windows).

    Args:
        folder: a backbone folder with ``model.onnx`` and ``spec.json`` (e.g. ``models/aisfx-cnn14``); None for the
            embedded default (EfficientAT mn04_as, 32 kHz, 128 mel bins, 10 s windows).

    Raises:
        ModelError, IOError: the folder or its model cannot be read.
    """

    def __init__(self, folder: Optional[Union[str, os.PathLike]] = None) -> None:
        self._inner = _core.Model(None if folder is None else os.fspath(folder))

    @property
    def name(self) -> str:
        """The backbone's name."""
        return self._inner.name

    @property
    def sample_rate(self) -> int:
        """The front end's sample rate, Hz (clips are resampled to it)."""
        return self._inner.sample_rate

    @property
    def hop_s(self) -> float:
        """The frame hop, seconds."""
        return self._inner.hop_s

    @property
    def sha256(self) -> str:
        """SHA-256 of the backbone's ONNX bytes (banks record it)."""
        return self._inner.sha256

    def __repr__(self) -> str:
        return repr(self._inner)


class Bank:
    """A fitted bank: the members' detectors (PatchCore memory banks, PaDiM Gaussians), their calibration and the
    thresholds, in one safetensors file (the same files as the command line and the page).

    A bank keeps the model prepared to score with it, so scoring many clips with one bank loads the backbone once.
    Banks pickle (as their bytes), so they travel to Dask workers.
    """

    def __init__(self, _inner: "_core.Bank") -> None:
        if not isinstance(_inner, _core.Bank):
            raise TypeError("use Bank.load(path), Bank.from_bytes(data), sonomaly.fit(...) or sonomaly.merge(...)")
        self._inner = _inner

    @staticmethod
    def load(path: Union[str, os.PathLike]) -> "Bank":
        """Reads and checks a bank file (format version 1 or 2).

        Raises:
            BankError: not a bank, truncated, corrupted (checksum), unknown version.
            IOError: the file cannot be read.
        """
        return Bank(_core.Bank.load(os.fspath(path)))

    @staticmethod
    def from_bytes(data: bytes) -> "Bank":
        """A bank from the bytes of a bank file. Raises BankError as :meth:`load`."""
        return Bank(_core.Bank.from_bytes(bytes(data)))

    def to_bytes(self) -> bytes:
        """The bank file's bytes (format version 2)."""
        return self._inner.to_bytes()

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> None:
        """Writes the bank file (atomically: beside the target, then renamed).

        Nothing is overwritten unless ``overwrite=True``, and even then only a file that is a sonomaly bank.

        Raises:
            InvalidInputError: ``path`` exists (without ``overwrite``), is not a regular file, or is not a bank.
            IOError: writing failed.
        """
        self._inner.save(os.fspath(path), overwrite)

    @property
    def info(self) -> Dict[str, Any]:
        """Summary (the command line's ``info --json``): detector, backbone, backbone_sha256, front_end, layers,
        memory_bank (rows x dims per member), units, clips_fitted, seconds_fitted, threshold, segment_threshold,
        held_out_units (the held-out normal clips, or parts of one clip, the thresholds were set from),
        threshold_rough and threshold_note (True, and the sentence to show, when the threshold rests on too little
        normal sound; see :class:`RoughThresholdWarning`), created, size_bytes (0: not measured here)."""
        return json.loads(self._inner.info_json())

    @property
    def meta(self) -> Dict[str, Any]:
        """The full metadata stored in the file (members, calibration, held-out scores, band levels...)."""
        return json.loads(self._inner.meta_json())

    @property
    def threshold(self) -> float:
        """Clip threshold, in :attr:`units`."""
        return self._inner.threshold

    @property
    def segment_threshold(self) -> float:
        """Temporal-curve threshold for segments, in :attr:`units`."""
        return self._inner.segment_threshold

    @property
    def units(self) -> str:
        """``"z"`` (robust z-scores) or ``"distance"`` (version 1 banks)."""
        return self._inner.units

    @property
    def members(self) -> List[str]:
        """The members' names, e.g. ``["logmel", "features.12+features.15"]``."""
        return self._inner.members

    def __reduce__(self):
        return (Bank.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return repr(self._inner)


def _model(model: Optional[Model]) -> Optional["_core.Model"]:
    if model is None:
        return None
    if not isinstance(model, Model):
        raise TypeError(f"model must be a sonomaly.Model, got {type(model).__name__}")
    return model._inner


def fit(
    files_or_arrays: Union[Iterable[Any], str, os.PathLike],
    sample_rate: Optional[int] = None,
    preset: Optional[str] = "both",
    *,
    model: Optional[Model] = None,
    layers: Optional[Sequence[str]] = None,
    detector: str = "patchcore",
    coreset_ratio: float = 0.1,
    max_bank_rows: Optional[int] = 16384,
    seed: int = 0,
    padim_d: int = 100,
    balance_layers: bool = False,
    frequency_position: bool = True,
    grid_stride: Optional[Union[int, Sequence[int]]] = None,
    clip_z: Optional[float] = None,
    segment_z: Optional[float] = None,
    peak_normalize: bool = False,
    channel: Optional[int] = None,
    on_error: str = "raise",
) -> Bank:
    """Fits a bank on recordings of normal sound, as ``sonomaly fit`` does.

    Args:
        files_or_arrays: paths (WAV, FLAC, OGG, MP3) and/or mono sample arrays (1-D, floating point in [-1, 1]).
            A fit needs at least two analysis windows of audio in all (15 s with the default model); with fewer
            than 10 clips or 100 s the threshold is rough (a :class:`RoughThresholdWarning`).
        sample_rate: Hz, for the arrays (files carry their own).
        preset: ``"machine"`` (PatchCore on log-mel patches), ``"environment"`` (PatchCore on the backbone's
            recommended layers) or ``"both"`` (the two, fused by their largest z-score). Ignored with ``layers``.
        model: the backbone (default: the embedded EfficientAT mn04_as).
        layers: one comma-separated layer list per member instead of a preset, e.g. ``["logmel",
            "features.12,features.15"]``.
        detector: ``patchcore``, ``padim``, ``padim_freq`` or ``baseline``.
        coreset_ratio: PatchCore: fraction of normal patches kept in the memory bank.
        max_bank_rows: PatchCore: largest memory bank, rows (None: no cap, the exact greedy).
        seed: seed of the random projection, the first coreset centre and PaDiM's channels.
        padim_d: PaDiM: channels kept.
        balance_layers: scale each layer to unit RMS norm on the normal patches.
        frequency_position: append the patch's frequency position to each patch.
        grid_stride: frames (and mel bins) per patch: one value, or one per member.
        clip_z, segment_z: clip and segment thresholds in robust z units (default 2 and 2).
        peak_normalize: divide each clip by its peak before the front end.
        channel: channel of multichannel files (0-based; None mixes them down).
        on_error: ``"raise"``: the first file that cannot be read or used raises; ``"skip"``: such files are left
            out with a :class:`SkippedFileWarning` each (its message names the file and the reason), as the
            command line skips them, and the fit goes on with the others.

    Returns:
        The fitted, calibrated :class:`Bank` (with a :class:`RoughThresholdWarning` when its threshold rests on
        too little normal sound).

    Raises:
        AudioError: a file cannot be decoded or used (its name is in the message), with ``on_error="raise"``.
        IOError: a file cannot be opened, with ``on_error="raise"``.
        InvalidInputError: too little audio, no usable file, an unknown preset or detector, bad parameters.
    """
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    clips = _clips(files_or_arrays)
    if layers is not None:
        preset = None
    if isinstance(grid_stride, int):
        grid_stride = [grid_stride]
    inner, skipped = _core.fit(
        clips,
        sample_rate,
        _model(model),
        preset,
        None if layers is None else list(layers),
        detector,
        coreset_ratio,
        max_bank_rows,
        seed,
        padim_d,
        balance_layers,
        frequency_position,
        None if grid_stride is None else list(grid_stride),
        clip_z,
        segment_z,
        peak_normalize,
        channel,
        on_error == "skip",
    )
    for message in skipped:
        warnings.warn(f"skipped {message}", SkippedFileWarning, stacklevel=2)
    bank = Bank(inner)
    _warn_rough(bank, 2)
    return bank


def score(
    bank: Bank,
    file_or_array: Any,
    sample_rate: Optional[int] = None,
    *,
    model: Optional[Model] = None,
    channel: Optional[int] = None,
) -> "_core.Result":
    """Scores one clip with ``bank``, as ``sonomaly score`` does (the same numbers).

    Args:
        bank: a fitted :class:`Bank`.
        file_or_array: a path, or mono samples (1-D, floating point in [-1, 1]).
        sample_rate: Hz, for samples.
        model: the backbone (default: the embedded model the bank was fitted with).
        channel: channel of a multichannel file (0-based; None mixes them down).

    Returns:
        A :class:`Result`: score, threshold, is_anomaly, units, members, segments ``[(onset_s, offset_s, peak)]``,
        map (float32 ``[frames, mel_bins]``) and curve (float32 ``[frames]``).

    Raises:
        AudioError: the clip cannot be decoded, is silent, too short or non-finite.
        BankError: the bank was fitted with another backbone or front end than ``model``.
    """
    if not isinstance(bank, Bank):
        raise TypeError(f"bank must be a sonomaly.Bank, got {type(bank).__name__}")
    return _core.score(bank._inner, _clip(file_or_array), sample_rate, _model(model), channel)


def _clips(files_or_arrays: Union[Iterable[Any], str, os.PathLike]) -> List[Any]:
    """Paths and arrays as the core takes them; a folder gives its audio files (sorted, searched recursively)."""
    if isinstance(files_or_arrays, (str, os.PathLike)):
        files_or_arrays = [files_or_arrays]
    out: List[Any] = []
    for x in files_or_arrays:
        if isinstance(x, (str, os.PathLike)) and os.path.isdir(x):
            found = sorted(
                os.path.join(d, f)
                for d, _, fs in os.walk(x)
                for f in fs
                if f.lower().rsplit(".", 1)[-1] in ("wav", "wave", "flac", "ogg", "oga", "mp3")
            )
            if not found:
                raise InvalidInputError(f"folder {os.fspath(x)} holds no audio file (wav, flac, ogg, mp3)")
            out.extend(found)
        else:
            out.append(_clip(x))
    return out


def _warn_skipped(messages: Sequence[str], on_error: str) -> None:
    for message in messages:
        warnings.warn(f"skipped {message}", SkippedFileWarning, stacklevel=3)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def merge(
    banks: Sequence[Bank],
    *,
    model: Optional[Model] = None,
    calibrate_on: Optional[Union[Iterable[Any], str, os.PathLike]] = None,
    sample_rate: Optional[int] = None,
    channel: Optional[int] = None,
    on_error: str = "raise",
) -> Bank:
    """Merges banks fitted on shards of one corpus into one bank, as ``sonomaly merge`` does.

    PatchCore members: the merged memory bank is the union of the shards' memory banks when it has at most
    ``max_bank_rows`` rows, else the library's capped greedy coreset of it. The fitted patch weights are pooled and
    each shard's memory bank rescaled to them.

    Calibration: with ``calibrate_on`` (best: the shards' own normal clips, or folders of them), the thresholds are
    measured on the merged bank, as ``sonomaly merge --calibrate`` does: each clip is scored without the memory-bank
    rows it gave, replaced from the other clips of its own shard, as leave-one-out refits of that shard would see
    it. Without it, each member's z normalisation and the thresholds are recomputed from the pooled held-out normal
    scores of the shards, an approximation (RESULTS.md, "Sharded fits"). Banks with PaDiM or baseline members are
    refused: they do not store the counts and sums an exact pooled Gaussian needs.

    Args:
        banks: two or more banks fitted with the same backbone, front end and members.
        model: the backbone (default: the embedded model the banks were fitted with).
        calibrate_on: normal recordings (paths, folders and/or mono arrays) to calibrate the merged bank on.
        sample_rate: Hz, for arrays in ``calibrate_on``.
        channel: channel of multichannel files in ``calibrate_on`` (0-based; None mixes them down).
        on_error: ``"skip"`` leaves out calibration files that cannot be used, with a :class:`SkippedFileWarning`
            each; ``"raise"`` raises at the first.

    Raises:
        InvalidInputError: fewer than two banks, or banks that differ in backbone, front end, members, detector
            parameters or threshold rule, PaDiM/baseline members, or fewer than two usable calibration clips.
        AudioError, IOError: a calibration file cannot be used (its name is in the message), with ``on_error="raise"``.
    """
    _check_on_error(on_error)
    banks = list(banks)
    for b in banks:
        if not isinstance(b, Bank):
            raise TypeError(f"banks must be sonomaly.Bank objects, got {type(b).__name__}")
    clips = None if calibrate_on is None else _clips(calibrate_on)
    inner, skipped = _core.merge(
        [b._inner for b in banks], _model(model), clips, sample_rate, channel, on_error == "skip"
    )
    _warn_skipped(skipped, on_error)
    bank = Bank(inner)
    _warn_rough(bank, 2)
    return bank


def held_out(
    bank: Bank,
    files_or_arrays: Union[Iterable[Any], str, os.PathLike],
    sample_rate: Optional[int] = None,
    *,
    model: Optional[Model] = None,
    channel: Optional[int] = None,
    on_error: str = "raise",
) -> np.ndarray:
    """Scores normal clips against ``bank`` as held-out clips, for :func:`calibrate`.

    A PatchCore member scores each clip without the memory-bank rows that came from that clip (every row keeps a
    fingerprint of its clip's samples), each replaced by the nearest patch of the other clips given in the same
    call. For a merged bank, call it once per shard with that shard's clips (as :func:`sonomaly.dask.fit_sharded`
    does on the workers) and concatenate the arrays: that is what :func:`merge` with ``calibrate_on`` computes.

    Args:
        bank: a bank (format version 2).
        files_or_arrays: normal recordings: paths, folders and/or mono arrays (1-D, floating point in [-1, 1]).
        sample_rate: Hz, for arrays.
        model: the backbone (default: the embedded model the bank was fitted with).
        channel: channel of multichannel files (0-based; None mixes them down).
        on_error: ``"skip"`` leaves out clips that cannot be used (a :class:`SkippedFileWarning` each).

    Returns:
        float32 array ``[clips, members, 2]``: per usable clip and member the raw clip score and the raw
        temporal-curve peak (detector units).

    Raises:
        AudioError, IOError: a clip cannot be used (its name is in the message), with ``on_error="raise"``.
        InvalidInputError: no usable clip.
    """
    _check_on_error(on_error)
    if not isinstance(bank, Bank):
        raise TypeError(f"bank must be a sonomaly.Bank, got {type(bank).__name__}")
    arr, skipped = _core.held_out(
        bank._inner, _clips(files_or_arrays), sample_rate, _model(model), channel, on_error == "skip"
    )
    _warn_skipped(skipped, on_error)
    return arr


def calibrate(bank: Bank, held: Any) -> Bank:
    """``bank`` with its normalisations and thresholds set from held-out normal results.

    Args:
        bank: a bank (format version 2).
        held: float32 ``[clips, members, 2]`` from :func:`held_out` (arrays of several calls concatenated on axis 0).

    Returns:
        A new :class:`Bank`: the same memory banks, each member's robust z normalisation and the fused held-out
        scores from ``held``, the thresholds of the bank's rule (an overridden threshold returns to the rule's).
        With too few held-out clips for a steady threshold, a :class:`RoughThresholdWarning`.

    Raises:
        InvalidInputError: fewer than two clips, a shape other than ``[clips, members, 2]``, non-finite values, a
            version 1 bank, or held-out scores that are all 0.
    """
    if not isinstance(bank, Bank):
        raise TypeError(f"bank must be a sonomaly.Bank, got {type(bank).__name__}")
    arr = np.ascontiguousarray(np.asarray(held, dtype=np.float32))
    if arr.ndim != 3:
        raise InvalidInputError(f"held-out results must be a [clips, members, 2] array, got {arr.ndim} dimensions")
    out = Bank(_core.calibrate(bank._inner, arr))
    _warn_rough(out, 2)
    return out
