"""How often tune-compare's verdict claims a difference between two studies of the same recipe (false
positives, promised <= 5 %), and how often it finds a known one (power): on simulated final models.

Simulated studies (fixed before looking at any result). A test set of N images, each with a difficulty
z ~ N(0, 1) that every model sees; a final model (one seed) has a skill b and per-image noise e ~ N(0, 1), and
gets image i right when z_i + e_i + b > 0. Its accuracy is Phi(b / sqrt(2)). A recipe's seeds draw b ~ N(mu, tau)
with mu for 0.90 accuracy and tau for a seed-to-seed s.d. of accuracy of 0.015 (issue 23's example); two studies
of one recipe share mu, a "known difference" pair has the second study 0.02 accuracy higher. Each pair gets a
new test set and new seeds, and is compared by ``search.report._stats.paired_difference`` — the verdict's own
method — on test accuracy, at the 5 % level (one comparison, so Holm's adjustment does not enter).

Printed: for 2, 3 and 5 seeds per study (``--seed-counts``), the share of same-recipe pairs whose difference was
claimed, with its Monte Carlo standard error sqrt(p (1 - p) / pairs); and the share of known-difference pairs
claimed (power).
ratio = the worst false-positive rate over the seed counts (target <= 0.05 within its Monte Carlo error). The
verdict's previous method (until 2026-12-03) is run on the same pairs beside it, for the record.

The bootstrap of the test images runs ``--resamples`` times per pair (default 200; tune-compare uses 2,000): it
only estimates the images' part of the standard error, which 200 resamples give to within about 5 %, and 1,500
pairs at 2,000 would take over an hour on 2 cores. Pairs: 400 same-recipe and 100 known-difference pairs per
seed count (--quick: 40 and 20 on 2,000 images).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import emit, parser  # noqa: E402

ACCURACY = 0.90  # the recipe's mean test accuracy
SEED_SD = 0.015  # s.d. of a seed's test accuracy around it (issue 23's example)
KNOWN_DIFFERENCE = 0.02  # the "better recipe" pairs: this much higher accuracy
SEED_COUNTS = (2, 3, 5)
NOISE_SD = 1.0  # per-image noise of one model: models disagree on some images


def _skill(accuracy: float) -> float:
    """b such that Phi(b / sqrt(1 + NOISE_SD^2)) = accuracy."""
    from scipy import stats

    return float(stats.norm.ppf(accuracy) * math.sqrt(1 + NOISE_SD**2))


def _tau() -> float:
    """The s.d. of b that gives a seed-to-seed s.d. of accuracy of SEED_SD (delta method)."""
    from scipy import stats

    scale = math.sqrt(1 + NOISE_SD**2)
    return SEED_SD * scale / float(stats.norm.pdf(stats.norm.ppf(ACCURACY)))


def study(rng: np.random.Generator, z: np.ndarray, seeds: int, accuracy: float) -> Any:
    """One study's final models on the test set ``z``: SeedPredictions with class 0 the truth."""
    from search.report._stats import SeedPredictions

    b = rng.normal(_skill(accuracy), _tau(), size=(seeds, 1))
    right = z[None, :] + rng.normal(0.0, NOISE_SD, size=(seeds, len(z))) + b > 0
    pred = np.where(right, 0, 1)
    probs = np.stack([right, ~right], axis=2).astype(np.float64)
    return SeedPredictions(np.zeros(len(z), dtype=np.int64), pred, probs)


def previous_method(a: Any, b: Any, resamples: int, seed: int) -> bool:
    """The verdict's method until 2026-12-03, for the record on the same pairs: a two-level percentile bootstrap
    (images drawn once for both studies, each study's S seeds drawn with replacement from its S); a difference was
    claimed when the 95 % interval left 0 out."""
    from search.report._stats import seed_scorers

    n = len(a.labels)
    fa, fb = seed_scorers(a, "accuracy"), seed_scorers(b, "accuracy")
    rng = np.random.default_rng(seed)
    d = np.empty(resamples)
    for i in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        sa, sb = rng.integers(0, a.seeds, a.seeds), rng.integers(0, b.seeds, b.seeds)
        d[i] = np.array([f(w) for f in fa])[sa].mean() - np.array([f(w) for f in fb])[sb].mean()
    lo, hi = np.quantile(d, [0.025, 0.975])
    return not lo <= 0 <= hi


