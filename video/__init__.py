"""Video matting: frame batches streamed through a pipeline in chunks, with temporal smoothing."""

from .stream import VideoMatte, batch_size_for, device_free_memory, matte_video, model_runner
from .temporal import TemporalState, motion_gate, retention, stabilise

__all__ = ["TemporalState", "VideoMatte", "batch_size_for", "device_free_memory", "matte_video",
           "model_runner", "motion_gate", "retention", "stabilise"]
