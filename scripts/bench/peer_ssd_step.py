"""PyTorch eager CPU peer of `cargo xtask bench ssd`: one training step of the
next lesson's single-shot detector (DL2 2018 lesson 9, pascal-multi.ipynb) as
pipelines/ssd.toml trains it: EfficientNet-Lite0 body (../shared/bench/ref_lesson.py,
random weights; speed does not depend on their values) + the lesson's
SSD_MultiHead (4x4, 2x2, 1x1 grids x 9 anchors = 189, 20 classes + background),
the lesson's ssd_loss (map_to_ground_truth at 0.4, L1 on matched anchors,
FocalLoss alpha 0.25 gamma 2, summed over the batch), Adam.

Inputs: random images and, per image, 3 objects whose boxes and classes follow
the same formula as the Rust side (crates/trainer/examples/bench_ssd_step.rs).

usage: peer_ssd_step.py SHARED_BENCH_DIR [BATCH] [STEPS] [THREADS] [SIZE]
(SIZE: the input side, 224 by default; at 224 and 256 the body's map is 7x7
and 8x8, which the head's stride-2 convolutions both take to 4x4, 2x2, 1x1.)
Prints the same three lines as peer_train.py (frozen body, full fine-tune, inference).
"""
import sys, time

shared = sys.argv[1]
bs = int(sys.argv[2]) if len(sys.argv) > 2 else 32
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
size = int(sys.argv[5]) if len(sys.argv) > 5 else 224
sys.path.insert(0, shared)
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from ref_lesson import Lite0Body

torch.set_num_threads(threads)
torch.manual_seed(0)
n_classes = 20

# ---- anchors, as the lesson builds them ----
anc_grids = [4, 2, 1]
anc_zooms = [0.7, 1., 1.3]
anc_ratios = [(1., 1.), (1., 0.5), (0.5, 1.)]
anchor_scales = [(anz * i, anz * j) for anz in anc_zooms for (i, j) in anc_ratios]
k = len(anchor_scales)
anc_offsets = [1 / (o * 2) for o in anc_grids]
anc_x = np.concatenate([np.repeat(np.linspace(ao, 1 - ao, ag), ag) for ao, ag in zip(anc_offsets, anc_grids)])
anc_y = np.concatenate([np.tile(np.linspace(ao, 1 - ao, ag), ag) for ao, ag in zip(anc_offsets, anc_grids)])
anc_ctrs = np.repeat(np.stack([anc_x, anc_y], axis=1), k, axis=0)
anc_sizes = np.concatenate([np.array([[o / ag, p / ag] for i in range(ag * ag) for o, p in anchor_scales]) for ag in anc_grids])
grid_sizes = torch.tensor(np.concatenate([np.array([1 / ag for i in range(ag * ag) for o, p in anchor_scales]) for ag in anc_grids]), dtype=torch.float32).unsqueeze(1)
anchors = torch.tensor(np.concatenate([anc_ctrs, anc_sizes], axis=1), dtype=torch.float32)


def hw2corners(ctr, hw): return torch.cat([ctr - hw / 2, ctr + hw / 2], dim=1)


anchor_cnr = hw2corners(anchors[:, :2], anchors[:, 2:])


