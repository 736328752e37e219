"""``python -m headscope``: the command line (``torchrun --nproc_per_node N -m headscope run ...`` starts it)."""

from .cli.app import main

main()
