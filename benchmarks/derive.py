"""Derived symmetry specs: how long tracing takes, how exact the derived symmetries are, and what augmenting a ViT
costs in the loaders, in one run.

Part 1, per model (torchvision's, weights=None, 3x32x32 inputs, and the registered ``vit`` on 1x8x8): parameters,
permutation groups, seconds to derive the spec (``torch.fx`` trace, shape propagation, the walk), and the relative
output error of a random permutation, rescale and sign flip (float64, eval mode; "-" where the spec allows none).

Part 2: a ViT row batch (the ``vit`` defaults on 3x32x32: 150k parameters), flat rows and tokens, without and with a
random permutation per sample (heads, within-head q/k and v, MLP units, the residual stream), in samples per second
and as the ratio of augmented to plain.

    python benchmarks/derive.py [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torchvision.models as tvm

from loaders.symmetry import BatchSymmetry
from loaders.tokens import Tokenizer
from zoo.architectures import get_architecture
from zoo.architectures.check import preservation_error
from zoo.architectures.derive import derive
from zoo.symmetry import SYMMETRIES

MODELS = {
    "resnet18": lambda: tvm.resnet18(num_classes=10),
    "resnet50": lambda: tvm.resnet50(num_classes=10),
    "vgg11_bn": lambda: tvm.vgg11_bn(num_classes=10),
    "mobilenet_v2": lambda: tvm.mobilenet_v2(num_classes=10),
    "VisionTransformer": lambda: tvm.VisionTransformer(image_size=32, patch_size=4, num_layers=4, num_heads=4,
                                                       hidden_dim=64, mlp_dim=128, num_classes=10),
}


def derive_table() -> list[dict]:
    """Part 1: one row per model."""
    out = []
    cases = [(name, make(), torch.randn(4, 3, 32, 32)) for name, make in MODELS.items()]
    vit = get_architecture("vit", (1, 8, 8), 10)
    cases.append(("vit (registered)", vit.module(), torch.randn(4, *vit.input_shape)))
    for name, module, x in cases:
        start = time.perf_counter()
        d = derive(module, x)
        seconds = time.perf_counter() - start
        row = {"model": name, "params": d.layout.num_params, "groups": len(d.spec.groups), "derive_s": seconds}
        for kind in SYMMETRIES:
            allowed = any(kind in g.allowed(None) for g in d.spec.groups.values())
            row[kind] = preservation_error(module, d.layout, d.spec, x, symmetries=(kind,)) if allowed else None
        out.append(row)
    return out


def _rate(fn, batch: int, seconds: float = 2.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - start)


def loader_table(batch: int = 64) -> dict:
    """Part 2: samples per second of plain and permuted ViT batches."""
    arch = get_architecture("vit", (3, 32, 32), 10)
    sym = BatchSymmetry(arch.layout, arch.symmetry)
    tok = Tokenizer(arch.layout, 64, sym)
    rows = torch.randn(batch, arch.layout.size)
    g = torch.Generator().manual_seed(0)
    codes = np.zeros(batch, dtype=np.int64)

    def draws():
        return sym.draw_batch(codes, [arch.activation], g, ("permute",))

    return {
        "params": arch.layout.num_params,
        "flat": _rate(lambda: rows.clone(), batch),
        "flat_permute": _rate(lambda: sym.apply(rows, draws()), batch),
        "tokens": _rate(lambda: tok.encode(rows), batch),
        "tokens_permute": _rate(lambda: tok.encode(rows, draws()), batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table, loader = derive_table(), loader_table()
    if args.json:
        print(json.dumps({"derive": table, "loader": loader}))
        return
    print(f"{'model':<20}{'params':>12}{'groups':>8}{'derive s':>10}{'permute':>11}{'rescale':>11}{'signflip':>11}")
    for r in table:
        errs = "".join(f"{'-' if r[k] is None else format(r[k], '.1e'):>11}" for k in SYMMETRIES)
        print(f"{r['model']:<20}{r['params']:>12,}{r['groups']:>8}{r['derive_s']:>10.3f}{errs}")
    print(f"\nViT ({loader['params']:,} parameters), samples/s, one thread:")
    for kind in ("flat", "tokens"):
        plain, moved = loader[kind], loader[f"{kind}_permute"]
        print(f"  {kind:<7} {plain:>12,.0f}   + permute {moved:>10,.0f}   ratio {moved / plain:.2f}")


if __name__ == "__main__":
    main()
