"""Evaluation: the GenEval-style compositional benchmark on the shapes world, emoji retrieval, VAE
reconstruction, FID/KID and CLIP score, each written as JSON + Markdown + an image grid.

Import the modules directly (`latentforge.evaluation.compositional`, `.metrics`, ...); this package
imports nothing heavy, so `import latentforge` stays fast.
"""
