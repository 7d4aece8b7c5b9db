#!/usr/bin/env python3
"""What the default job's network learns in PyTorch on the same synthetic data.

A reference for the trainer's learning speed, not part of the product: timm's ConvNeXt
with the default job's depths and widths (1,1,2,1 / 24..192), one small MLP head per
attribute on the pooled features, summed cross-entropy over the labelled cells, AdamW,
gradient clipping at norm 1, batch 32. The first tenth of the category's rows is the
validation set; the score is the competition's (harmonic mean of micro and macro F1 per
attribute, averaged).

    python3 scripts/torch_learning_curve.py DATA_DIR CATEGORY EPOCHS LR [FLIP]

Needs torch, timm, numpy and Pillow.
"""
import csv
import sys
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def main():
    data, category = sys.argv[1], sys.argv[2]
    epochs, lr = int(sys.argv[3]), float(sys.argv[4])
    flip = len(sys.argv) > 5 and sys.argv[5] == "1"
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rows = [r for r in csv.DictReader(open(f"{data}/train.csv")) if r["Category"] == category]
    n_attr = int(rows[0]["len"])
    cells = [[r[f"attr_{a + 1}"] for r in rows] for a in range(n_attr)]
    classes = [sorted({v for v in col if v}) for col in cells]
    pixels = np.stack([
        np.asarray(Image.open(f"{data}/train_images/{int(r['id']):06d}.jpg").convert("RGB"),
                   dtype=np.float32) / 255
        for r in rows
    ])
    x = torch.tensor(pixels).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = (x - mean) / std
    y = torch.tensor([[classes[a].index(cells[a][i]) if cells[a][i] else -1
                       for a in range(n_attr)] for i in range(len(rows))])
    n_val = len(rows) // 10
    x_val, y_val, x_train, y_train = x[:n_val], y[:n_val], x[n_val:], y[n_val:]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.models.convnext.ConvNeXt(
                depths=(1, 1, 2, 1), dims=(24, 48, 96, 192), num_classes=0,
                drop_path_rate=0.05)
            self.heads = nn.ModuleList(
                nn.Sequential(nn.Linear(192, 64), nn.GELU(), nn.Linear(64, len(c)))
                for c in classes)

        def forward(self, images):
            features = self.backbone(images)
            return [h(features) for h in self.heads]

    net = Net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)

    def score():
        net.eval()
        with torch.no_grad():
            out = net(x_val)
        harmonics = []
        for a in range(n_attr):
            truth, pred = y_val[:, a], out[a].argmax(1)
            keep = truth >= 0
            truth, pred = truth[keep], pred[keep]
            micro = (truth == pred).float().mean().item()
            f1 = []
            for c in set(truth.tolist()) | set(pred.tolist()):
                tp = ((pred == c) & (truth == c)).sum().item()
                wrong = ((pred == c) != (truth == c)).sum().item()
                f1.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
            macro = float(np.mean(f1))
            harmonics.append(2 * micro * macro / (micro + macro) if micro + macro else 0.0)
        net.train()
        return float(np.mean(harmonics))

    for epoch in range(epochs):
        started, total, steps = time.time(), 0.0, 0
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), 32):
            batch = order[i:i + 32]
            images = x_train[batch]
            if flip:
                flipped = torch.rand(len(images)) < 0.5
                images = torch.where(flipped[:, None, None, None], images.flip(3), images)
            out = net(images)
            loss = 0.0
            for a in range(n_attr):
                labels = y_train[batch, a]
                keep = labels >= 0
                if keep.any():
                    loss = loss + F.cross_entropy(out[a][keep], labels[keep])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        rate = len(x_train) / (time.time() - started)
        print(f"epoch {epoch + 1}: loss {total / steps:.3f} validation {score():.4f} "
              f"{rate:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
