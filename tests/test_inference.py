"""One-shot inference: sizes, batching, devices and input checks."""

import pytest
import torch
from torch import nn

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.inference import Prediction, inference_size, normalise, predict, predict_logits
from comfyui_meticulous.models.base import SegmentationModel


class MeanModel(SegmentationModel):
    """Logit = 4·(mean RGB of the normalised input - bias): a pure function of each pixel."""

    native_resolution = (64, 64)
    size_multiple = 32
    input_normalisation = "imagenet"

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return 4 * (x.mean(1, keepdim=True) - self.bias)


def test_sizes_native_square_aspect_and_dynamic():
    model = MeanModel()
    assert inference_size(model, (1000, 3000)) == (64, 64)
    assert inference_size(model, (1000, 3000), resolution=100) == (96, 96)
    h, w = inference_size(model, (1000, 3000), keep_aspect=True)
    assert (h, w) == (32, 96) and h % 32 == 0 and w % 32 == 0
    model.native_resolution = None
    model.resolution_range = (256, 2304)
    assert inference_size(model, (720, 1280)) == (704, 1280)
    assert inference_size(model, (3000, 6000)) == (1152, 2304)
    assert inference_size(model, (100, 100)) == (256, 256)
    with pytest.raises(InputError, match="too small"):
        inference_size(model, (10, 10), resolution=8)


def test_predict_returns_input_size_probabilities_in_batches():
    model = MeanModel()
    images = torch.rand(5, 70, 90, 3, generator=torch.Generator().manual_seed(0))
    seen = []
    probs = predict(model, images, batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert probs.shape == (5, 70, 90) and probs.dtype == torch.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    assert model.calls == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64)]
    assert seen == [(2, 5), (4, 5), (5, 5)]
    one_by_one = torch.cat([predict(model, images[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(probs, one_by_one)


def test_prediction_keeps_model_resolution_and_resizes_logits():
    model = MeanModel()
    images = torch.full((1, 40, 50, 3), 0.5)
    prediction = predict_logits(model, images)
    assert isinstance(prediction, Prediction)
    assert prediction.logits.shape == (1, 1, 64, 64) and prediction.image_size == (40, 50)
    expected = torch.sigmoid(4 * normalise(torch.full((1, 3, 1, 1), 0.5)).mean())
    torch.testing.assert_close(prediction.probabilities(), expected.expand(1, 40, 50))


def test_constant_image_gives_constant_mask_under_max_normalisation():
    model = MeanModel()
    model.input_normalisation = "max"
    dark, bright = torch.full((1, 32, 32, 3), 0.2), torch.full((1, 32, 32, 3), 0.8)
    torch.testing.assert_close(predict(model, dark), predict(model, bright))


@pytest.mark.parametrize("bad,message", [
    (torch.rand(2, 3, 32, 32).permute(0, 2, 3, 1)[..., :2], r"\[B,H,W,3\]"),
    (torch.zeros(0, 32, 32, 3), "empty"),
    (torch.zeros(1, 32, 32, 3, dtype=torch.uint8), "float"),
    (torch.zeros(1, 0, 32, 3), "empty side"),
    ([[0.0]], "torch tensor"),
    (torch.rand(1, 3, 100, 3), "channels-first"),
    (torch.rand(2, 3, 40, 50), "channels-first"),
    (torch.rand(1, 32, 32, 3).index_put_((torch.tensor([0]), torch.tensor([5]), torch.tensor([5])),
                                         torch.tensor(float("nan"))), "NaN"),
    (torch.full((1, 8, 8, 3), float("inf")), "NaN or infinite"),
    (torch.rand(1, 32, 32, 3) * 255, "0..1.*dividing by 255"),
    (-torch.rand(1, 32, 32, 3) - 0.5, "0..1"),
])
def test_bad_images_are_reported(bad, message):
    with pytest.raises(InputError, match=message):
        predict(MeanModel(), bad)


def test_small_overshoots_are_clamped_not_refused():
    model = MeanModel()
    overshoot = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    torch.testing.assert_close(predict(model, overshoot), predict(model, overshoot.clamp(0, 1)))


def test_model_input_size_is_bounded():
    model = MeanModel()
    with pytest.raises(InputError, match="largest model input side, 4096"):
        inference_size(model, (1000, 1000), resolution=100000)
    assert inference_size(model, (1000, 1000), resolution=4096) == (4096, 4096)
    # keep_aspect on an extreme strip: within twice the square's side, not 32x72416.
    model.native_resolution = (1024, 1024)
    assert inference_size(model, (1, 5000), keep_aspect=True) == (32, 2048)
    assert inference_size(model, (5000, 1), keep_aspect=True) == (2048, 32)


def test_huge_images_are_refused_before_any_work():
    huge = torch.zeros(1, 1, 20000, 3).expand(1, 20000, 20000, 3)
    with pytest.raises(InputError, match="largest supported side"):
        predict(MeanModel(), huge)


def test_batch_size_must_be_positive():
    with pytest.raises(InputError, match="batch_size"):
        predict(MeanModel(), torch.rand(1, 32, 32, 3), batch_size=0)


def test_resolution_below_the_model_minimum_is_refused():
    model = MeanModel()
    model.min_resolution = 64
    with pytest.raises(InputError, match="at least 64"):
        predict(model, torch.rand(1, 80, 80, 3), resolution=32)



def test_auto_precision_never_halves_on_the_cpu_and_bf16_support_is_reported(monkeypatch):
    from comfyui_meticulous.inference import device
    assert isinstance(device.cpu_has_native_bf16(), bool)
    assert device.pick_dtype(torch.device("cpu")) == torch.float32
    assert device.pick_dtype(torch.device("mps")) == torch.float32
    assert device.pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
