"""Convert a PyTorch state dict (.pth) to safetensors without importing torch.

The libtorch the project installs for tch is not importable from Python (it
lacks cuDNN), so this reads both torch.save formats with the standard library
only:
  * the zip format (torch >= 1.6): archive/data.pkl + archive/data/<key>
  * the legacy format: magic number, protocol version, sys info, the pickled
    object, the list of storage keys, then each storage as an int64 element
    count followed by its raw bytes.
Tensors are rebuilt from (storage, offset, size, stride) and written in
row-major order. Keys are kept as they are (num_batches_tracked included).

usage: python3 pth_to_safetensors.py IN.pth OUT.safetensors
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import tempfile
import zipfile

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# storage class name -> (safetensors dtype, element size, struct format)
STORAGE_DTYPES = {
    "FloatStorage": ("F32", 4, "f"),
    "DoubleStorage": ("F64", 8, "d"),
    "HalfStorage": ("F16", 2, "e"),
    "BFloat16Storage": ("BF16", 2, "H"),
    "LongStorage": ("I64", 8, "q"),
    "IntStorage": ("I32", 4, "i"),
    "ShortStorage": ("I16", 2, "h"),
    "CharStorage": ("I8", 1, "b"),
    "ByteStorage": ("U8", 1, "B"),
    "BoolStorage": ("BOOL", 1, "?"),
}


class ConversionError(Exception):
    pass


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ConversionError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype, self.itemsize, self.fmt = STORAGE_DTYPES[name]


class Storage:
    """Bytes of one storage, filled in when the file provides them."""

    def __init__(self, storage_type, key):
        self.storage_type = storage_type
        self.key = key
        self.data = None


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def contiguous_bytes(self):
        data, itemsize = self.storage.data, self.storage.storage_type.itemsize
        if data is None:
            raise ConversionError(f"storage {self.storage.key} has no data in the file")
        numel = 1
        for dim in self.size:
            numel *= dim
        expected = []
        step = 1
        for dim in reversed(self.size):
            expected.append(step)
            step *= dim
        expected.reverse()
        if numel == 0:
            return b""
        # Dims of size 1 may carry any stride; only the others decide contiguity.
        if all(d == 1 or s == e for d, s, e in zip(self.size, self.stride, expected)):
            start = self.offset * itemsize
            return bytes(data[start:start + numel * itemsize])
        out = bytearray()
        index = [0] * len(self.size)
        for _ in range(numel):
            pos = self.offset + sum(i * s for i, s in zip(index, self.stride))
            out += data[pos * itemsize:(pos + 1) * itemsize]
            for d in reversed(range(len(index))):
                index[d] += 1
                if index[d] < self.size[d]:
                    break
                index[d] = 0
        return bytes(out)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return Tensor(storage, storage_offset, size, stride)


def rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise ConversionError(f"the pickle references {module}.{name}, which a plain state dict does not need")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ConversionError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, StorageType):
            raise ConversionError(f"persistent id {pid!r} has no storage type")
        if key not in self.storages:
            self.storages[key] = Storage(storage_type, key)
        return self.storages[key]


def load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ConversionError("zip archive without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages = {}
        obj = StateDictUnpickler(io.BytesIO(archive.read(pkl[0])), storages).load()
        for key, storage in storages.items():
            storage.data = memoryview(archive.read(f"{prefix}data/{key}"))
    return obj


def load_legacy(path):
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception:  # any garbage: the file is simply not a pickle
            magic = None
        if magic != LEGACY_MAGIC:
            raise ConversionError("neither a zip archive nor a legacy torch.save file (bad magic number)")
        protocol = pickle.load(f)
        if protocol != LEGACY_PROTOCOL:
            raise ConversionError(f"unsupported legacy protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ConversionError("big-endian files are not supported")
        storages = {}
        obj = StateDictUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * storage.storage_type.itemsize
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise ConversionError(f"file ends inside storage {key}")
            storage.data = memoryview(data)
    return obj


def load_state_dict(path):
    obj = load_zip(path) if zipfile.is_zipfile(path) else load_legacy(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"expected a state dict, found {type(obj).__name__}")
    tensors = collections.OrderedDict()
    for name, value in obj.items():
        if isinstance(value, Tensor):
            tensors[name] = value
    if not tensors:
        raise ConversionError("the state dict holds no tensors")
    return tensors


def write_safetensors(tensors, out_path):
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        blob = tensor.contiguous_bytes()
        header[name] = {
            "dtype": tensor.storage.storage_type.dtype,
            "shape": list(tensor.size),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # keep the data 8-byte aligned
    out_dir = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(header_bytes)))
            out.write(header_bytes)
            for blob in blobs:
                out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, out_path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    try:
        tensors = load_state_dict(src)
        write_safetensors(tensors, dst)
    except (ConversionError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, struct.error) as err:
        print(f"error: {src}: {err}", file=sys.stderr)
        return 1
    total = sum(t.storage.storage_type.itemsize * _numel(t.size) for t in tensors.values())
    print(f"{src} -> {dst}: {len(tensors)} tensors, {total / 1e6:.1f} MB")
    return 0


def _numel(size):
    n = 1
    for d in size:
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main(sys.argv))