# ---- the lesson's head ----
class StdConv(nn.Module):
    def __init__(self, nin, nout, stride=2, drop=0.1):
        super().__init__()
        self.conv = nn.Conv2d(nin, nout, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(nout)
        self.drop = nn.Dropout(drop)

    def forward(self, x): return self.drop(self.bn(F.relu(self.conv(x))))


def flatten_conv(x, k):
    bs, nf, gx, gy = x.size()
    x = x.permute(0, 2, 3, 1).contiguous()
    return x.view(bs, -1, nf // k)


class OutConv(nn.Module):
    def __init__(self, k, nin, bias):
        super().__init__()
        self.k = k
        self.oconv1 = nn.Conv2d(nin, (n_classes + 1) * k, 3, padding=1)
        self.oconv2 = nn.Conv2d(nin, 4 * k, 3, padding=1)
        self.oconv1.bias.data.zero_().add_(bias)

    def forward(self, x):
        return [flatten_conv(self.oconv1(x), self.k), flatten_conv(self.oconv2(x), self.k)]


class SSD_MultiHead(nn.Module):
    def __init__(self, k, bias, nin=1280, drop=0.4):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.sconv0 = StdConv(nin, 256, stride=1, drop=drop)
        self.sconv1 = StdConv(256, 256, drop=drop)
        self.sconv2 = StdConv(256, 256, drop=drop)
        self.sconv3 = StdConv(256, 256, drop=drop)
        self.out1 = OutConv(k, 256, bias)
        self.out2 = OutConv(k, 256, bias)
        self.out3 = OutConv(k, 256, bias)

    def forward(self, x):
        x = self.drop(F.relu(x))
        x = self.sconv0(x)
        x = self.sconv1(x)
        o1c, o1l = self.out1(x)
        x = self.sconv2(x)
        o2c, o2l = self.out2(x)
        x = self.sconv3(x)
        o3c, o3l = self.out3(x)
        return [torch.cat([o1c, o2c, o3c], dim=1), torch.cat([o1l, o2l, o3l], dim=1)]


# ---- the lesson's loss ----
def intersect(box_a, box_b):
    max_xy = torch.min(box_a[:, None, 2:], box_b[None, :, 2:])
    min_xy = torch.max(box_a[:, None, :2], box_b[None, :, :2])
    inter = torch.clamp((max_xy - min_xy), min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def box_sz(b): return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))


def jaccard(box_a, box_b):
    inter = intersect(box_a, box_b)
    union = box_sz(box_a).unsqueeze(1) + box_sz(box_b).unsqueeze(0) - inter
    return inter / union


def focal_loss(pred, targ):
    t = torch.eye(n_classes + 1)[targ][:, :-1].contiguous()
    x = pred[:, :-1]
    alpha, gamma = 0.25, 2.
    p = x.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * (1 - pt).pow(gamma)
    return F.binary_cross_entropy_with_logits(x, t, w.detach(), reduction='sum') / n_classes


def actn_to_bb(actn):
    actn_bbs = torch.tanh(actn)
    actn_centers = (actn_bbs[:, :2] / 2 * grid_sizes) + anchors[:, :2]
    actn_hw = (actn_bbs[:, 2:] / 2 + 1) * anchors[:, 2:]
    return hw2corners(actn_centers, actn_hw)


def map_to_ground_truth(overlaps):
    prior_overlap, prior_idx = overlaps.max(1)
    gt_overlap, gt_idx = overlaps.max(0)
    gt_overlap[prior_idx] = 1.99
    for i, o in enumerate(prior_idx): gt_idx[o] = i
    return gt_overlap, gt_idx


def ssd_1_loss(b_c, b_bb, bbox, clas):
    a_ic = actn_to_bb(b_bb)
    overlaps = jaccard(bbox.data, anchor_cnr.data)
    gt_overlap, gt_idx = map_to_ground_truth(overlaps)
    gt_clas = clas[gt_idx]
    pos = gt_overlap > 0.4
    pos_idx = torch.nonzero(pos)[:, 0]
    gt_clas[~pos] = n_classes
    gt_bbox = bbox[gt_idx]
    loc_loss = ((a_ic[pos_idx] - gt_bbox[pos_idx]).abs()).mean()
    return loc_loss, focal_loss(b_c, gt_clas)


def ssd_loss(pred, boxes, classes):
    total = 0.
    for b_c, b_bb, bbox, clas in zip(*pred, boxes, classes):
        loc_loss, clas_loss = ssd_1_loss(b_c, b_bb, bbox, clas)
        total = total + loc_loss + clas_loss
    return total


# ---- the work: the same objects as the Rust side ----
def objects(image):
    """3 boxes in 0..1 units and their classes, a formula of the image index."""
    boxes, classes = [], []
    for j in range(3):
        top = ((image * 7 + j * 3) % 10) / 20
        left = ((image * 3 + j * 7) % 10) / 20
        h = 0.2 + ((image + j) % 4) / 10
        w = 0.2 + ((image * 2 + j) % 4) / 10
        boxes.append([top, left, top + h, left + w])
        classes.append((image * 3 + j) % n_classes)
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(classes)


body = Lite0Body()
ssd_head = SSD_MultiHead(k, -4.)
model = nn.Sequential(body, ssd_head)
x = torch.randn(bs, 3, size, size)
targets = [objects(i) for i in range(bs)]
boxes, classes = [t[0] for t in targets], [t[1] for t in targets]


def run(name, params, train_body):
    opt = torch.optim.Adam(params, 1e-3)
    model.train()
    body.train(train_body)
    for p in body.parameters(): p.requires_grad_(train_body)
    ts = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        loss = ssd_loss(model(x), boxes, classes)
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t)
    med = sorted(ts[1:])[len(ts[1:]) // 2]
    print(f"{name:24s} bs={bs} median step {med*1000:8.1f} ms  {bs/med:7.1f} img/s")


run("frozen body (head only)", ssd_head.parameters(), False)
run("full fine-tune", model.parameters(), True)
with torch.no_grad():
    model.eval(); t = time.perf_counter(); model(x); dt = time.perf_counter() - t
print(f"{'inference':24s} bs={bs} {dt*1000:8.1f} ms  {bs/dt:7.1f} img/s")
