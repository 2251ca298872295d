"""The `latentforge` sub-commands, one module each (`generate` also holds img2img and inpaint, `evaluate`
is `eval`), with `sampling_flags` (the sampling flags they share) and `png_record` (the generation record
every PNG carries). Each module's `register(subparsers)` adds its parser; torch is imported only when a
command runs."""
