"""Why a detector misses objects of one size: for each non-difficult object of
COCO's size class (small under 32x32 px, medium under 96x96, large from there;
the evaluate stage's buckets), the best IoU of any detection of its class (any
score) and of any other class, bucketed as found / poorly localised / confused /
nothing near. Reads a pipeline run's files (pipelines/ssd.toml's outputs).
Unlike VOC's matching, one detection may count for two objects here, so "found"
can exceed the evaluate stage's count by a little (673 against 671 of 800
large objects on the default's run).

usage: python3 scripts/analysis/missed_objects.py RUN_DIR [small|medium|large]
(RUN_DIR: the --out folder, with mbb.csv, mbb_classes.csv and predictions/.)
"""
import collections
import csv
import sys

run = sys.argv[1]
size = sys.argv[2] if len(sys.argv) > 2 else "medium"
bounds = {"small": (0, 32 * 32), "medium": (32 * 32, 96 * 96), "large": (96 * 96, float("inf"))}[size]


def rows(name):
    with open(f"{run}/{name}", newline="") as f:
        return list(csv.DictReader(f))


def numbers(text):
    v = [float(x) for x in text.split()]
    return [v[i:i + 4] for i in range(0, len(v), 4)]


def iou(a, b):
    """VOC's IoU of inclusive-pixel [top, left, bottom, right] boxes."""
    h = min(a[2], b[2]) - max(a[0], b[0]) + 1
    w = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if h <= 0 or w <= 0:
        return 0.0
    inter = h * w
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)


images = [r["fn"] for r in rows("predictions/ssd_images.csv")]
boxes = {r["fn"]: numbers(r["bbox"]) for r in rows("mbb.csv")}
classes = {r["fn"]: r["clas"].split() for r in rows("mbb_classes.csv")}
detections = collections.defaultdict(list)
for r in rows("predictions/ssd.csv"):
    detections[r["fn"]].append((r["cat"], numbers(r["bbox"])[0]))

outcomes = collections.Counter()
for image in images:
    for box, cls in zip(boxes.get(image, []), classes.get(image, [])):
        area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
        if not bounds[0] <= area < bounds[1]:
            continue
        same = max([iou(box, d) for c, d in detections[image] if c == cls], default=0.0)
        other = max([iou(box, d) for c, d in detections[image] if c != cls], default=0.0)
        if same >= 0.5:
            outcome = "found: a detection of its class at IoU >= 0.5"
        elif same >= 0.3:
            outcome = "poorly localised: its class at IoU 0.3-0.5"
        elif other >= 0.5:
            outcome = "confused: only another class at IoU >= 0.5"
        elif same >= 0.1:
            outcome = "badly localised: its class at IoU 0.1-0.3"
        else:
            outcome = "nothing near: its class under IoU 0.1"
        outcomes[outcome] += 1

total = sum(outcomes.values())
print(f"{total} {size} objects (difficult ones are in mbb_difficult.csv, not here)")
for outcome, n in outcomes.most_common():
    print(f"{n:5d} {100 * n / total:5.1f}%  {outcome}")
