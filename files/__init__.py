"""Files this package reads and writes: atomic writes, the image reader and writer, output
naming, per-file batches and interrupt handling."""

from .atomic import atomic_path, atomic_write
from .batch import BatchReport, Failure, run_each
from .images import IMAGE_SUFFIXES, Picture, find_images, probe_image, read_image, read_mask, write_cutout
from .naming import OutputNames, plan_outputs, prepare_folder

__all__ = ["IMAGE_SUFFIXES", "BatchReport", "Failure", "OutputNames", "Picture", "atomic_path", "atomic_write",
           "find_images", "plan_outputs", "prepare_folder", "probe_image", "read_image", "read_mask", "run_each",
           "write_cutout"]
