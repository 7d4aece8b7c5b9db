"""The garment network in PyTorch (timm's ConvNeXt plus heads shaped like model-core's),
timed on the same shapes as `trainer bench`, so the two can be compared on one machine.

Usage:
    python3 scripts/torch_reference.py --backbone convnext_base --image-size 384 \
        --batch-size 4 [--train] [--device cuda] [--seconds 10] [--json]

Prints one JSON line per measurement with the keys of `trainer bench --json`
(backbone, image_size, batch_size, device, mode, img_per_s, peak_rss_bytes / peak_gpu_bytes).
Needs torch and timm; random weights (nothing is downloaded).
"""

import argparse
import json
import resource
import time

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

# Men Tshirts: the classes of its five attributes, as in model-core's taxonomy.
MEN_TSHIRTS_CLASSES = [4, 2, 2, 3, 2]


class Head(nn.Module):
    """One attribute head, the same computation as model-core's AttributeHead with the
    shared spatial gate: grouped 3x3 convs -> channel mean -> sigmoid gate; squeeze and
    excitation; pooled MLP classifier with LayerNorm, GELU and dropout."""

    def __init__(self, dim, classes, groups=32, reduction=4):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=groups)
        self.fc1 = nn.Linear(dim, dim // reduction)
        self.fc2 = nn.Linear(dim // reduction, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Dropout(0.2),
            nn.Linear(2 * dim, dim), nn.LayerNorm(dim), nn.GELU(), nn.Dropout(0.1),
            nn.Linear(dim, classes),
        )

    def forward(self, x):
        gate = torch.sigmoid(self.conv2(F.gelu(self.conv1(x))).mean(1, keepdim=True))
        x = x * gate
        w = torch.sigmoid(self.fc2(F.gelu(self.fc1(x.mean((2, 3))))))
        x = x * w[:, :, None, None]
        return self.mlp(x.mean((2, 3))), gate[:, 0]


class GarmentNet(nn.Module):
    def __init__(self, backbone, head_dim, classes):
        super().__init__()
        if backbone == "default-small":
            # The trainer's default-job network (`--backbone default-small`).
            self.backbone = timm.models.convnext.ConvNeXt(
                depths=(1, 1, 2, 1), dims=(24, 48, 96, 192), num_classes=0, global_pool="")
        else:
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="")
        width = self.backbone.num_features
        self.feature = nn.Sequential(nn.Conv2d(width, head_dim, 1), nn.GELU(), nn.Dropout(0.1))
        self.heads = nn.ModuleList(Head(head_dim, c) for c in classes)

    def forward(self, x):
        # timm's forward_features ends with the backbone's norm (identity for ConvNeXt
        # with global_pool="" and num_classes=0 keeps norm_pre as identity).
        f = self.feature(self.backbone.forward_features(x))
        return [h(f)[0] for h in self.heads]


def measure(args):
    device = torch.device(args.device)
    model = GarmentNet(args.backbone, args.head_dim, MEN_TSHIRTS_CLASSES).to(device)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    targets = [torch.randint(0, c, (args.batch_size,), device=device) for c in MEN_TSHIRTS_CLASSES]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(l, t) for l, t in zip(model(x), targets))
            loss.backward()
            opt.step()
    else:
        model.eval()

        @torch.no_grad()
        def step():
            model(x)

    for _ in range(args.warmup):
        step()
    sync()
    iterations, started = 0, time.perf_counter()
    while True:
        step()
        iterations += 1
        sync()
        elapsed = time.perf_counter() - started
        if elapsed >= args.seconds and iterations >= 3:
            break
    result = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": device.type,
        "mode": "train" if args.train else "inference",
        "img_per_s": iterations * args.batch_size / elapsed,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "iterations": iterations,
        "parameters": sum(p.numel() for p in model.parameters()),
        "framework": f"torch {torch.__version__}",
    }
    if device.type == "cuda":
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="convnext_base")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=512)
    p.add_argument("--train", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    print(json.dumps(measure(args)), flush=True)


if __name__ == "__main__":
    main()
