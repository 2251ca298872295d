"""Compositional scores of one model across guidance settings, on chosen categories of the benchmark's prompts.

For each GUIDANCE[:RESCALE] setting, the same prompts (the categories asked for, from `make_prompt_set` of every
`--seeds`, in distribution and held out) and the same seeds: accuracy, objects per image, and the share of
images with exactly as many objects as the prompt names, per category. One line per setting.

    python benchmarks/guidance_sweep.py --settings 5:0.7 3:0.7 2:0.7 8:0.7 5:0
"""

from __future__ import annotations

import argparse

import numpy as np

from latentforge.evaluation.compositional import evaluate_compositional, make_prompt_set
from latentforge.evaluation.sampling import load_pipeline
from latentforge.resources import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--settings", nargs="+", default=["5:0.7", "3:0.7"], help="GUIDANCE[:RESCALE] each")
    parser.add_argument("--categories", nargs="+", default=["single_object", "position"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-prompts", type=int, default=10, help="prompts per category and seed")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    prompts = [
        p
        for seed in args.seeds
        for p in make_prompt_set(args.num_prompts, seed)
        if p.category in args.categories
    ]
    if not prompts:
        parser.error(f"no prompts in categories {args.categories}")
    pipe = load_pipeline(args.model, "auto")
    for setting in args.settings:
        guidance, _, rescale = setting.partition(":")
        result, _ = evaluate_compositional(
            pipe,
            prompts,
            args.images_per_prompt,
            0,
            num_inference_steps=args.steps,
            guidance_scale=float(guidance),
            guidance_rescale=float(rescale or 0),
        )
        parts = []
        for category in args.categories:
            rows = [i for i, p in enumerate(result.prompts) if p.category == category]
            counts = np.array([len(result.detections[i].objects) for i in rows])
            named = np.array([sum(g.count for g in result.prompts[i].spec.objects) for i in rows])
            accuracy = np.mean([result.correct[i] for i in rows])
            parts.append(
                f"{category} {accuracy:.2f} ({len(rows)} images), {counts.mean():.2f} objects per image, "
                f"exact count {np.mean(counts == named):.2f}"
            )
        print(f"guidance {guidance} rescale {rescale or 0}: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
