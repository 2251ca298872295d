"""Configs that ship with latentforge: architectures (`models/<name>/`, diffusers config folders without
weights), training runs (`train/<name>.yaml`) and evaluation runs (`eval/<name>.yaml`).

This folder sits at the top of the repository, where users look for it, and is installed as the package
`latentforge.configs`; code reads it through `latentforge.resources`, never through a path of the checkout.
"""
