"""PyTorch inference of the lesson's bbox model on EfficientNet-Lite0, the peer of
`cargo xtask bench predict`: decode (OpenCV) -> squash to 224 (INTER_AREA, as the
lesson's PyTorch reference does) -> ImageNet normalise in a DataLoader with WORKERS
processes, then the model in eval mode under torch.inference_mode(), batch BATCH.

Usage: peer_predict.py SHARED_BENCH_DIR IMG_LIST_JSON BATCH THREADS WORKERS

The network is ../shared/bench/ref_lesson.py's Lite0 body and bbox head; its weights
are random (speed does not depend on their values). Prints
`predict lite0 bbox bs=B: X img/s` for the whole run, decoding included.
"""
import json, os, sys, time

shared, list_file, batch, threads, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, shared)
import cv2, numpy as np, torch, torch.nn as nn
from torch.utils.data import Dataset, DataLoader
from ref_lesson import Lite0Body, head

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SZ = 224


class Images(Dataset):
    def __init__(self, files): self.files = files
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        im = cv2.imread(self.files[i], cv2.IMREAD_COLOR)
        h, w = im.shape[:2]
        im = cv2.resize(im, (SZ, SZ), interpolation=cv2.INTER_AREA)
        x = (cv2.cvtColor(im, cv2.COLOR_BGR2RGB).astype(np.float32) / 255 - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.tensor([h, w])


def main():
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    files = json.load(open(list_file))
    model = nn.Sequential(Lite0Body(), head("bbox")).eval()
    loader = DataLoader(Images(files), batch_size=batch, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    n = 0
    boxes = []
    with torch.inference_mode():
        for x, sizes in loader:
            out = model(x)
            scale = sizes.repeat(1, 2).float() / SZ  # (h, w, h, w): back to original pixels
            boxes.append(out * scale)
            n += x.shape[0]
    seconds = time.perf_counter() - start
    print(f"predict lite0 bbox bs={batch}: {n / seconds:.1f} img/s ({n} images in {seconds:.2f} s)")


if __name__ == "__main__":
    main()
