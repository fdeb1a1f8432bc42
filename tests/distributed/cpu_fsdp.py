"""Test-only: let accelerate's FSDP plugin run on CPU (gloo), so the FSDP tests drive the real `Trainer` +
`accelerate` FSDP2 path (`fully_shard`, DTensor gradients, sharded checkpoints) on a CPU machine.

accelerate (1.15) takes the FSDP path only for GPU-like distributed types: with `use_cpu=True` the plugin is
silently ignored and the run is plain DDP over gloo. FSDP2 itself runs on CPU with gloo (HF_NOTES.md 2026-12), so
this turns a MULTI_CPU state into FSDP when a plugin is given; nothing else is changed. Import it before the
`TrainingArguments` are built.
"""

import accelerate.state as state
from accelerate.utils import DistributedType

_original_init = state.AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


state.AcceleratorState.__init__ = _init_with_fsdp_on_cpu


# Second CPU-only gap: `Accelerator.get_state_dict` (Trainer.save_model with FULL_STATE_DICT) asks torch for a full,
# CPU-offloaded state dict, which on a CPU mesh comes back as DTensors (offloading to the CPU is a no-op there, and
# that path is what gathers on GPU); safetensors then cannot save them. Gather them here (every rank calls
# get_state_dict, so the all-gathers pair up).
import accelerate  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

_original_get_state_dict = accelerate.Accelerator.get_state_dict


def _full_state_dict(self, model, unwrap=True):
    state_dict = _original_get_state_dict(self, model, unwrap=unwrap)
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state_dict.items()}


accelerate.Accelerator.get_state_dict = _full_state_dict
