"""The local engine: one process, one model, the items one model batch at a time."""

import sys
from pathlib import Path

from tqdm import tqdm

from ..files.batch import describe
from .io import read_image_bytes, write_cutout_files
from .job import JobOptions, Matter, Plan, Report, Weights


def run_local(plan: Plan, weights: Weights, options: JobOptions, *, progress: bool = True) -> Report:
    """Process ``plan.todo`` here; a failing item is reported and the job goes on."""
    report = Report("local", str(plan.output), plan.total, len(plan.skipped))
    matter = Matter(weights, options)
    with tqdm(total=len(plan.todo), unit="image", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(plan.todo), matter.batch):
            read = []
            for source in plan.todo[start:start + matter.batch]:
                try:
                    # Bytes first, as Ray reads them: both engines decode the same way.
                    read.append((source, read_image_bytes(Path(source).read_bytes(), source)))
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the job
                    report.fail(source, describe(error))
            for (source, _), result in zip(read, matter.try_cutouts([picture for _, picture in read])):
                if isinstance(result, Exception):
                    report.fail(source, describe(result))
                    continue
                try:
                    write_cutout_files(plan.output, source, result)
                    report.done += 1
                except Exception as error:  # noqa: BLE001
                    report.fail(source, describe(error))
            bar.update(min(matter.batch, len(plan.todo) - start))
    return report.finish()
