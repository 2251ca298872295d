"""Evaluation: the GenEval-style compositional benchmark on the shapes world (`compositional`, read by
`detector`), emoji retrieval (`emoji_fidelity`), VAE reconstruction (`reconstruction`), FID/KID and CLIP
score (`distribution`, `metrics`, in the feature spaces of `features`), each written as JSON + Markdown +
an image grid (`report`). `tasks` runs them by name for `latentforge eval` with an `eval_config.EvalConfig`;
`sampling` makes the images.

Import the modules directly; this package imports nothing heavy, so `import latentforge` stays fast.
"""
