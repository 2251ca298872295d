"""The parts of a model and their files: `components` (the five parts of a diffusers folder, load and save),
`component_files` (one part of a model or architecture folder), `folder_checks` (what a model folder must
hold), `tokenizer` (the offline CLIP tokenizer) and `openclip` (an open_clip text tower as a CLIPTextModel).
"""
