#!/usr/bin/env python3
"""Generate the ConvNeXt parity fixture used by the Rust tests of `model-core`.

The fixture is a tiny, randomly initialised Hugging Face
`ConvNextForImageClassification` (4 stages, hidden sizes 8/16/24/32, depths
1/1/2/1, 7 made-up labels) whose every parameter has been perturbed away from
its "neutral" initial value, plus one synthetic 384x384 test image and the
numbers transformers computes for it.  A Rust loader that skips, transposes or
mis-maps any parameter gives different numbers (conv/linear weights are rescaled
to std 1/sqrt(fan_in) so that every parameter matters at the 1e-4 tolerance; see
`perturb`).

Rerun (CPU only, no network needed, nothing is downloaded):

    /root/pyref/bin/python scripts/make_hf_fixture.py \
        --out model-core/tests/fixtures/convnext-random

(any Python with torch, transformers, safetensors, pillow and numpy works; the
versions used are recorded in expected.json).  Everything is seeded, so a rerun
with the same library versions rewrites the same weights and image; the
computed numbers may move in the last float32 bits at most.

Files written into --out:

    config.json               ConvNextConfig (save_pretrained)
    model.safetensors         weights (save_pretrained, safe_serialization=True)
    pytorch_model.bin         the same state dict, via torch.save
    preprocessor_config.json  ConvNextImageProcessor (size 384, ImageNet stats)
    input.png                 deterministic 384x384 RGB test image
    expected.json             transformers' outputs and bookkeeping (see below)

expected.json holds: library versions, the logits, the pooled output (after
the final LayerNorm), statistics and the first values of the last stage's
feature map, the first preprocessed pixel values, parameter counts for this
model and for a locally built convnext-base config, and every state-dict key
with its shape.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextImageProcessor,
    ConvNextModel,
)

SEED = 20240607
IMAGE_SIZE = 384
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
LABELS = [
    "tabby cat",
    "kimono",
    "paisley scarf",
    "denim jacket",
    "striped sock",
    "velvet cushion",
    "rain poncho",
]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def small_config() -> ConvNextConfig:
    id2label = {i: name for i, name in enumerate(LABELS)}
    return ConvNextConfig(
        num_channels=3,
        patch_size=4,
        num_stages=4,
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 2, 1],
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        layer_scale_init_value=1e-6,
        drop_path_rate=0.0,
        image_size=IMAGE_SIZE,
        num_labels=len(LABELS),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )


@torch.no_grad()
def perturb(model: torch.nn.Module, gen: torch.Generator, init_std: float) -> None:
    """Move every parameter off its initial value.

    - layer-scale vectors (init 1e-6): uniform(0.5, 1.5)
    - every LayerNorm: weight 1 + 0.3 * randn, bias 0.1 * randn
    - conv / linear: biases 0.1 * randn; weights keep their seeded random draw but are
      rescaled from transformers' std (initializer_range = 0.02) to std 1/sqrt(fan_in).

    The rescale matters: at std 0.02 each residual branch adds only ~0.3% to the stream and
    the logits are ~0.1, so resetting e.g. a stage-0 LayerNorm bias moved the logits by about
    1e-5 -- below the 1e-4 test tolerance.  With 1/sqrt(fan_in) the logits are O(1) and
    resetting any single parameter tensor to a neutral value moves them by > 5e-2
    (check with --sensitivity).
    """
    seen = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("LayerNorm")
        is_affine = isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
        for pname, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if "layer_scale" in pname:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif is_norm and pname == "weight":
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif is_norm and pname == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif is_affine and pname == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif is_affine and pname == "weight":
                # keep the seeded random draw, rescaled from std 0.02 to std 1/sqrt(fan_in)
                fan_in = p[0].numel()
                p.mul_((1.0 / fan_in**0.5) / init_std)
            else:
                raise RuntimeError(f"no perturbation rule for parameter {full}")
            seen.add(full)
    missing = {n for n, _ in model.named_parameters()} - seen
    if missing:
        raise RuntimeError(f"parameters not visited: {sorted(missing)}")


def make_image(seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """A photo-like uint8 HxWx3 image: gradients, shapes, soft blobs, stripes, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    img = np.empty((size, size, 3), dtype=np.float64)
    # smooth background: three different gradients
    img[..., 0] = 40 + 150 * xx
    img[..., 1] = 60 + 120 * yy
    img[..., 2] = 200 - 140 * np.hypot(xx - 0.3, yy - 0.7)
    # soft Gaussian blobs
    for _ in range(5):
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        r = rng.uniform(0.04, 0.15)
        colour = rng.uniform(-90, 90, size=3)
        w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += w[..., None] * colour
    # hard-edged shapes: two discs and a rectangle
    for cx, cy, r, colour in [(0.25, 0.3, 0.12, (230, 210, 40)), (0.7, 0.65, 0.09, (20, 30, 120))]:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img[mask] = colour
    rect = (xx > 0.55) & (xx < 0.9) & (yy > 0.12) & (yy < 0.3)
    img[rect] = (180, 40, 60)
    # a band of diagonal stripes (texture)
    band = (yy > 0.8) & (yy < 0.95)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) * 24)
    img[band] = img[band] * 0.5 + (stripes[band, None] * np.array([200.0, 180.0, 160.0])) * 0.5
    # mild sensor noise
    img += rng.normal(0.0, 2.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().reshape(-1).to(torch.float64).tolist()]


