"""`python -m gpunet.hub`: list and query the latency-tiered model table.

  python -m gpunet.hub                         # every entry
  python -m gpunet.hub --device a100 --budget 0.6
  python -m gpunet.hub --device cpu --dataset digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpunet.errors import one_line_errors
from gpunet.hub.entries import HubEntry, hub_dir, load_hub, query, within_tier

ABOVE = "!"  # marks a latency measured above the entry's tier (its search found none within it)


def format_table(entries: list[HubEntry], device: str | None) -> str:
    header = f"{'name':34} {'tier':>7} {'dataset':>9} {'top-1 (fraction)':>16} {'res':>4}  latency (ms)"
    lines = [header, "-" * len(header)]
    for e in entries:
        lat = ", ".join(f"{d}={v:.3g}{'' if within_tier(e, d) else ABOVE}"
                        for d, v in sorted(e.latency_ms.items()) if device is None or d == device)
        top1 = "-" if e.top1 is None else f"{e.top1:.4f}"
        lines.append(f"{e.name:34} {e.tier:>7} {e.dataset:>9} {top1:>16} {e.resolution:>4}  {lat}")
    if any(ABOVE in line for line in lines[2:]):
        lines.append(f"{ABOVE}: measured above its tier's upper edge (its search's final check found "
                     "no network within it)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpunet.hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="only entries measured on this device (cpu, a100, ...)")
    parser.add_argument("--budget", type=float, help="latency budget in ms on --device")
    parser.add_argument("--dataset", help="only entries trained on this dataset")
    parser.add_argument("--dir", type=Path, default=None, help=f"hub directory (default {hub_dir()})")
    args = parser.parse_args(argv)
    if args.budget is not None and args.device is None:
        parser.error("--budget needs --device: latencies are per device")
    with one_line_errors():
        known = load_hub(args.dir)
    entries = query(known, args.device, args.budget, args.dataset)
    if not entries:
        print("no hub entry matches; known devices: "
              + ", ".join(sorted({d for e in known for d in e.latency_ms})))
        return 1
    print(format_table(entries, args.device))
    print("\nbuild one with: timm.create_model(NAME, num_classes=...) after `import gpunet`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
