"""Which tensors of our networks ComfyUI's ModelPatcher would leave behind in a partial (un)load.

Run with the host's Python, its ComfyUI checkout and this package on ``PYTHONPATH``:
``python buffer_owners.py WEIGHTS.safetensors ...``. Prints one JSON object per file:
``{"file", "buffers", "stranded"}``, where ``stranded`` lists the parameters and buffers whose
module neither is nor lies inside a module that ``ModelPatcher`` moves one by one when it loads
or unloads a model partly (``_load_list``: modules that hold all their parameters themselves).
A full load or unload moves the whole network, buffers included.
"""

import json
import sys

import comfy.cli_args

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported

import comfy.model_patcher  # noqa: E402
import torch  # noqa: E402

from comfyui_meticulous.models import load_model  # noqa: E402

for path in sys.argv[1:]:
    model = load_model(path)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                               offload_device=torch.device("cpu"))
    moved = [name for _, name, _, _ in patcher._load_list()]
    tensors = [name for name, _ in (*model.named_parameters(), *model.named_buffers())]
    stranded = [name for name in tensors
                if not any(name.startswith(owner + ".") if owner else True for owner in moved)]
    print(json.dumps({"file": path, "buffers": len(list(model.buffers())), "stranded": stranded}))
