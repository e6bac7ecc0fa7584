"""The local engine: one process, one model, the items one model batch at a time."""

import sys
from pathlib import Path

from tqdm import tqdm

from .io import decode_image, write_outputs
from .job import JobOptions, Matter, Plan, Report, Weights, describe


def run_local(plan: Plan, weights: Weights, options: JobOptions, *, progress: bool = True) -> Report:
    """Process ``plan.todo`` here; a failing item is reported and the job goes on."""
    report = Report("local", str(plan.output), plan.total, len(plan.skipped))
    matter = Matter(weights, options)
    with tqdm(total=len(plan.todo), unit="image", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(plan.todo), matter.batch):
            decoded = []
            for source in plan.todo[start:start + matter.batch]:
                try:
                    decoded.append((source, decode_image(Path(source).read_bytes(), source)))
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the job
                    report.fail(source, describe(error))
            alphas = matter.try_alphas([pixels for _, pixels in decoded])
            for (source, pixels), alpha in zip(decoded, alphas):
                if isinstance(alpha, BaseException):
                    report.fail(source, describe(alpha))
                    continue
                try:
                    write_outputs(plan.output, source, pixels, alpha)
                    report.done += 1
                except Exception as error:  # noqa: BLE001
                    report.fail(source, describe(error))
            bar.update(min(matter.batch, len(plan.todo) - start))
    return report.finish()
