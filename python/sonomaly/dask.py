"""Scoring and fitting corpora on Dask (``dask.bag`` on a ``distributed`` cluster, or any Dask scheduler).

- :func:`score_files`: a bag of the command line's JSON lines (as dicts), one per file, partitioned over the
  workers; each worker process loads the bank (and prepares the backbone for it) once, then scores every file of
  every partition it gets.
- :func:`fit_sharded`: one bank fitted per shard of the files on the workers, merged into one bank with the
  library's merge (:func:`sonomaly.merge`: a coreset of the shards' memory banks), then calibrated on the merged
  bank: each shard's clips scored on the workers without the memory-bank rows they gave (:func:`sonomaly.held_out`,
  :func:`sonomaly.calibrate`).

Paths must be readable by the workers (a shared file system, or a single machine's ``LocalCluster``).

    >>> from dask.distributed import Client
    >>> client = Client("tcp://scheduler:8786")
    >>> rows = sonomaly.dask.score_files("fan.bank", paths, client=client).compute()
    >>> bank = sonomaly.dask.fit_sharded(normal_paths, shards=8, out="fan.bank", client=client)
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import sonomaly

__all__ = ["score_files", "fit_sharded", "load_bank_cached"]

# Per worker process: bank path -> (file identity, Bank). A bank keeps the model prepared for it.
_CACHE: Dict[Tuple[str, Optional[str]], Tuple[Tuple[int, int], "sonomaly.Bank", Optional["sonomaly.Model"]]] = {}
_LOCK = threading.Lock()


def load_bank_cached(bank_path: Union[str, os.PathLike], model_folder: Optional[str] = None):
    """The bank at ``bank_path`` and its model, loaded once per process (reloaded if the file changed: its size or
    modification time). Returns ``(bank, model)``; ``model`` is None for the embedded model."""
    path = os.path.abspath(os.fspath(bank_path))
    st = os.stat(path)
    ident = (st.st_size, st.st_mtime_ns)
    key = (path, model_folder)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == ident:
            return hit[1], hit[2]
        bank = sonomaly.Bank.load(path)
        model = sonomaly.Model(model_folder) if model_folder is not None else None
        _CACHE[key] = (ident, bank, model)
        return bank, model


def _score_partition(paths: Sequence[str], bank_path: str, model_folder: Optional[str]) -> List[Dict[str, Any]]:
    import json

    bank, model = load_bank_cached(bank_path, model_folder)
    out = []
    for p in paths:
        try:
            out.append(json.loads(sonomaly.score(bank, p, model=model).to_json()))
        except sonomaly.Error as e:
            # As the command line: a file that cannot be scored is reported, the others go on.
            out.append({"file": os.fspath(p), "error": str(e), "kind": type(e).__name__})
    return out


def _workers(client) -> int:
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            return 1
    return max(1, len(client.scheduler_info().get("workers", {})))


def score_files(
    bank_path: Union[str, os.PathLike],
    paths: Sequence[Union[str, os.PathLike]],
    client=None,
    partitions: Optional[int] = None,
    model_folder: Optional[str] = None,
):
    """A Dask bag scoring ``paths`` with the bank at ``bank_path``: one dict per file, the command line's JSON line
    (``file``, ``score``, ``threshold``, ``is_anomaly``, ``segments`` ``[{start_s, end_s, peak}]``,
    ``segment_threshold``, ``duration_s``, ``units``, ``members``, and ``level_distance`` /
    ``out_of_distribution`` when present), in the order of ``paths``. A file that cannot be scored gives
    ``{"file", "error", "kind"}`` instead (the others go on).

    Args:
        bank_path: a bank file readable by every worker.
        paths: audio files readable by every worker.
        client: a ``distributed.Client``, used to choose the partitions (default: the current client, if any).
            Compute the bag with it, e.g. ``bag.compute()`` while it is the default, or ``client.compute(bag)``.
        partitions: number of partitions (default: 4 per worker, at most one per file).
        model_folder: the backbone folder (default: the embedded model the bank was fitted with).

    Returns:
        A ``dask.bag.Bag`` of dicts (lazy: nothing runs until it is computed).
    """
    import dask.bag as db

    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise sonomaly.InvalidInputError("no file to score")
    bank_path = os.path.abspath(os.fspath(bank_path))
    if not os.path.isfile(bank_path):
        raise sonomaly.InvalidInputError(f"bank {bank_path} does not exist")
    n = partitions if partitions is not None else 4 * _workers(client)
    n = max(1, min(int(n), len(paths)))
    bag = db.from_sequence(paths, npartitions=n)
    return bag.map_partitions(_score_partition, bank_path, model_folder)


def _fit_shard(paths: Sequence[str], model_folder: Optional[str], options: Dict[str, Any]) -> Tuple[bytes, List[str]]:
    """A shard's bank, with the warnings of its fit (files skipped with on_error="skip") for the caller."""
    model = sonomaly.Model(model_folder) if model_folder is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sonomaly.SkippedFileWarning)
        bank = sonomaly.fit(list(paths), model=model, **options)
    return bank.to_bytes(), [str(w.message) for w in caught if issubclass(w.category, sonomaly.SkippedFileWarning)]