@torch.no_grad()
def sensitivity(model: torch.nn.Module, pixel_values: torch.Tensor, ref_logits: torch.Tensor) -> list[tuple[str, float]]:
    """For each parameter, the max |change| of the logits when that tensor is reset to a
    "neutral" value a careless loader might leave behind: 1 for LayerNorm weights, 1e-6 for
    layer scales, 0 for everything else."""
    out = []
    for name, p in model.named_parameters():
        saved = p.detach().clone()
        if "layer_scale" in name:
            p.fill_(1e-6)
        elif "norm" in name and name.endswith("weight") or "downsampling_layer.0.weight" in name:
            p.fill_(1.0)
        else:
            p.zero_()
        logits = model(pixel_values=pixel_values).logits
        p.copy_(saved)
        out.append((name, float((logits - ref_logits).abs().max())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="fixture directory to (over)write")
    ap.add_argument("--sensitivity", action="store_true",
                    help="also print how much the logits move when each parameter tensor is reset to a neutral value")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(SEED)
    torch.set_num_threads(1)

    # --- model -----------------------------------------------------------------
    config = small_config()
    model = ConvNextForImageClassification(config).eval()
    perturb(model, torch.Generator().manual_seed(SEED + 1), config.initializer_range)
    model.save_pretrained(out, safe_serialization=True)
    torch.save(model.state_dict(), out / "pytorch_model.bin")

    # --- preprocessor --------------------------------------------------------------
    ConvNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_pct=224 / 256,
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(out)

    # --- image -------------------------------------------------------------------
    pixels = make_image(SEED + 2)
    Image.fromarray(pixels, mode="RGB").save(out / "input.png", optimize=True)
    image = Image.open(out / "input.png").convert("RGB")
    assert np.array_equal(np.asarray(image), pixels)

    # --- preprocessing, checked against a manual computation ----------------------
    processor = ConvNextImageProcessor.from_pretrained(out)
    print(f"processor class: {type(processor).__name__}")
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert tuple(pixel_values.shape) == (1, 3, IMAGE_SIZE, IMAGE_SIZE), pixel_values.shape
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64)
    std = np.asarray(IMAGENET_STD, dtype=np.float64)
    manual = ((pixels.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
    prep_diff = float(np.abs(pixel_values.to(torch.float64).numpy() - manual).max())
    print(f"preprocessing: max |processor - manual (x/255-mean)/std| = {prep_diff:.3e}")
    if prep_diff >= 1e-6:
        raise SystemExit(
            f"ConvNextImageProcessor is not an identity resize at {IMAGE_SIZE}px (max diff {prep_diff})"
        )
    # The resize alone must be an exact identity (uint8 in, uint8 out), for the default
    # (torchvision) processor and, where this transformers has it, the PIL one too.
    backends = [processor]
    if hasattr(transformers, "ConvNextImageProcessorPil"):
        backends.append(transformers.ConvNextImageProcessorPil.from_pretrained(out))
    for proc in backends:
        resized = proc(images=image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        resized = np.asarray(resized[0].permute(1, 2, 0), dtype=np.float64)
        assert np.array_equal(resized, pixels.astype(np.float64)), type(proc).__name__
        print(f"{type(proc).__name__}: resize {IMAGE_SIZE}->{IMAGE_SIZE} is an exact identity")

    # --- forward -------------------------------------------------------------------
    reloaded = ConvNextForImageClassification.from_pretrained(out).eval()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    bin_state = torch.load(out / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert bin_state.keys() == model.state_dict().keys()
    assert all(torch.equal(bin_state[k], v) for k, v in model.state_dict().items())

    with torch.no_grad():
        result = model(pixel_values=pixel_values, output_hidden_states=True)
        base = model.convnext(pixel_values=pixel_values, output_hidden_states=True)
        # float64 rerun: shows how far float32 round-off is from the 1e-4 tolerance
        model64 = ConvNextForImageClassification.from_pretrained(out).eval().double()
        logits64 = model64(pixel_values=pixel_values.double()).logits
    logits = result.logits
    features = base.last_hidden_state
    assert torch.equal(features, result.hidden_states[-1])
    pooled = base.pooler_output
    print("logits:", [f"{v:.6f}" for v in floats(logits)])
    print(f"max |logits f32 - f64| = {float((logits.double() - logits64).abs().max()):.3e}")
    print(f"features {list(features.shape)}: mean {float(features.mean()):.6f}, "
          f"abs mean {float(features.abs().mean()):.6f}")

    if args.sensitivity:
        for name, delta in sensitivity(model, pixel_values, logits):
            print(f"  resetting {name:60s} moves logits by {delta:.3e}")

    # --- convnext-base parameter counts (config built locally, nothing downloaded) --
    base_cfg = ConvNextConfig(
        num_channels=3, patch_size=4, num_stages=4,
        hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3],
        hidden_act="gelu", layer_norm_eps=1e-12, layer_scale_init_value=1e-6,
        drop_path_rate=0.0, image_size=224, num_labels=1000,
    )
    base_backbone = param_count(ConvNextModel(base_cfg))
    base_full = param_count(ConvNextForImageClassification(base_cfg))
    base_classifier = base_full - base_backbone
    assert base_classifier == 1024 * 1000 + 1000
    print(f"convnext-base: backbone {base_backbone}, classifier {base_classifier}, total {base_full}")

    expected = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": SEED,
        "image": "input.png",
        "image_size": IMAGE_SIZE,
        "logits": floats(logits[0]),
        "pooled": floats(pooled[0]),
        "features_shape": list(features.shape),
        "features_mean": float(features.to(torch.float64).mean()),
        "features_abs_mean": float(features.to(torch.float64).abs().mean()),
        "features_first": floats(features)[:16],
        "pixel_values_first": floats(pixel_values)[:8],
        "pixel_values_mean": float(pixel_values.to(torch.float64).mean()),
        "pixel_values_max_abs_diff_vs_manual": prep_diff,
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "param_count": param_count(model),
        "backbone_param_count": param_count(model.convnext),
        "convnext_base_backbone_param_count": base_backbone,
        "convnext_base_classifier_param_count": base_classifier,
        "keys": {k: list(v.shape) for k, v in model.state_dict().items()},
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"param_count {expected['param_count']}, backbone {expected['backbone_param_count']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
