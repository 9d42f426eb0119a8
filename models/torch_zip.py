#!/usr/bin/env python3
"""Read and write PyTorch checkpoints (``torch.save`` files) WITHOUT torch.

Two on-disk formats exist and both are handled:

* the zip format (torch >= 1.6 default): a stored (uncompressed) zip archive holding ``<name>/data.pkl`` (a
  protocol-2 pickle of the saved object), the raw little-endian bytes of every storage as
  ``<name>/data/<key>``, and small ``version`` / ``byteorder`` records;
* the legacy format (torch < 1.6, e.g. PANNs checkpoints trained with torch 1.0-1.4): five pickles in a row
  (magic number, protocol version, system info, the object, the sorted storage keys) followed by every storage
  as an int64 element count and its raw bytes.

In both, a tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` where
``storage`` is a *persistent id* ``('storage', torch.FloatStorage, key, location, numel[, view])``. The
restricted unpickler below maps those two things to numpy and never imports or calls anything else: globals
outside a short allow-list (OrderedDict, torch storage/dtype names, numpy arrays of plain dtypes) are replaced
by inert placeholder objects, so metadata a checkpoint carries beside its weights (argparse namespaces,
optimizer state, ...) neither breaks loading nor runs code.

Tensors are returned as :class:`LazyTensor`: their bytes are read only when ``.numpy()`` is called, so a
converter that needs 5 M of the 80 M parameters of a 330 MB checkpoint reads only those.

The writer (:func:`save`) produces files in either format from nested dicts of numpy arrays, emitting the same
pickle opcodes torch does; tests use it to build synthetic checkpoints shaped like real ones.
"""

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["LazyTensor", "Expanded", "load", "save", "state_dict_of", "is_tensor"]

# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------

