"""`python -m hf_mmbalance COMMAND ...`: the `hf-mmbalance` command, also under a launcher that takes a module:

    accelerate launch --num_processes 2 -m hf_mmbalance train --config recipes/mfeat/vanilla.yaml
    torchrun --nproc_per_node 2 -m hf_mmbalance train --config recipes/mfeat/vanilla.yaml
"""

import sys

from hf_mmbalance.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
