"""Writes a stand-in Stable Diffusion 1.5 checkpoint: ComfyUI's own model classes, random fp16 weights.

Run with the host's Python, its ComfyUI checkout on ``PYTHONPATH`` (``python sd15_standin.py
OUT.safetensors [--inpaint]``). The text encoder (CLIP-L) and VAE have SD 1.5's fixed layouts; the UNet has
SD 1.5's widths (which ComfyUI's model detection keys on) but only two levels with one block
each, so a sampling step at a small latent takes a fraction of a second on a CPU. ``--inpaint``
gives it the 9 input channels of the inpainting model.
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

import comfy.cli_args

# Before comfy.model_management is imported: the weights are made on the CPU, GPU or not.
comfy.cli_args.args.cpu = True

import comfy.clip_model  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
       "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def unet(in_channels: int) -> torch.nn.Module:
    return UNetModel(image_size=32, in_channels=in_channels, model_channels=320, out_channels=4, num_res_blocks=[1, 1],
                     channel_mult=[1, 1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1, 1],
                     transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1], context_dim=768,
                     use_linear_in_transformer=False, operations=comfy.ops.manual_cast)


def text_encoder() -> torch.nn.Module:
    config = os.path.join(os.path.dirname(comfy.clip_model.__file__), "sd1_clip_config.json")
    with open(config) as f:
        return comfy.clip_model.CLIPTextModel(json.load(f), torch.float32, "cpu", comfy.ops.manual_cast)


def random_weights(prefix: str, module: torch.nn.Module, generator: torch.Generator) -> dict:
    """Small random fp16 weights: norms 1, biases 0, the rest N(0, 0.02)."""
    weights = {}
    for name, tensor in module.state_dict().items():
        if name.endswith("position_ids"):
            weights[prefix + name] = tensor.clone()
        elif name.endswith("bias"):
            weights[prefix + name] = torch.zeros(tensor.shape, dtype=torch.float16)
        elif tensor.ndim == 1:
            weights[prefix + name] = torch.ones(tensor.shape, dtype=torch.float16)
        else:
            weights[prefix + name] = (torch.randn(tensor.shape, generator=generator) * 0.02).half()
    return weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--inpaint", action="store_true")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(1234)
    with torch.device("meta"):
        parts = [("model.diffusion_model.", unet(9 if args.inpaint else 4)),
                 ("cond_stage_model.transformer.", text_encoder()),
                 ("first_stage_model.", AutoencoderKL(ddconfig=VAE, embed_dim=4))]
    weights = {}
    for prefix, module in parts:
        weights.update(random_weights(prefix, module, generator))
    save_file(weights, args.out)


if __name__ == "__main__":
    main()
