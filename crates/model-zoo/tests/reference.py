"""PyTorch reference for model-zoo's parity tests (run with the peer venv's python).

  reference.py make-resnet34 OUT.pth
      torchvision resnet34, seeded random init, BatchNorm affine parameters and
      running statistics randomised too (so a mis-mapped BN shows), saved with
      torch.save (zip format).
  reference.py forward ARCH WEIGHTS INPUT.f32 N H W OUT_DIR
      Reads an N x 3 x H x W float32 input, runs the backbone in eval mode and
      writes OUT_DIR/features.f32; for resnet34 also OUT_DIR/features_train.f32
      (BatchNorm on batch statistics); for efficientnet-lite0, if the weights
      hold the ImageNet classifier, OUT_DIR/logits.f32.
      WEIGHTS: a .pth (torch.load) or a .safetensors file.

The EfficientNet-Lite0 here is written from the reference design
(lukemelas/EfficientNet-PyTorch with TF "SAME" padding, Lite: ReLU6, no SE),
independently of the Rust one.
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def load_weights(path):
    if path.endswith(".safetensors"):
        numpy_dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            array = np.frombuffer(data[start:end], dtype=numpy_dtypes[info["dtype"]]).reshape(info["shape"])
            out[name] = torch.from_numpy(array.copy())
        return out
    return torch.load(path, weights_only=True)


def make_resnet34(out):
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet34()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), out)


def resnet34_features(weights, x):
    import torchvision
    model = torchvision.models.resnet34()
    model.load_state_dict(weights)
    body = torch.nn.Sequential(*list(model.children())[:8])
    with torch.no_grad():
        body.eval()
        features = body(x)
        body.train()
        features_train = body(x)
    return {"features": features, "features_train": features_train}


# (expand, kernel, stride, in, out, repeats), EfficientNet-B0 blocks at width/depth 1.0
LITE0_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
                (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def same_conv(x, weight, stride, groups=1):
    """TF SAME: output ceil(in/stride); odd padding totals go bottom/right."""
    ih, iw = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    pad_h = max((math.ceil(ih / stride) - 1) * stride + kh - ih, 0)
    pad_w = max((math.ceil(iw / stride) - 1) * stride + kw - iw, 0)
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, weight, None, stride, 0, 1, groups)


def lite0_features(sd, x):
    def bn(x, prefix):
        return F.batch_norm(x, sd[prefix + ".running_mean"], sd[prefix + ".running_var"],
                            sd[prefix + ".weight"], sd[prefix + ".bias"], False, 0.01, 1e-3)

    with torch.no_grad():
        x = F.relu6(bn(same_conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
        index = 0
        for expand, kernel, stride, c_in, c_out, repeats in LITE0_STAGES:
            for r in range(repeats):
                p = f"_blocks.{index}."
                block_stride, block_in = (stride, c_in) if r == 0 else (1, c_out)
                inputs = x
                if expand != 1:
                    x = F.relu6(bn(same_conv(x, sd[p + "_expand_conv.weight"], 1), p + "_bn0"))
                assert sd[p + "_depthwise_conv.weight"].shape[-1] == kernel
                x = F.relu6(bn(same_conv(x, sd[p + "_depthwise_conv.weight"], block_stride, groups=x.shape[1]), p + "_bn1"))
                x = bn(same_conv(x, sd[p + "_project_conv.weight"], 1), p + "_bn2")
                if block_stride == 1 and block_in == c_out:
                    x = x + inputs
                index += 1
        features = F.relu6(bn(same_conv(x, sd["_conv_head.weight"], 1), "_bn1"))
        out = {"features": features}
        if "_fc.weight" in sd:
            pooled = features.mean(dim=(2, 3))
            out["logits"] = F.linear(pooled, sd["_fc.weight"], sd["_fc.bias"])
    return out


def main(argv):
    if argv[1] == "make-resnet34":
        make_resnet34(argv[2])
        return 0
    if argv[1] == "forward":
        arch, weights_path, input_path = argv[2], argv[3], argv[4]
        n, h, w = (int(v) for v in argv[5:8])
        out_dir = argv[8]
        x = torch.from_numpy(np.fromfile(input_path, dtype="<f4").reshape(n, 3, h, w).copy())
        weights = load_weights(weights_path)
        outputs = resnet34_features(weights, x) if arch == "resnet34" else lite0_features(weights, x)
        for name, tensor in outputs.items():
            tensor.contiguous().numpy().astype("<f4").tofile(f"{out_dir}/{name}.f32")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
