"""Processing layer: one HF processor per modality behind one object, and the collator that pads each modality."""
