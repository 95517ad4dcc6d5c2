"""PyTorch reference for model-zoo's parity tests (run with the peer venv's python).

  reference.py make-resnet34 OUT.pth
      torchvision resnet34, seeded random init, BatchNorm affine parameters and
      running statistics randomised too (so a mis-mapped BN shows), saved with
      torch.save (zip format).
  reference.py forward ARCH WEIGHTS INPUT.f32 N H W OUT_DIR
      Reads an N x 3 x H x W float32 input, runs the backbone in eval mode and
      writes OUT_DIR/features.f32; for resnet34 also OUT_DIR/features_train.f32
      (BatchNorm on batch statistics); for efficientnet-lite0/1/2, if the
      weights hold the ImageNet classifier, OUT_DIR/logits.f32.
      WEIGHTS: a .pth (torch.load) or a .safetensors file.

The EfficientNet-Lite here is written from the reference design
(lukemelas/EfficientNet-PyTorch with TF "SAME" padding, Lite: ReLU6, no SE),
independently of the Rust one. Lite1 and Lite2 are built as TF's
efficientnet_lite_builder builds them: its block strings, width and depth
coefficients, round_filters / round_repeats, and fix_head_stem (stem, head and
the first and last stages' repeats unscaled); every weight's shape is checked
against that design before it is used.
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


# efficientnet_builder._DEFAULT_BLOCKS_ARGS (Lite models ignore the se ratio).
TF_BLOCKS_ARGS = [
    "r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25", "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25", "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
]
# efficientnet_lite_builder.efficientnet_lite_params: (width, depth, resolution, dropout)
LITE_PARAMS = {
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
}
DEPTH_DIVISOR = 8


def decode_block_string(block_string):
    options = dict((part[0], part[1:]) for part in block_string.split("_") if part[:2] != "se")
    return {"repeats": int(options["r"]), "kernel": int(options["k"]), "stride": int(options["s"][0]),
            "expand": int(options["e"]), "in": int(options["i"]), "out": int(options["o"])}


def round_filters(filters, width):
    """efficientnet_model.round_filters with min_depth None."""
    filters *= width
    new_filters = max(DEPTH_DIVISOR, int(filters + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new_filters < 0.9 * filters:
        new_filters += DEPTH_DIVISOR
    return int(new_filters)


def lite_blocks(arch):
    """One (expand, kernel, stride, in, out) per block, as efficientnet_model.Model._build_blocks."""
    width, depth, _, _ = LITE_PARAMS[arch]
    blocks = []
    for i, block_string in enumerate(TF_BLOCKS_ARGS):
        args = decode_block_string(block_string)
        c_in, c_out = round_filters(args["in"], width), round_filters(args["out"], width)
        if i == 0 or i == len(TF_BLOCKS_ARGS) - 1:  # fix_head_stem
            repeats = args["repeats"]
        else:
            repeats = int(math.ceil(depth * args["repeats"]))
        blocks.append((args["expand"], args["kernel"], args["stride"], c_in, c_out))
        blocks += [(args["expand"], args["kernel"], 1, c_out, c_out)] * (repeats - 1)
    return blocks


def same_conv(x, weight, stride, groups=1):
    """TF SAME: output ceil(in/stride); odd padding totals go bottom/right."""
    ih, iw = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    pad_h = max((math.ceil(ih / stride) - 1) * stride + kh - ih, 0)
    pad_w = max((math.ceil(iw / stride) - 1) * stride + kw - iw, 0)
    x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return F.conv2d(x, weight, None, stride, 0, 1, groups)


def lite_features(arch, sd, x):
    def weight(name, shape):
        assert tuple(sd[name].shape) == shape, f"{arch}: {name} is {tuple(sd[name].shape)}, the design says {shape}"
        return sd[name]

    def bn(x, prefix):
        assert sd[prefix + ".weight"].shape == (x.shape[1],), prefix
        return F.batch_norm(x, sd[prefix + ".running_mean"], sd[prefix + ".running_var"],
                            sd[prefix + ".weight"], sd[prefix + ".bias"], False, 0.01, 1e-3)

    stem, head = 32, 1280  # fix_head_stem: not scaled
    blocks = lite_blocks(arch)
    n_blocks = sum(1 for k in sd if k.startswith("_blocks.") and k.endswith("._project_conv.weight"))
    assert n_blocks == len(blocks), f"{arch}: the file has {n_blocks} blocks, the design {len(blocks)}"
    with torch.no_grad():
        x = F.relu6(bn(same_conv(x, weight("_conv_stem.weight", (stem, 3, 3, 3)), 2), "_bn0"))
        for index, (expand, kernel, stride, c_in, c_out) in enumerate(blocks):
            p = f"_blocks.{index}."
            hidden = c_in * expand
            inputs = x
            if expand != 1:
                x = F.relu6(bn(same_conv(x, weight(p + "_expand_conv.weight", (hidden, c_in, 1, 1)), 1), p + "_bn0"))
            x = F.relu6(bn(same_conv(x, weight(p + "_depthwise_conv.weight", (hidden, 1, kernel, kernel)), stride,
                                     groups=hidden), p + "_bn1"))
            x = bn(same_conv(x, weight(p + "_project_conv.weight", (c_out, hidden, 1, 1)), 1), p + "_bn2")
            if stride == 1 and c_in == c_out:  # id_skip
                x = x + inputs
        features = F.relu6(bn(same_conv(x, weight("_conv_head.weight", (head, blocks[-1][4], 1, 1)), 1), "_bn1"))
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
        outputs = resnet34_features(weights, x) if arch == "resnet34" else lite_features(arch, weights, x)
        for name, tensor in outputs.items():
            tensor.contiguous().numpy().astype("<f4").tofile(f"{out_dir}/{name}.f32")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
