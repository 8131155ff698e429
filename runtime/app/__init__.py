"""The `alexnetc` command-line application: argument parsing (`cli`), the runtime commands
(`commands`, `figure_commands`; `compare_command` and `ablate_command` with their statistics in `spread`;
`runs_command`), figure drawing (`figures`), a trained model for inference (`model`),
shipped spec lookup (`specs`) and the user-facing error type (`errors`).
"""