def claimed(
    rng: np.random.Generator, images: int, seeds: int, difference: float, resamples: int, i: int
) -> tuple[bool, bool]:
    """Whether the verdict claims a difference between two simulated studies; and the previous method's answer."""
    from search.report._stats import paired_difference

    z = rng.normal(size=images)
    a, b = study(rng, z, seeds, ACCURACY), study(rng, z, seeds, ACCURACY + difference)
    r = paired_difference(b, a, "accuracy", n_boot=resamples, seed=i)
    return bool(r["p_value"] < 0.05), previous_method(b, a, resamples, i)


def rate(hits: list[bool]) -> dict[str, float]:
    p = statistics.fmean(hits)
    return {"rate": p, "mc_se": math.sqrt(p * (1 - p) / len(hits)), "pairs": len(hits)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--pairs", type=int, help="pairs per seed count (default 400; --quick 40)")
    p.add_argument("--images", type=int, help="test images (default 10,000; --quick 2,000)")
    p.add_argument("--power-pairs", type=int, help="known-difference pairs per seed count (default 100; --quick 20)")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per pair (default 200)")
    p.add_argument(
        "--seed-counts",
        default=",".join(map(str, SEED_COUNTS)),
        help="seeds per study, comma-separated (default 2,3,5); one count with more --pairs narrows its MC error",
    )
    args = p.parse_args()
    try:
        counts = sorted({int(c) for c in args.seed_counts.split(",")})
    except ValueError:
        p.error(f"--seed-counts: comma-separated whole numbers, got {args.seed_counts!r}")
    if counts[0] < 1:
        p.error(f"--seed-counts: each count >= 1 must hold, got {args.seed_counts!r}")
    pairs = args.pairs or (40 if args.quick else 400)
    images = args.images or (2000 if args.quick else 10000)
    power_pairs = args.power_pairs or (20 if args.quick else 100)
    rng = np.random.default_rng(0)
    false_pos, power, before_fp, before_power = {}, {}, {}, {}
    for s in counts:
        same = [claimed(rng, images, s, 0.0, args.resamples, i) for i in range(pairs)]
        known = [claimed(rng, images, s, KNOWN_DIFFERENCE, args.resamples, i) for i in range(power_pairs)]
        false_pos[s], before_fp[s] = rate([c for c, _ in same]), rate([c for _, c in same])
        power[s], before_power[s] = rate([c for c, _ in known]), rate([c for _, c in known])
        print(
            f"{s} seeds: same recipe claimed different in {false_pos[s]['rate']:.3f} (± {false_pos[s]['mc_se']:.3f}) "
            f"of {pairs} pairs; a {KNOWN_DIFFERENCE} difference found in {power[s]['rate']:.3f} of {power_pairs} "
            f"(± {power[s]['mc_se']:.3f}). Previous method, same pairs: {before_fp[s]['rate']:.3f} "
            f"(± {before_fp[s]['mc_se']:.3f}) and {before_power[s]['rate']:.3f}",
            flush=True,
        )
    worst = max(false_pos, key=lambda s: false_pos[s]["rate"])
    emit(
        "verdict_calibration",
        {
            "images": images,
            "seed_counts": counts,  # the worst of these is the ratio
            "pairs_per_seed_count": pairs,
            "power_pairs_per_seed_count": power_pairs,
            "resamples": args.resamples,
            "seed_sd": SEED_SD,
            "known_difference": KNOWN_DIFFERENCE,
            "false_positive": {str(s): v for s, v in false_pos.items()},
            "power": {str(s): v for s, v in power.items()},
            "previous_method": {
                "false_positive": {str(s): v for s, v in before_fp.items()},
                "power": {str(s): v for s, v in before_power.items()},
            },
            "ratio": false_pos[worst]["rate"],
            "ratio_mc_se": false_pos[worst]["mc_se"],
            "target": "<= 0.05 (within its Monte Carlo error)",
        },
        args.quick,
    )


if __name__ == "__main__":
    main()
