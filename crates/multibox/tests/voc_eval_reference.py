"""A reference for VOC detection average precision, written from the VOC
devkit's published algorithm (VOCevaldet.m and VOCap.m of the VOC 2010+
devkit, and the 11-point interpolation of the VOC 2007 devkit), for the
parity test of crates/multibox/src/map.rs. It is a separate reading of the
algorithm, not a translation of the Rust.

Per class:
  * sort the detections by confidence, best first (MATLAB's sort is stable:
    equal confidences keep their order);
  * for each detection, find the ground truth of its class and image with
    the largest overlap among those that overlap at all (inclusive pixels:
    widths are xmax - xmin + 1); if that overlap is >= the threshold: a
    difficult ground truth makes the detection "don't care", an undetected
    one a true positive (and detected from then on), a detected one a false
    positive; otherwise a false positive;
  * cumulative sums give recall tp / npos (npos: non-difficult ground
    truths) and precision tp / (tp + fp);
  * VOC 2007: mean over t in 0, 0.1, ..., 1 of max precision at recall >= t;
    VOC 2010+: area under the monotone precision envelope.

Usage: python voc_eval_reference.py INPUT.json
INPUT: {"iou_threshold": 0.5, "cases": [{"classes": C,
        "ground_truths": [{"image", "class", "bbox": [top, left, bottom, right], "difficult"}],
        "detections": [{"image", "class", "score", "bbox"}]}]}
Prints {"cases": [{"classes": [{"class", "ap_voc07", "ap_all_points"}]}]},
an AP being null for a class without non-difficult ground truth.
"""

import json
import sys

import numpy as np


def to_devkit_box(bbox):
    """[top, left, bottom, right] -> the devkit's [xmin, ymin, xmax, ymax]."""
    top, left, bottom, right = bbox
    return [left, top, right, bottom]


def best_overlap(det_box, gt_boxes):
    """(index, overlap) of the ground truth overlapping det_box most, among
    those with a positive intersection; (None, -inf) if none does."""
    ovmax, jmax = -np.inf, None
    for j, gt in enumerate(gt_boxes):
        bi = [max(det_box[0], gt[0]), max(det_box[1], gt[1]),
              min(det_box[2], gt[2]), min(det_box[3], gt[3])]
        iw = bi[2] - bi[0] + 1.0
        ih = bi[3] - bi[1] + 1.0
        if iw > 0 and ih > 0:
            ua = ((det_box[2] - det_box[0] + 1.0) * (det_box[3] - det_box[1] + 1.0)
                  + (gt[2] - gt[0] + 1.0) * (gt[3] - gt[1] + 1.0)
                  - iw * ih)
            ov = iw * ih / ua
            if ov > ovmax:
                ovmax, jmax = ov, j
    return jmax, ovmax


def average_precision_11(rec, prec):
    ap = 0.0
    for t in [k / 10 for k in range(11)]:
        above = rec >= t
        p = prec[above].max() if above.any() else 0.0
        ap = ap + p / 11.0
    return float(ap)


def average_precision_all(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[changes] - mrec[changes - 1]) * mpre[changes]))


def evaluate_class(cls, ground_truths, detections, threshold):
    gt = {}
    npos = 0
    for g in ground_truths:
        if g["class"] != cls:
            continue
        entry = gt.setdefault(g["image"], {"boxes": [], "difficult": [], "detected": []})
        entry["boxes"].append(to_devkit_box(g["bbox"]))
        entry["difficult"].append(bool(g["difficult"]))
        entry["detected"].append(False)
        npos += 0 if g["difficult"] else 1

    dets = [d for d in detections if d["class"] == cls]
    confidence = np.array([d["score"] for d in dets], dtype=np.float64)
    order = np.argsort(-confidence, kind="stable")
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for rank, index in enumerate(order):
        d = dets[index]
        entry = gt.get(d["image"])
        if entry is None:
            fp[rank] = 1
            continue
        jmax, ovmax = best_overlap(to_devkit_box(d["bbox"]), entry["boxes"])
        if ovmax >= threshold:
            if not entry["difficult"][jmax]:
                if not entry["detected"][jmax]:
                    tp[rank] = 1
                    entry["detected"][jmax] = True
                else:
                    fp[rank] = 1
            # else: a difficult object, neither true nor false positive
        else:
            fp[rank] = 1

    if npos == 0:
        return None, None
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    rec = tp / npos
    # Before the first counted detection tp + fp is 0; precision 0 there.
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return average_precision_11(rec, prec), average_precision_all(rec, prec)


def main():
    with open(sys.argv[1]) as f:
        data = json.load(f)
    threshold = data["iou_threshold"]
    out = []
    for case in data["cases"]:
        classes = []
        for cls in range(case["classes"]):
            ap11, ap_all = evaluate_class(cls, case["ground_truths"], case["detections"], threshold)
            classes.append({"class": cls, "ap_voc07": ap11, "ap_all_points": ap_all})
        out.append({"classes": classes})
    json.dump({"cases": out}, sys.stdout)


if __name__ == "__main__":
    main()
