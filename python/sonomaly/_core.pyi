"""Type stubs of the Rust extension ``sonomaly._core`` (pyo3). Use the wrappers in ``sonomaly``."""

from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class Model:
    """A backbone and its front end; ``folder=None``: the embedded EfficientAT mn04_as."""

    def __init__(self, folder: Optional[str] = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def sample_rate(self) -> int:
        """Hz."""
    @property
    def hop_s(self) -> float:
        """Frame hop, seconds."""
    @property
    def sha256(self) -> str: ...

class Bank:
    @staticmethod
    def load(path: str) -> "Bank": ...
    @staticmethod
    def from_bytes(data: bytes) -> "Bank": ...
    def to_bytes(self) -> bytes: ...
    def save(self, path: str, overwrite: bool = False) -> None: ...
    def info_json(self) -> str: ...
    def meta_json(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def segment_threshold(self) -> float: ...
    @property
    def units(self) -> str:
        """``"z"`` or ``"distance"``."""
    @property
    def members(self) -> List[str]: ...

class Result:
    """One clip's result (see ``sonomaly.Result``)."""

    file: Optional[str]
    score: float
    threshold: float
    is_anomaly: bool
    units: str
    members: List[Dict[str, Union[str, float]]]
    segments: List[Tuple[float, float, float]]
    """``(onset_s, offset_s, peak)``: seconds, seconds, ``units``."""
    segment_threshold: float
    duration_s: float
    level_distance: Optional[float]
    out_of_distribution: Optional[str]
    frames: int
    mel_bins: int
    hop_s: float
    map: npt.NDArray[np.float32]
    """``[frames, mel_bins]``, ``units``."""
    curve: npt.NDArray[np.float32]
    """``[frames]``, ``units``."""
    def to_json(self) -> str: ...

def score(
    bank: Bank,
    clip: Union[str, npt.NDArray[np.float32]],
    sample_rate: Optional[int] = None,
    model: Optional[Model] = None,
    channel: Optional[int] = None,
) -> Result: ...
def fit(
    clips: List[Union[str, npt.NDArray[np.float32]]],
    sample_rate: Optional[int] = None,
    model: Optional[Model] = None,
    preset: Optional[str] = None,
    layers: Optional[List[str]] = None,
    detector: str = "patchcore",
    coreset_ratio: float = 0.1,
    max_bank_rows: Optional[int] = 16384,
    seed: int = 0,
    padim_d: int = 100,
    balance_layers: bool = False,
    frequency_position: bool = True,
    grid_stride: Optional[List[int]] = None,
    clip_z: Optional[float] = None,
    segment_z: Optional[float] = None,
    peak_normalize: bool = False,
    channel: Optional[int] = None,
    skip_errors: bool = False,
) -> Tuple[Bank, List[str]]: ...
def merge(
    banks: List[Bank],
    model: Optional[Model] = None,
    calibrate_on: Optional[List[Union[str, npt.NDArray[np.float32]]]] = None,
    sample_rate: Optional[int] = None,
    channel: Optional[int] = None,
    skip_errors: bool = False,
) -> Tuple[Bank, List[str]]: ...
def held_out(
    bank: Bank,
    clips: List[Union[str, npt.NDArray[np.float32]]],
    sample_rate: Optional[int] = None,
    model: Optional[Model] = None,
    channel: Optional[int] = None,
    skip_errors: bool = False,
) -> Tuple[npt.NDArray[np.float32], List[str]]: ...
def calibrate(bank: Bank, held: npt.NDArray[np.float32]) -> Bank: ...
