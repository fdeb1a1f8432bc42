"""Processing layer: one HF processor per modality behind one object, and the collator that pads each modality.

Raw dataset columns (images, video frames, audio, text) become namespaced model inputs: key `m` holds modality `m`'s
main input and `m_K` every other output `K` of its sub-processor. Layers import downward: nothing here imports the
model, trainer, methods or CLI.
"""

from .audio import audio_and_rate, check_sampling_rate, load_audio, read_audio_file, resample, to_mono
from .collator import MultimodalDataCollator
from .errors import ProcessingError
from .images import image_channels, load_image
from .padding import pad_float_sequences
from .processor import Modality, MultimodalProcessor, processor_kind
from .serialization import CONFIG_NAME, SUBFOLDER_PREFIX

__all__ = [
    "CONFIG_NAME",
    "SUBFOLDER_PREFIX",
    "Modality",
    "MultimodalDataCollator",
    "MultimodalProcessor",
    "ProcessingError",
    "audio_and_rate",
    "check_sampling_rate",
    "image_channels",
    "load_audio",
    "load_image",
    "pad_float_sequences",
    "processor_kind",
    "read_audio_file",
    "resample",
    "to_mono",
]
