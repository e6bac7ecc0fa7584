"""Cut one image file out: read, segment, write the RGBA cut-out and its mask.

:func:`cut_one` is the job the ``cut`` command runs for every file (and any other batch runner
can run, see :func:`~..files.batch.run_each`); :class:`CutOptions` checks its settings when it
is made, so a bad value is reported before a model is loaded.
"""

from dataclasses import dataclass

from torch import nn

from ..checks import check_model_side
from ..errors import InputError
from ..files.images import read_image, write_cutout
from ..files.naming import OutputNames
from .predict import ProgressFn, predict


@dataclass(frozen=True)
class CutOptions:
    """``resolution``/``keep_aspect``: the model input size (see :func:`~.predict.inference_size`).
    ``hires``: refine the uncertain band at full resolution, at most ``max_patches`` windows.
    ``respect_alpha``: a file's own transparency is kept: output alpha = model alpha × input
    alpha, so a transparent pixel never becomes opaque, and colours stay the file's own.
    Without it a transparent file is flattened onto white first, as a viewer shows it.
    ``overwrite``: replace existing outputs."""

    resolution: int | None = None
    keep_aspect: bool = False
    hires: bool = False
    max_patches: int | None = None
    respect_alpha: bool = False
    overwrite: bool = False

    def __post_init__(self):
        if self.resolution is not None:
            check_model_side(self.resolution)
        if self.max_patches is not None:
            if not self.hires:
                raise InputError("--max-patches only applies with --hires (it limits the refined windows)")
            if isinstance(self.max_patches, bool) or not isinstance(self.max_patches, int) or self.max_patches < 1:
                raise InputError(f"max_patches must be a whole number >= 1, got {self.max_patches!r}")
        if self.hires and self.keep_aspect:
            raise InputError("--keep-aspect applies to the one-shot pass only; the high-resolution pass "
                             "plans its own windows (drop one of the two)")


def cut_one(model: nn.Module, names: OutputNames, options: CutOptions = CutOptions(), *,
            progress: ProgressFn | None = None) -> None:
    """Read ``names.source``, segment it with ``model`` and write ``names.mask`` then
    ``names.rgba``. ``progress(done, total)`` follows the high-resolution windows (``hires``)."""
    from ..highres import HighResOptions, segment_highres

    picture = read_image(names.source)
    seen = picture.flattened()
    if options.hires:
        highres = HighResOptions(max_patches=options.max_patches, coarse_resolution=options.resolution)
        alpha = segment_highres(model, seen, highres, progress=progress).prediction.probabilities()[0].cpu()
    else:
        alpha = predict(model, seen, resolution=options.resolution, keep_aspect=options.keep_aspect)[0]
    colour = seen
    if options.respect_alpha and picture.alpha is not None:
        alpha = alpha * picture.alpha[0]
        colour = picture.rgb
    write_cutout(names.rgba, names.mask, colour[0], alpha, icc_profile=picture.icc_profile,
                 overwrite=options.overwrite)
