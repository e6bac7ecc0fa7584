"""Loading a segmentation model into ComfyUI's model management."""

import os

from ..models import load_model
from ..models.loading import file_role
from ..weights import catalogue, installed_path, licence_summary
from .comfy import PRECISION_OPTIONS, compute_device, io, model_dtype, model_file_path, model_files, wrap_model
from .common import Model

DEFAULT_MODEL = "birefnet"


def model_choices() -> list[str]:
    """Catalogue ids, then weight files in the model folders that are not a catalogue file.

    Listing reads the packaged catalogue and the folders only: nothing is downloaded while
    ComfyUI builds its node list. A catalogue file already on disk appears under its id, so it
    gets the catalogue's native resolution and digest check. Trained networks that predict a
    mask on their own (GSN, BASNet, MeticulousNet L) are listed; refiners and fusions are
    offered by the refine/fuse nodes instead (their headers say which is which).
    """
    entries = catalogue()
    known = {entry.local_filename for entry in entries.values()}
    return [*entries, *(name for name in model_files()
                        if os.path.basename(name) not in known
                        and file_role(model_file_path(name)) in (None, "coarse"))]


def installed_models() -> list[str]:
    """Catalogue ids whose file is already in a model folder or the Hugging Face cache (looked up
    by name only: nothing is read, hashed or downloaded)."""
    return [model_id for model_id, entry in catalogue().items() if installed_path(entry) is not None]


def model_tooltip() -> str:
    installed = installed_models()
    return ("A catalogue id (downloaded when missing; `python -m comfyui_meticulous models` lists sizes "
            "and tasks) or a .safetensors file found in models/meticulous (published weights, or a network "
            f"trained with `train`). Licences: {licence_summary()}. Installed catalogue models: "
            f"{', '.join(installed) if installed else 'none yet'}.")


class LoadModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousLoadModel",
            display_name="Load Segmentation Model (Meticulous)",
            category="meticulous/models",
            description="Loads BiRefNet or BASNet weights for the Meticulous nodes. A catalogue id "
                        "is looked up in models/meticulous (and folders added under 'meticulous' in "
                        "extra_model_paths.yaml), then downloaded from Hugging Face on first use; "
                        "every file is checked against its sha256. ComfyUI manages the loaded "
                        "model like its own: it is offloaded when memory is needed and 'Unload "
                        "models' frees it.",
            inputs=[
                # Option values stay plain ids and file names, so saved workflows keep working;
                # which catalogue models are on disk is said in the tooltip.
                io.Combo.Input("model", options=model_choices(), default=DEFAULT_MODEL, tooltip=model_tooltip()),
                io.Combo.Input("precision", options=PRECISION_OPTIONS, default="auto",
                               tooltip="Weight precision. auto: bf16 on GPUs that support it, "
                                       "else fp16 where ComfyUI deems it safe, else fp32; always "
                                       "fp32 on CPU and Apple MPS. A forced value is used as given."),
            ],
            # Output ids must differ from input ids (ComfyUI v0.3.64 refuses the schema otherwise).
            outputs=[Model.Output("loaded_model", display_name="model",
                                  tooltip="The loaded model, for Segment, Coarse Predict and the high-resolution nodes.")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        source = model if model in catalogue() else model_file_path(model)
        network = load_model(source, dtype=model_dtype(compute_device(), precision), role="coarse")
        return io.NodeOutput(wrap_model(network))


NODES = [LoadModel]