# torch storage class name -> numpy dtype (bfloat16 is read as uint16 and widened, see LazyTensor.numpy)
_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}
# torch dtype name (torch.float32 ...) -> storage class name, for _rebuild_tensor_v3
_TORCH_DTYPES = {
    "float32": "FloatStorage", "float": "FloatStorage",
    "float64": "DoubleStorage", "double": "DoubleStorage",
    "float16": "HalfStorage", "half": "HalfStorage",
    "bfloat16": "BFloat16Storage",
    "int64": "LongStorage", "long": "LongStorage",
    "int32": "IntStorage", "int": "IntStorage",
    "int16": "ShortStorage", "short": "ShortStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}
_NUMPY_TO_STORAGE = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: carries the storage class name and its numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class _TorchDtype:
    """Stand-in for ``torch.float32`` & co (only used by ``_rebuild_tensor_v3``)."""

    def __init__(self, name):
        self.name = name
        self.storage = _StorageType(_TORCH_DTYPES[name])


# ----------------------------------------------------------------------------------------------
# lazy storages and tensors
# ----------------------------------------------------------------------------------------------


class _Storage:
    """One storage: element dtype, element count, and a function returning its raw bytes."""

    def __init__(self, key, dtype, numel, read):
        self.key = key
        self.dtype = np.dtype(dtype)
        self.numel = int(numel)
        self._read = read
        self._array = None
        self.bf16 = False  # a BFloat16Storage (read as uint16, widened to float32)
        self.base = self  # a view (legacy format) points at its root storage
        self.base_offset = 0

    def array(self):
        if self._array is None:
            raw = self._read()
            arr = np.frombuffer(raw, dtype=self.dtype)
            if arr.size != self.numel:
                raise ValueError(f"storage {self.key}: {arr.size} elements on disk, the pickle says {self.numel}")
            self._array = arr
        return self._array


class _StorageView:
    """A legacy-format storage view: elements [offset, offset + numel) of a root storage."""

    def __init__(self, root, offset, numel):
        self.key = f"{root.key}[{offset}:{offset + numel}]"
        self.dtype = root.dtype
        self.numel = int(numel)
        self.base = root
        self.base_offset = int(offset)

    def array(self):
        return self.base.array()[self.base_offset : self.base_offset + self.numel]


class LazyTensor:
    """A tensor of a checkpoint: shape and dtype known, bytes read on first ``numpy()``."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage = storage
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        self.storage_dtype = storage.dtype
        self.bfloat16 = dtype == "BFloat16Storage" or bool(getattr(storage.base, "bf16", False))
        if len(self.shape) != len(self.stride):
            raise ValueError(f"tensor with size {self.shape} but stride {self.stride}")
        if any(n < 0 for n in self.shape) or any(s < 0 for s in self.stride):
            raise ValueError(f"negative size or stride: {self.shape} / {self.stride}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else -1
        if all(self.shape) and last >= storage.numel:
            raise ValueError(
                f"tensor view out of storage bounds: size {self.shape}, stride {self.stride}, offset {self.offset}, "
                f"storage {storage.key} has {storage.numel} elements"
            )
        self._value = None

    @property
    def dtype(self):
        return np.dtype("float32") if self.bfloat16 else self.storage_dtype.newbyteorder("=")

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self):
        """The tensor as a C-contiguous native-endian numpy array (bfloat16 widened to float32)."""
        if self._value is None:
            if self.size == 0:
                out = np.zeros(self.shape, dtype=self.storage_dtype.newbyteorder("="))
            else:
                base = self.storage.array()
                itemsize = base.dtype.itemsize
                view = np.lib.stride_tricks.as_strided(
                    base[self.offset :],
                    shape=self.shape,
                    strides=tuple(s * itemsize for s in self.stride),
                    writeable=False,
                )
                out = np.array(view, dtype=self.storage_dtype.newbyteorder("="), order="C")  # a copy; keeps 0-d
            if self.bfloat16:
                out = (out.astype(np.uint32) << 16).view(np.float32)
            self._value = out
        return self._value

    def __repr__(self):
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


def is_tensor(x):
    return isinstance(x, LazyTensor)


# ----------------------------------------------------------------------------------------------
# restricted unpickler
# ----------------------------------------------------------------------------------------------


class _OpaqueBase:
    """Inert stand-in for a class the allow-list does not know. Accepts construction, state and items."""

    _global = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self):
        return f"<opaque {self._global}>"


def _opaque(module, name):
    return type(name, (_OpaqueBase,), {"_global": f"{module}.{name}"})


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *rest):
    # storage is untyped (bytes); reinterpret it with the tensor's dtype
    if not isinstance(dtype, _TorchDtype):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3 with dtype {dtype!r}")
    typed = _Storage(storage.key, dtype.storage.dtype, storage.numel // dtype.storage.dtype.itemsize, storage._read)
    return LazyTensor(typed, storage_offset, size, stride, dtype=dtype.storage.name)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


def _numpy_dtype(spec, align=False, copy=False):
    # object arrays are harmless here: their elements are unpickled by this same restricted unpickler
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not allowed")
    return np.dtype(spec)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("unexpected numpy scalar payload")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy array subtype {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode("latin1")


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storage_for):
        super().__init__(file)
        self._storage_for = storage_for
        self.opaque = set()

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        self.opaque.add(f"{module}.{name}")
        return _opaque(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        return self._storage_for(storage_type, str(pid[2]), int(pid[4]), pid[5] if len(pid) > 5 else None)


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one <name>/data.pkl in the zip, found {pkl or 'none'}")
        prefix = pkl[0][: -len("data.pkl")]
        data_pkl = archive.read(pkl[0])
        names = set(archive.namelist())
        byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
    if byteorder != "little":
        raise ValueError(f"{path}: storages are {byteorder}-endian; only little-endian checkpoints are supported")
    storages = {}

    def storage_for(storage_type, key, numel, view):
        if key not in storages:
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise pickle.UnpicklingError(f"{path}: the pickle refers to storage {key} but {entry} is missing")

            def read(entry=entry):
                with zipfile.ZipFile(path) as z:
                    return z.read(entry)

            s = _Storage(key, storage_type.dtype, numel, read)
            s.bf16 = storage_type.name == "BFloat16Storage"
            storages[key] = s
        return storages[key]

    up = _Unpickler(io.BytesIO(data_pkl), storage_for)
    return up.load(), up.opaque


def _no_storage(*_):
    raise pickle.UnpicklingError("a storage where none may be")


def _plain_load(f):
    """One pickle without tensors (the legacy format's header and key list), through the restricted unpickler."""
    return _Unpickler(f, _no_storage).load()


def _load_legacy(path):
    storages = {}

    def storage_for(storage_type, key, numel, view):
        if key not in storages:
            s = _Storage(key, storage_type.dtype, numel, None)
            s.bf16 = storage_type.name == "BFloat16Storage"
            storages[key] = s
        root = storages[key]
        if view is not None:
            _view_key, offset, view_size = view
            return _StorageView(root, int(offset), int(view_size))
        return root

    with open(path, "rb") as f:
        try:
            magic = _plain_load(f)
        except Exception:  # noqa: BLE001  (any garbage: not a pickle at all)
            magic = None
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (neither a zip archive nor the legacy magic number)")
        version = _plain_load(f)
        if version != LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"{path}: legacy torch protocol version {version}, expected {LEGACY_PROTOCOL_VERSION}")
        sys_info = _plain_load(f)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: saved on a big-endian machine; not supported")
        up = _Unpickler(f, storage_for)
        obj = up.load()
        keys = _plain_load(f)
        # storages follow in this order, each: int64 element count, then the raw bytes
        pos = f.tell()
        size = os.fstat(f.fileno()).st_size
        for key in keys:
            key = str(key)
            f.seek(pos)
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated before storage {key}")
            (numel,) = struct.unpack("<q", head)
            if key not in storages:
                raise ValueError(f"{path}: storage {key} is not referenced by the pickle")
            s = storages[key]
            if numel != s.numel:
                raise ValueError(f"{path}: storage {key} has {numel} elements on disk, the pickle says {s.numel}")
            nbytes = numel * s.dtype.itemsize
            if pos + 8 + nbytes > size:
                raise ValueError(f"{path}: truncated inside storage {key}")

            def read(start=pos + 8, nbytes=nbytes):
                with open(path, "rb") as g:
                    g.seek(start)
                    return g.read(nbytes)

            s._read = read
            pos += 8 + nbytes
        missing = [k for k, s in storages.items() if s._read is None]
        if missing:
            raise ValueError(f"{path}: storages {missing[:5]} are referenced but not stored")
    return obj, up.opaque


def load(path):
    """Loads a torch checkpoint (zip or legacy format). Returns ``(object, opaque_globals)``: the saved object
    with every tensor as a :class:`LazyTensor`, and the names of the globals that were replaced by inert
    placeholders."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def state_dict_of(obj):
    """The tensor dictionary inside a loaded checkpoint: the object itself if it maps names to tensors, else its
    ``model`` / ``state_dict`` / ``model_state_dict`` / ``module`` entry (recursively), else the first element of a
    tuple (aisfx saves ``(state_dict, ds_dict)``). Returns ``(dict, path)`` where ``path`` names the entry used."""
    path = []
    for _ in range(4):
        if isinstance(obj, tuple) and obj and isinstance(obj[0], dict):
            obj = obj[0]
            path.append("[0]")
            continue
        if not isinstance(obj, dict):
            break
        if any(is_tensor(v) for v in obj.values()):
            return obj, "".join(path)
        for k in ("model", "state_dict", "model_state_dict", "module", "net"):
            if k in obj and isinstance(obj[k], (dict, tuple)):
                obj = obj[k]
                path.append(f"[{k!r}]")
                break
        else:
            break
    raise ValueError("the checkpoint holds no dictionary of tensors (looked at the object itself and its "
                     "'model' / 'state_dict' entries)")


# ----------------------------------------------------------------------------------------------
# writing (synthetic checkpoints): a protocol-2 pickle emitter that writes what torch writes
# ----------------------------------------------------------------------------------------------


class Expanded:
    """A tensor of ``shape`` whose every element is ``value``, saved as torch saves ``x.expand(shape)``: a
    one-element storage viewed with all strides 0."""

    def __init__(self, value, shape, dtype=np.float32):
        self.value = value
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)


class _Emitter:
    def __init__(self, legacy):
        self.out = io.BytesIO()
        self.legacy = legacy
        self.storages = []  # (key, numpy array)

    def w(self, b):
        self.out.write(b)

    def glob(self, module, name):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def obj(self, x):
        if x is None:
            self.w(b"N")
        elif x is True:
            self.w(b"\x88")
        elif x is False:
            self.w(b"\x89")
        elif isinstance(x, (int, np.integer)):
            self.int(int(x))
        elif isinstance(x, float):
            self.w(b"G" + struct.pack(">d", x))
        elif isinstance(x, str):
            b = x.encode("utf-8")
            self.w(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(x, tuple):
            self.tuple(x)
        elif isinstance(x, list):
            self.w(b"]")
            if x:
                self.w(b"(")
                for v in x:
                    self.obj(v)
                self.w(b"e")
        elif isinstance(x, collections.OrderedDict):
            self.glob("collections", "OrderedDict")
            self.w(b")R")
            self.items(x)
        elif isinstance(x, dict):
            self.w(b"}")
            self.items(x)
        elif isinstance(x, (np.ndarray, Expanded)):
            self.tensor(x)
        else:
            raise TypeError(f"cannot write {type(x).__name__} into a synthetic checkpoint")

    def int(self, v):
        if 0 <= v < 256:
            self.w(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.w(b"M" + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            self.w(b"J" + struct.pack("<i", v))
        else:
            n = (v.bit_length() + 8) // 8
            self.w(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))

    def tuple(self, t):
        if len(t) == 0:
            self.w(b")")
            return
        if len(t) <= 3:
            for v in t:
                self.obj(v)
            self.w({1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(t)])
            return
        self.w(b"(")
        for v in t:
            self.obj(v)
        self.w(b"t")

    def items(self, d):
        items = list(d.items())
        for i in range(0, len(items), 1000):  # pickle batches SETITEMS by 1000
            self.w(b"(")
            for k, v in items[i : i + 1000]:
                self.obj(k)
                self.obj(v)
            self.w(b"u")

    def tensor(self, x):
        if isinstance(x, Expanded):
            data = np.array([x.value], dtype=x.dtype)
            shape, stride = x.shape, (0,) * len(x.shape)
        else:
            data = x if x.flags.c_contiguous else x.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
            shape = data.shape
            stride = tuple(s // data.dtype.itemsize for s in data.strides) if data.size else (1,) * data.ndim
            if data.ndim and data.size:
                # C-contiguous strides in elements, as torch reports them
                stride = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape)))
        if data.dtype not in _NUMPY_TO_STORAGE:
            raise TypeError(f"dtype {data.dtype} has no torch storage type")
        key = str(len(self.storages))
        self.storages.append((key, data.reshape(-1)))
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")
        # the persistent id of the storage
        self.w(b"(")
        self.obj("storage")
        self.glob("torch", _NUMPY_TO_STORAGE[data.dtype])
        self.obj(key)
        self.obj("cpu")
        self.obj(int(data.size))
        if self.legacy:
            self.w(b"N")  # no view metadata
        self.w(b"tQ")
        self.obj(0)  # storage offset
        self.tuple(tuple(int(s) for s in shape))
        self.tuple(tuple(int(s) for s in stride))
        self.w(b"\x89")  # requires_grad False
        self.glob("collections", "OrderedDict")
        self.w(b")R")  # backward hooks: OrderedDict()
        self.w(b"tR")

    def dumps(self, obj):
        self.w(b"\x80\x02")
        self.obj(obj)
        self.w(b".")
        return self.out.getvalue()


def _zip_entry(zf, name, data, align=64):
    """Writes one stored entry whose data starts at a multiple of ``align`` (torch pads with an 'FB' extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    start = zf.fp.tell() + 30 + len(name.encode("utf-8"))
    pad = (-(start + 4)) % align
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    zf.writestr(info, data)


def save(obj, path, fmt="zip", archive_name=None):
    """Writes ``obj`` (nested dict / OrderedDict / list / tuple / str / int / float / bool / None, with numpy arrays
    and :class:`Expanded` as tensors) as torch.save would, in the ``zip`` or ``legacy`` format. Byte-reproducible."""
    if fmt not in ("zip", "legacy"):
        raise ValueError(f"format {fmt!r}: use 'zip' or 'legacy'")
    em = _Emitter(legacy=fmt == "legacy")
    pkl = em.dumps(obj)
    tmp = path + ".tmp"
    if fmt == "zip":
        name = archive_name or os.path.splitext(os.path.basename(path))[0] or "archive"
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            _zip_entry(zf, f"{name}/data.pkl", pkl)
            _zip_entry(zf, f"{name}/.format_version", b"1")
            _zip_entry(zf, f"{name}/.storage_alignment", b"64")
            _zip_entry(zf, f"{name}/byteorder", b"little")
            for key, data in em.storages:
                _zip_entry(zf, f"{name}/data/{key}", data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
            _zip_entry(zf, f"{name}/version", b"3\n")
            _zip_entry(zf, f"{name}/.data/serialization_id", b"%020d" % (zlib.crc32(pkl)))
    else:
        with open(tmp, "wb") as f:
            pickle.dump(LEGACY_MAGIC, f, protocol=2)
            pickle.dump(LEGACY_PROTOCOL_VERSION, f, protocol=2)
            pickle.dump({"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
            f.write(pkl)
            storages = dict(em.storages)
            keys = sorted(storages)  # torch sorts the keys (as strings)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                data = storages[key]
                f.write(struct.pack("<q", data.size))
                f.write(data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
    os.replace(tmp, path)
