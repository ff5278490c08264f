"""Feedback memory of direct feedback alignment on ResNet-18 with 1000 classes.

DFA sends the output error e (n_out values per example) straight to every layer. Three ways to
hold the feedback matrices, counted in float32 bytes for the layers that receive an error:

- **naive dense**: one B_l of shape (n_out, C_l·H_l·W_l) per layer input, the full activation of
  that layer at the given input resolution (computed from the activation shapes of a forward pass
  on the ``meta`` device: nothing of that size is allocated). The network input needs no error
  and is left out.
- **biofa (channel)**: what :func:`biofa.nn.convert` with ``feedback="dfa"`` allocates: one
  (n_out, C_l) block per convolution (broadcast over space) and a dense (n_out, n_in) block per
  Linear, concatenated in one buffer; read from the converted model itself. It does not depend on
  the input resolution.
- **forward weights**: the weights and biases of the model's convolutions and Linear layers.

Target: biofa's form needs less feedback memory than the forward weights.

Usage: ``python benchmarks/bench_dfa_memory.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _models  # noqa: E402
import _record  # noqa: E402

import biofa.nn as bnn  # noqa: E402

FLOAT32 = 4


def layer_input_shapes(model: nn.Module, size: int) -> dict[str, tuple]:
    """Per Conv/Linear layer (by name), the shape of its input for one image of ``size``² pixels."""
    meta = copy.deepcopy(model).to("meta").eval()
    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in meta.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(inp[0].shape[1:]))))
    with torch.no_grad():
        meta(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    return shapes


def forward_weight_count(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
               for p in m.parameters(recurse=False))


def measure(n_classes: int, sizes) -> dict:
    native = _models.resnet18(n_classes)
    converted = bnn.convert(native, feedback="dfa", generator=torch.Generator().manual_seed(0))
    hub = converted.fc.feedback.hub
    biofa_count = hub.matrix_all.numel()
    # the analytic channel form: n_out x (input channels of each conv + input features of the fc)
    widths = sum(m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                 for m in native.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert biofa_count == n_classes * widths, (biofa_count, n_classes * widths)
    forward = forward_weight_count(native)
    first = next(n for n, m in native.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    rows = []
    for size in sizes:
        shapes = layer_input_shapes(native, size)
        naive = sum(n_classes * torch.Size(s).numel() for name, s in shapes.items() if name != first)
        rows.append({
            "input": size, "layers": len(shapes),
            "naive_dense_bytes": naive * FLOAT32,
            "biofa_bytes": biofa_count * FLOAT32,
            "forward_weight_bytes": forward * FLOAT32,
            "biofa_over_forward": biofa_count / forward,
            "naive_over_forward": naive / forward,
            "naive_over_biofa": naive / biofa_count,
        })
    return {"model": "resnet18", "n_classes": n_classes, "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test (the same computation: it is cheap)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args(argv)
    started = _record.start()
    torch.set_num_threads(1)
    result = measure(args.classes, (224, 32))
    print(f"DFA feedback memory, ResNet-18, {args.classes} classes, float32")
    header = (f"{'input':>7} {'naive dense MB':>15} {'biofa MB':>9} {'forward W MB':>13} "
              f"{'biofa/W':>8} {'naive/W':>9} {'naive/biofa':>12} {'target':>7}")
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        ok = "yes" if row["biofa_over_forward"] < 1 else "NO"
        print(f"{row['input']:>4}^2 {row['naive_dense_bytes'] / 1e6:15.1f} {row['biofa_bytes'] / 1e6:9.2f} "
              f"{row['forward_weight_bytes'] / 1e6:13.2f} {row['biofa_over_forward']:8.3f} "
              f"{row['naive_over_forward']:9.1f} {row['naive_over_biofa']:12.1f} {ok:>7}")
    return _record.write(args.json, result, started)


if __name__ == "__main__":
    main()
