"""The run folder: its layout (`layout`, the only place that spells its file names), the one writer (`RunFolder`),
the one reader (`reader`), checkpoint files and which one a folder means (`checkpoints`), and results/ (`results`).

The engine and the analysis import this package; it imports neither.
"""

from .checkpoints import checkpoint_class_names, checkpoint_path, load_checkpoint, save_checkpoint
from .reader import RunStatus, is_run_folder, read_metrics, read_run_config, read_summary, run_status
from .results import SavedResult, read_results, results_folder, write_result
from .writer import RunFolder, SoftLabelFiles

__all__ = [
    "RunFolder", "RunStatus", "SavedResult", "SoftLabelFiles", "checkpoint_class_names", "checkpoint_path",
    "is_run_folder", "load_checkpoint", "read_metrics", "read_results", "read_run_config", "read_summary",
    "results_folder", "run_status", "save_checkpoint", "write_result",
]
