"""The `latentforge` sub-commands, one module each (`generate` also holds img2img and inpaint, `evaluate`
is `eval`), with what they share: `shared_flags` (--model, KEY=VALUE overrides, deprecation lines),
`sampling_flags` (the sampling flags), `model_files` (single-file checkpoints and --allow-pickle),
`png_record` (the generation record every PNG carries) and `library_output` (quiet library progress bars).
`generate` checks its settings (`generation_settings`), LoRA and embedding files (`adapter_files`) and output
names (`output_paths`) before `generation_run` imports torch. Each module's `register(subparsers)`
adds its parser; torch is imported only when a command runs, after its arguments are checked."""
