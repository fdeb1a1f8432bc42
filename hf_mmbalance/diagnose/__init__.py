"""`hf-mmbalance diagnose` / `diagnose_balance`: does one modality dominate the model, by how much, and what would
help? (issue 17) One file per job:

* `config.py` — `DiagnoseConfig` (budget quick | full, seeds, epochs, methods, BSS criterion);
* `runs.py` — the trainings (each modality alone, the joint model, the methods), each stored when done (resumable);
* `probes.py` — linear probes on frozen encoder features (the benchmarks' recipe);
* `measures.py` — features, exact Shapley shares, disparity ratios, the BSS unbalanced fraction of one model;
* `verdict.py` — the verdict in words and numbers, the method ranking and when a difference is noise;
* `diagnosis.py` — `diagnose_balance`, planning and aggregating the parts;
* `report.py` — diagnosis.json / diagnosis.md and the model card's "Balance report" section; `plot.py` — the PNG.
"""

from .config import DiagnoseConfig, DiagnoseError
from .diagnosis import diagnose_balance
from .report import balance_report_section, read_diagnosis

__all__ = ["DiagnoseConfig", "DiagnoseError", "balance_report_section", "diagnose_balance", "read_diagnosis"]
