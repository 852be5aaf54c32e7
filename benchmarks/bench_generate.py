"""Seconds per generated PXD background event, per model, CPU threads and execution
variant, with the digit conversion timed separately.

Full-size models (the basf2 architectures) with random weights: speed does not depend on
the weight values, but the digit conversion depends on the occupancy, so the output
layer's bias is shifted until ~3% of the pixels fire (real PXD background is below that),
judged on pre-tanh values. Random IEA-GAN weights make each image nearly all-on or all-off
(its class-conditional gains are large), so its digit count per event varies from 0 to
millions between runs; the table lists the digits per event the conversion was timed on.
Variants:

  basf2      torch.no_grad, NCHW, one event (40 images) per forward  -- what basf2 does
  inference  torch.inference_mode instead of no_grad
  chlast     inference_mode + channels_last memory format
  batch2     inference_mode + the better layout, two events per forward

``--images K`` generates only K of the 40 images of each event and scales the time by
40/K (the images are independent once the latents, and for IEA-GAN the event-level
conditioning, are drawn); the digit conversion always runs on full 40-image events.

Variants are timed interleaved (``--reps`` rounds over all variants) so that load from
other processes hits them alike; the table shows the minimum (the least disturbed pass)
and the median. At the second and later thread counts only ``basf2`` and the variant
fastest at the first are timed.

Run: ``python benchmarks/bench_generate.py --images 4 --reps 3`` (prints a Markdown table).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pxdbg.digits import dense_to_digits  # noqa: E402
from pxdbg.models import get_model  # noqa: E402
from pxdbg.models.common import sample_latents  # noqa: E402
from pxdbg.transforms import model_to_adc  # noqa: E402


def _output_conv(name: str, model: torch.nn.Module) -> torch.nn.Module:
    """The last convolution, whose output goes through tanh."""
    return {"ieagan": lambda: model.output_layer[2], "convnet": lambda: model.features[-1],
            "resnet": lambda: model.conv}[name]()


def build(name: str, occupancy: float = 0.03) -> torch.nn.Module:
    """Full-size model with random weights, its output bias shifted so that about
    ``occupancy`` of the pixels fire (ADU >= 1; IEA-GAN: above its 7 ADU cut).

    Calibrated on the pre-tanh values (captured by a hook): random weights saturate tanh
    for most pixels (IEA-GAN), which an inversion of the tanh output could not see past.
    """
    torch.manual_seed(0)
    module = get_model(name)
    model = module.Model().eval().requires_grad_(False)
    z = torch.randn(40, module.LATENT_DIM)
    conv = _output_conv(name, model)
    captured = []
    hook = conv.register_forward_hook(lambda mod, inp, out: captured.append(out))
    with torch.inference_mode():
        # IEA-GAN images differ per sensor: calibrate on a whole event; the others on two
        if name == "ieagan":
            model(z, torch.arange(40))
        else:
            model(z[:2])
    hook.remove()
    pre = captured[0][:, 0, 3:-3].flatten()  # the cropped rows only
    # A pixel fires when the model output exceeds x_fire: ADU >= 1 needs
    # x > 2 * log(2) / log(256) - 1 = -0.75; IEA-GAN's cut keeps x > -0.26.
    x_fire = getattr(module, "MODEL_CUT", None) or -0.75
    q = torch.quantile(pre[:: max(1, pre.numel() // 1_000_000)], 1 - occupancy)
    with torch.no_grad():
        conv.bias.add_(torch.atanh(torch.tensor(x_fire)) - q)
    return model


def forward_images(name, model, z, grad_mode, images):
    """Forward + ADC conversion of the first ``images`` images of each event in z."""
    module = get_model(name)
    n = z.shape[0] // 40
    # spread over the event (sensors 0, 10, 20, 30 for 4 images): IEA-GAN's images, and so
    # the digit count the conversion is timed on, differ per sensor
    keep = (torch.arange(n * 40) % 40) % (40 // images) == 0
    keep &= (torch.arange(n * 40) % 40) < images * (40 // images)
    with grad_mode():
        if name == "ieagan":
            # the conditioning needs the whole event; the images are independent after it
            cond = model.condition(z, torch.arange(40).repeat(n))[keep]
            return model_to_adc(model.synthesize(cond)[:, 0], model_cut=module.MODEL_CUT)
        return model_to_adc(model(z[keep])[:, 0])


def time_forward(name, model, variant, images, gen):
    """Seconds per event of one timed forward pass (scaled to 40 images), and the uint8
    images it produced."""
    grad_mode = torch.no_grad if variant == "basf2" else torch.inference_mode
    per_forward = 2 if variant == "batch2" else 1
    z = sample_latents(gen, per_forward, get_model(name).LATENT_DIM, torch.device("cpu"))
    t0 = time.perf_counter()
    adc = forward_images(name, model, z, grad_mode, images)
    return (time.perf_counter() - t0) * 40 / images / per_forward, adc


def time_conversion(adc, images, reps=3):
    """Seconds per event of digit conversion, on 40-image events tiled from ``adc``."""
    ev = adc[:images].repeat(-(-40 // images), 1, 1)[:40].contiguous().numpy()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        n = len(dense_to_digits(ev))
        best = min(best, time.perf_counter() - t0)
    return best, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["convnet", "resnet", "ieagan"])
    parser.add_argument("--reps", type=int, default=3, help="timed forward passes per variant")
    parser.add_argument("--batch-layout", choices=["nchw", "chlast"], default="chlast",
                        help="memory format for the batch2 variant")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--variants", nargs="+", default=["basf2", "inference", "chlast", "batch2"])
    parser.add_argument("--images", type=int, default=40,
                        help="images per event actually generated; the time is scaled to 40 (the "
                             "images of an event are independent; use 40 for exact figures)")
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads available; {args.images} of 40 images generated per event, "
          f"{args.reps} interleaved timed passes per row")
    print("| model | threads | variant | s/event min | s/event median | digits s/event | digits share "
          "| digits/event |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        model = build(name)
        layouts = {"nchw": model,
                   "chlast": get_model(name).Model(**({"init": None} if name == "ieagan" else {})).eval()
                   .requires_grad_(False)}
        layouts["chlast"].load_state_dict(model.state_dict())
        layouts["chlast"] = layouts["chlast"].to(memory_format=torch.channels_last)
        best = None
        for threads in args.threads:
            torch.set_num_threads(threads)
            variants = args.variants if best is None else list(dict.fromkeys(["basf2", best]))
            layout_of = {v: ("chlast" if v == "chlast" or (v == "batch2" and args.batch_layout == "chlast")
                             else "nchw") for v in variants}
            gen = torch.Generator().manual_seed(1)
            for v in variants:  # warm-up: oneDNN creates its kernels per shape and layout
                time_forward(name, layouts[layout_of[v]], v, args.images, gen)
            times = {v: [] for v in variants}
            adc = None
            for _ in range(args.reps):  # interleaved, so load changes hit all variants alike
                for v in variants:
                    t, adc = time_forward(name, layouts[layout_of[v]], v, args.images, gen)
                    times[v].append(t)
            conv, digits = time_conversion(adc, args.images)
            for v in variants:
                label = f"batch2 ({layout_of[v]})" if v == "batch2" else v
                print(f"| {name} | {threads} | {label} | {min(times[v]):.2f} | {statistics.median(times[v]):.2f} "
                      f"| {conv:.3f} | {100 * conv / (min(times[v]) + conv):.2f}% | {digits} |", flush=True)
            if best is None:
                best = min(times, key=lambda v: min(times[v]))

if __name__ == "__main__":
    main()
