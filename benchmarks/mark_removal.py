"""Can an intervention show that a class *needs* a mark drawn over its objects (ImageNet-W's
watermark across the middle of the image)? Three ways to take away what a class's images
have in common at fixed places, measured on stored ladder audits; none is in the audit
(``benchmarks/RESULTS.md`` says why).

On each class's own images that the model answered right (the overlay phase's sample), the
share no longer called the class after:

- ``background``: subtracting the class's mean-background overlay (the audit's hijack test
  draws it over other images: objects left out of the mean, the reference classes' mean
  taken away), against subtracting each reference class's overlay instead;
- ``footprint``: filling the tenth of the pixels where that overlay is strongest with the
  reference classes' mean background, against the same footprint moved by half the image
  (four ways: the same number of pixels, of the same shape, elsewhere);
- ``all pixels``: subtracting the class's mean image minus the reference classes' mean
  image, objects *included*, against the reference classes' own.

One-sided Fisher test and Newcombe's CI on the difference of the shares, held to the
hijack bar (p < ``q``, lower end above ``min_gap``), unadjusted.

    .venv/bin/python benchmarks/mark_removal.py --data /tmp/lad/data-400 --audits /tmp/lad/d400
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from overlay_hijack import StoredAudit, stored_audits
from scipy.stats import fisher_exact

from auditor.detect.interventions import dilate, margin
from auditor.detect.overlay import mean_backgrounds, overlays, reference_classes
from auditor.detect.stats_util import newcombe

FOOTPRINT = 0.1  # the share of pixels the footprint fill replaces


@torch.no_grad()
def removals(stored: StoredAudit) -> list[dict]:
    """Per class and way of removal: lost of n own images against the reference."""
    probe = stored.sample()
    if probe is None:
        return []
    x, labels, k, neutral = probe.inputs, probe.labels, stored.k, stored.neutral()
    masks = probe.masks.bool()
    present = sorted(set(labels.tolist()))
    means = mean_backgrounds(x, dilate(masks, margin(masks)), labels, k)
    background = overlays(means, present, neutral)
    everything = overlays(mean_backgrounds(x, torch.zeros_like(masks), labels, k), present, neutral)
    net = stored.model

    def answer(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(part).argmax(1) for part in images.split(64)])

    right = answer(x) == labels
    side = x.shape[-1]
    out = []
    for c in present:
        own = x[(labels == c) & right]
        refs = reference_classes(c, present, neutral)
        fill = means[refs].mean(0)
        strength = background[c].abs().mean(0)
        footprint = strength >= strength.flatten().quantile(1 - FOOTPRINT)
        shifts = [(side // 2, 0), (0, side // 2), (side // 2, side // 2), (side // 4, -side // 4)]
        ways = {  # the images with it removed, and the same images under each control
            "background": (own - background[c], [own - background[r] for r in refs]),
            "footprint": (torch.where(footprint, fill, own),
                          [torch.where(footprint.roll(s, (0, 1)), fill, own) for s in shifts]),
            "all pixels": (own - everything[c], [own - everything[r] for r in refs]),
        }  # fmt: skip
        for way, (removed, controls) in ways.items():
            lost = int((answer(removed) != c).sum())
            reference = sum(int((answer(control) != c).sum()) for control in controls)
            n, ref_n = len(own), len(own) * len(controls)
            if n == 0 or ref_n == 0:
                continue
            p = fisher_exact([[lost, n - lost], [reference, ref_n - reference]],
                             alternative="greater").pvalue  # fmt: skip
            ci = newcombe((lost, n), (reference, ref_n), stored.config.detect.confidence)
            bar = p < stored.config.detect.q and ci[0] > stored.config.detect.min_gap
            out.append({"class": c, "way": way, "lost": lost, "n": n, "reference": reference,
                        "reference_n": ref_n, "p": p, "ci": ci, "meets_bar": bar})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--audits", type=Path, action="append", required=True)
    args = parser.parse_args()
    print(f"{'scenario':<44}{'class':>6}  {'removal':<12}{'lost':>8}{'reference':>12}{'p':>9}"
          f"{'CI95':>16}  bar")  # fmt: skip
    for data_root, audit_root in zip(args.data, args.audits, strict=True):
        for audit, data in stored_audits(data_root, audit_root):
            for r in removals(StoredAudit.read(audit, data)):
                ci = f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]"
                print(f"{data.relative_to(data_root)!s:<44}{r['class']:>6}  {r['way']:<12}"
                      f"{r['lost']:>4}/{r['n']:<3}{r['reference']:>6}/{r['reference_n']:<5}"
                      f"{r['p']:>9.2g}{ci:>16}  {'yes' if r['meets_bar'] else 'no'}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
