"""Training-free high-resolution segmentation: a coarse pass, an uncertain band, full-resolution
windows refined by the same model, and a seamless global-local fusion."""

from .fusion import BandFusion, Fusion, blend
from .pipeline import HighResOptions, HighResResult, segment_highres, uncertainty_preview
from .planner import Plan, Window, plan_refinement, plan_windows, window_size
from .refine import patch_input_size, refine_windows, uncertainty_refine, window_weight
from .uncertainty import UncertainBand, select_hrsod, select_mos, uncertainty_map

__all__ = ["BandFusion", "Fusion", "HighResOptions", "HighResResult", "Plan", "UncertainBand", "Window",
           "blend", "patch_input_size", "plan_refinement", "plan_windows", "refine_windows", "segment_highres",
           "select_hrsod", "select_mos", "uncertainty_map", "uncertainty_preview", "uncertainty_refine",
           "window_size", "window_weight"]
