"""The BiRefNet forward traces into one graph: no breaks for torch.compile or CUDA graphs."""

import torch

from comfyui_meticulous.models import BiRefNet


def test_birefnet_forward_compiles_as_one_graph_and_matches_eager():
    torch.manual_seed(0)
    model = BiRefNet("swin_v1_t").eval().requires_grad_(False)
    x = torch.randn(1, 3, 64, 96)
    torch._dynamo.reset()
    # fullgraph=True fails on any graph break. The AOT backend traces and decomposes exactly as
    # inductor does but skips code generation, which takes minutes on a 2-core machine.
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.inference_mode():
        expected = model(x)
        actual = compiled(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
