"""Training arguments that never write a secret or a local path.

`Trainer` pickles its `TrainingArguments` into `training_args.bin` with every save, and `hub_strategy="checkpoint"`
pushes that file with each checkpoint: the `hub_token` and the absolute `output_dir` went with it. Here the
arguments' pickled form (`__reduce_ex__`) leaves out every `*_token` field and keeps only the base names of local
directories, while the object itself (and its deep copies) keeps everything the run needs, the token for pushing
included. The pickle references the original class only, so `torch.load` needs nothing from hf_mmbalance.
"""

from __future__ import annotations

import copy
import copyreg
import os

_PATH_FIELDS = ("output_dir", "logging_dir", "resume_from_checkpoint", "hub_model_id_local_dir")


def shareable_state(args) -> dict:
    """The arguments' attributes as they may be written: tokens removed, local paths reduced to their base name."""
    state = dict(vars(args))
    for key in state:
        if key.endswith("_token"):
            state[key] = None
    for key in _PATH_FIELDS:
        value = state.get(key)
        if isinstance(value, str) and value and (os.path.isabs(value) or os.sep in value):
            state[key] = os.path.basename(os.path.normpath(value))
    return state


def _reduce_without_secrets(self, protocol):
    # copyreg._reconstructor is what pickle itself uses for plain objects: the file then names only the original
    # class (e.g. transformers.TrainingArguments) and sets the cleaned attributes on it.
    original = type(self).__mro__[1]
    return copyreg._reconstructor, (original, object, None), shareable_state(self)


def _deepcopy_everything(self, memo):
    duplicate = object.__new__(type(self))
    memo[id(self)] = duplicate
    for key, value in vars(self).items():
        object.__setattr__(duplicate, key, copy.deepcopy(value, memo))
    return duplicate


def make_token_free(args):
    """Give `args` (in place) a pickled form without tokens or local paths; returns it."""
    cls = type(args)
    if getattr(cls, "_writes_no_secrets", False):
        return args
    safe = type(cls.__name__, (cls,), {
        "__reduce_ex__": _reduce_without_secrets,
        "__deepcopy__": _deepcopy_everything,
        "_writes_no_secrets": True,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    })
    args.__class__ = safe
    return args


__all__ = ["make_token_free", "shareable_state"]
