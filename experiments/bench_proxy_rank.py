"""Does the cheap proxy rank candidates as a longer training does? (issue 11, item 2)

The default run trains every candidate with recipe=proxy (a few epochs at a fraction of the
candidate's resolution, a capped number of batches an epoch). This trains the first N of
experiments/bench_data_signal.py's random tier candidates (seed 0) twice: with the default run's
proxy, and with a longer reference training (REFERENCE: more epochs at the candidate's own
resolution), and reports the Spearman and Kendall rank correlations of their best validation top-1
(target: Spearman >= 0.7 on >= 12 candidates), with a bootstrap interval over candidates.

Trainings are shared with bench_data_signal (same cache, same directories: a proxy training that
one of them ran is not run again) and resume when killed. Writes
experiments/results/proxy_rank.{json,md,png}.

    nice -n 10 python experiments/bench_proxy_rank.py --dataset fashion_mnist
    python experiments/bench_proxy_rank.py --name proxy_rank_6_epochs recipe.epochs=6  # a variant
    python experiments/bench_proxy_rank.py --dataset fashion_mnist --report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_signal import DATASETS, ROOT, recipe_words, train  # noqa: E402

from gpunet.console import setup as setup_console  # noqa: E402
from gpunet.files import save_figure, write_json, write_text  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
REFERENCE = ["recipe.epochs=10", "recipe.resolution_scale=1.0"]  # the proxy before it was cut
TARGET = 0.7
BOOTSTRAP = 2000


def bootstrap_spearman(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of Spearman's rho over candidates resampled with replacement."""
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(a), len(a))
        if len(set(a[idx])) > 1 and len(set(b[idx])) > 1:
            rhos.append(spearmanr(a[idx], b[idx]).statistic)
    return float(np.percentile(rhos, 5)), float(np.percentile(rhos, 95))


def report(dataset: str, pairs: list[tuple[dict, dict]], proxy_extra: list[str], name: str) -> None:
    proxy = np.array([p["best_top1"] for p, _ in pairs])
    ref = np.array([r["best_top1"] for _, r in pairs])
    rho, tau = spearmanr(proxy, ref).statistic, kendalltau(proxy, ref).statistic
    low, high = bootstrap_spearman(proxy, ref)
    best_ref = int(np.argmax(ref))
    out = {"dataset": dataset, "candidates": len(pairs), "spearman": float(rho), "kendall": float(tau),
           "spearman_90ci": [low, high], "target": TARGET,
           "proxy": recipe_words(proxy_extra), "reference": recipe_words(REFERENCE),
           "proxy_seconds_median": float(np.median([p["seconds"] for p, _ in pairs])),
           "reference_seconds_median": float(np.median([r["seconds"] for _, r in pairs])),
           "reference_best_candidate_rank_by_proxy": int((proxy > proxy[best_ref]).sum()) + 1,
           "runs": [{"candidate": p["candidate"], "resolution": p["resolution"],
                     "estimated_ms": p["estimated_ms"], "proxy_top1": p["best_top1"],
                     "reference_top1": r["best_top1"], "proxy_s": p["seconds"], "reference_s": r["seconds"]}
                    for p, r in pairs]}
    write_json(RESULTS / f"{name}.json", out)
    rows = [f"| {x['candidate']} | {x['resolution']} | {x['estimated_ms']:.3f} | {x['proxy_top1']:.4f} | "
            f"{x['reference_top1']:.4f} | {x['proxy_s']:.0f} | {x['reference_s']:.0f} |" for x in out["runs"]]
    verdict = "meets" if rho >= TARGET else "misses"
    whose = "" if proxy_extra else " (the default run's)"
    text = "\n".join([
        "# Proxy ranking vs a longer training (issue 11, item 2)", "",
        f"Data {dataset}; the first {len(pairs)} of bench_data_signal's random candidates of the default "
        "tier (search_space=cpu, tier=1ms), seed 0, no early stopping, 1 torch thread per training.", "",
        f"- proxy{whose}: {out['proxy']}; median {out['proxy_seconds_median']:.0f} s a training",
        f"- reference: {out['reference']}; median {out['reference_seconds_median']:.0f} s a training", "",
        f"**Spearman {rho:.3f}** (90% bootstrap interval over candidates {low:.2f} to {high:.2f}), "
        f"Kendall {tau:.3f}: {verdict} the target of {TARGET}. The reference's best candidate is "
        f"number {out['reference_best_candidate_rank_by_proxy']} by the proxy.", "",
        "| candidate | resolution | estimated ms | proxy top-1 | reference top-1 | proxy s | reference s |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Produced by `python experiments/bench_proxy_rank.py` (see its docstring).", ""])
    write_text(RESULTS / f"{name}.md", text)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.scatter(proxy, ref)
    for p, _ in pairs:
        ax.annotate(str(p["candidate"]), (p["best_top1"], _["best_top1"]), fontsize=7,
                    xytext=(3, 2), textcoords="offset points")
    ax.set(xlabel="proxy best val top-1" + (f" ({' '.join(proxy_extra)})" if proxy_extra else
                                            " (default run's recipe)"), ylabel="reference best val top-1",
           title=f"{dataset}: Spearman {rho:.2f} over {len(pairs)} tier candidates")
    fig.tight_layout()
    save_figure(fig, RESULTS / f"{name}.png")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist", choices=list(DATASETS))
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_data_signal",
                        help="the trainings' directories and cached results (shared with bench_data_signal)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--report", action="store_true", help="only report the pairs that finished")
    parser.add_argument("--name", default="proxy_rank", help="results file name (without suffix)")
    parser.add_argument("proxy_overrides", nargs="*",
                        help="overrides of the proxy training (none: the default run's proxy)")
    args = parser.parse_args()
    setup_console()
    torch.set_num_threads(args.threads)
    # references first: bench_data_signal, run beside this, trains the same proxy runs meanwhile
    refs = [train(args.dataset, c, 0, args.work, REFERENCE, args.report) for c in range(args.candidates)]
    proxies = [train(args.dataset, c, 0, args.work, args.proxy_overrides, args.report)
               for c in range(args.candidates)]
    pairs = list(zip(proxies, refs))
    pairs = [(p, r) for p, r in pairs if p and r]
    report(args.dataset, pairs, args.proxy_overrides, args.name)


if __name__ == "__main__":
    main()