def _held_out_shard(
    paths: Sequence[str], bank_bytes: bytes, model_folder: Optional[str], channel: Optional[int], on_error: str
) -> Tuple["np.ndarray", List[str]]:
    model = sonomaly.Model(model_folder) if model_folder is not None else None
    bank = sonomaly.Bank.from_bytes(bank_bytes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sonomaly.SkippedFileWarning)
        held = sonomaly.held_out(bank, list(paths), model=model, channel=channel, on_error=on_error)
    return held, [str(w.message) for w in caught if issubclass(w.category, sonomaly.SkippedFileWarning)]


def fit_sharded(
    paths: Sequence[Union[str, os.PathLike]],
    shards: int,
    out: Optional[Union[str, os.PathLike]] = None,
    client=None,
    overwrite: bool = False,
    model_folder: Optional[str] = None,
    calibrate: bool = True,
    **fit_options: Any,
) -> "sonomaly.Bank":
    """Fits one bank per shard of ``paths`` on the workers and merges them into one (:func:`sonomaly.merge`).

    File ``i`` goes to shard ``i % shards`` (so that shards mix the corpus's order). Each shard must hold enough
    normal audio to fit and calibrate a bank on its own (two analysis windows at least). The shards' own banks
    are not checked for a rough threshold (they are small by design); the merged bank is
    (:class:`sonomaly.RoughThresholdWarning`).

    Args:
        paths: normal recordings readable by every worker.
        shards: number of shards (2 or more).
        out: where to write the merged bank (None: not written). An existing file is kept unless ``overwrite``.
        client: a ``distributed.Client`` (default: Dask's current scheduler).
        overwrite: replace ``out`` if it is a bank.
        model_folder: the backbone folder (default: the embedded default).
        calibrate: set the merged bank's thresholds on the merged bank itself: each shard's clips are scored on
            the workers without the memory-bank rows they gave (:func:`sonomaly.held_out`) and the bank is
            recalibrated from them (:func:`sonomaly.calibrate`); a second pass over the files, as long as the
            fits' analysis. False: the shards' held-out scores are pooled (faster; flags fewer faults).
        **fit_options: as :func:`sonomaly.fit` (preset, layers, coreset_ratio, max_bank_rows, seed, channel,
            ``on_error="skip"``: files that cannot be used are left out of the fits and the calibration, with a
            :class:`sonomaly.SkippedFileWarning` each raised here, in the caller).

    Returns:
        The merged :class:`sonomaly.Bank`.

    Raises:
        InvalidInputError: fewer than two shards or files than shards, ``out`` exists (without ``overwrite``), or
            the merge refuses the banks (e.g. PaDiM members).
        sonomaly.Error: a shard's fit failed (its message).
    """
    import dask

    paths = [os.fspath(p) for p in paths]
    if shards < 2:
        raise sonomaly.InvalidInputError(f"a sharded fit needs at least 2 shards, got {shards}")
    if len(paths) < shards:
        raise sonomaly.InvalidInputError(f"{len(paths)} files cannot make {shards} shards")
    if out is not None and os.path.exists(out) and not overwrite:
        raise sonomaly.InvalidInputError(f"{out} already exists; pass overwrite=True to replace it or choose another path")
    parts = [paths[s::shards] for s in range(shards)]
    tasks = [dask.delayed(_fit_shard, pure=False)(p, model_folder, dict(fit_options)) for p in parts]
    fitted = client.gather(client.compute(tasks)) if client is not None else dask.compute(*tasks)
    for _, messages in fitted:
        for m in messages:
            warnings.warn(m, sonomaly.SkippedFileWarning, stacklevel=2)
    model = sonomaly.Model(model_folder) if model_folder is not None else None
    with warnings.catch_warnings():
        # The merge's own rough-threshold warning is given once, below, for the bank returned.
        warnings.simplefilter("ignore", sonomaly.RoughThresholdWarning)
        merged = sonomaly.merge([sonomaly.Bank.from_bytes(b) for b, _ in fitted], model=model)
    if calibrate:
        # Each shard's clips scored against the merged bank without their own rows, replaced from the same shard's
        # clips, on the workers (what sonomaly.merge(calibrate_on=...) computes in one process). Files the fits
        # skipped are skipped again, silently.
        merged_bytes = merged.to_bytes()
        channel = fit_options.get("channel")
        on_error = fit_options.get("on_error", "raise")
        tasks = [
            dask.delayed(_held_out_shard, pure=False)(p, merged_bytes, model_folder, channel, on_error) for p in parts
        ]
        held = client.gather(client.compute(tasks)) if client is not None else dask.compute(*tasks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sonomaly.RoughThresholdWarning)
            merged = sonomaly.calibrate(merged, np.concatenate([h for h, _ in held], axis=0))
    sonomaly._warn_rough(merged, 2)
    if out is not None:
        merged.save(out, overwrite=overwrite)
    return merged
