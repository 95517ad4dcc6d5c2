"""Checks pth_to_safetensors.py against torch.load (run with a Python that has torch).

Writes state dicts with torch.save in both formats (zip and legacy), including
a non-contiguous tensor, a view into a shared storage, several dtypes and a
0-dim tensor, converts them, reads the safetensors back with numpy and compares
bit for bit. Prints one line per case and exits non-zero on a mismatch.

usage: python check_pth_to_safetensors.py WORK_DIR
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torchvision

SAFETENSORS_TO_NUMPY = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
                        "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_TO_NUMPY[info["dtype"]]
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
    return out


def state_dicts():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet34().state_dict()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    odd = {
        "transposed": base.t(),                    # non-contiguous
        "row_view": base[1],                       # offset into a shared storage
        "strided": base[:, ::2],
        "float64": torch.randn(3, dtype=torch.float64),
        "float16": torch.randn(2, 3).half(),
        "int64_scalar": torch.tensor(7),
        "uint8": torch.arange(5, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }
    return {"resnet34": resnet, "odd": odd}


def main(work_dir):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pth_to_safetensors.py")
    failures = 0
    for name, sd in state_dicts().items():
        for legacy in (False, True):
            fmt = "legacy" if legacy else "zip"
            pth = os.path.join(work_dir, f"{name}-{fmt}.pth")
            out = os.path.join(work_dir, f"{name}-{fmt}.safetensors")
            torch.save(sd, pth, _use_new_zipfile_serialization=not legacy)
            subprocess.run([sys.executable, script, pth, out], check=True, stdout=subprocess.DEVNULL)
            expected = torch.load(pth, weights_only=True)
            got = read_safetensors(out)
            problems = []
            if list(got) != list(expected):
                problems.append(f"keys differ: {sorted(set(got) ^ set(expected))}")
            for key, tensor in expected.items():
                if key in got:
                    want = tensor.numpy()
                    if got[key].shape != want.shape or got[key].dtype != want.dtype or not np.array_equal(got[key], want):
                        problems.append(f"{key}: {got[key].dtype}{got[key].shape} != {want.dtype}{want.shape}")
            status = "ok" if not problems else "MISMATCH " + "; ".join(problems[:5])
            failures += bool(problems)
            print(f"{name:9s} {fmt:6s} {len(expected):4d} tensors {status}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
