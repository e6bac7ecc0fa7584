"""Command-line subcommands ``models`` (the catalogue and what is installed) and ``download``."""

import argparse
import sys
from pathlib import Path

from ..errors import WeightsError
from . import integrity
from .catalogue import WeightsEntry, catalogue
from .hub import expected_digest, installed_path, resolve_weights


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``models`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "models", help="list the weights catalogue and where each file is installed",
        description="List every model id with its size, where its file is on this machine "
                    "(the folders given with --dir, then the Hugging Face cache) and whether "
                    "its sha256 has been verified.")
    parser.add_argument("--dir", dest="dirs", action="append", type=Path, metavar="FOLDER",
                        help="a model folder to look in (repeatable)")
    parser.add_argument("--verify", action="store_true",
                        help="check the sha256 of every installed file now (reads each file once)")
    parser.set_defaults(func=run_models)
    return parser


def add_download_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``download`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "download", help="download and verify weights by id",
        description="Download catalogue models from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN "
                    "apply) and check their sha256. Files already present are only verified.")
    parser.add_argument("ids", nargs="+", metavar="ID", help="model ids, as listed by `models`")
    parser.add_argument("--dir", type=Path, metavar="FOLDER",
                        help="save into this folder, e.g. ComfyUI/models/meticulous "
                             "(default: the Hugging Face cache)")
    parser.set_defaults(func=run_download)
    return parser


def _size(entry: WeightsEntry) -> str:
    if entry.size is None:
        return "?"
    return f"{'' if entry.size_exact else '~'}{entry.size / 1e6:,.0f} MB"


def _verified(entry: WeightsEntry, path: Path | None, dirs: list[Path] | None,
              check: bool) -> tuple[str, str | None]:
    """The verification status of an installed file, and the error if a check failed."""
    if path is None:
        return "-", None
    if check:
        try:
            resolve_weights(entry, search_dirs=dirs or [], download=False)
        except WeightsError as err:
            return "FAILED", str(err)
        return "yes", None
    remembered = integrity.remembered_digest(path)
    expected = expected_digest(entry, path)
    if remembered is None or expected is None:
        return "not yet", None
    return ("yes", None) if remembered == expected else ("MISMATCH", None)


def run_models(args: argparse.Namespace) -> int:
    """Print the catalogue as a table; exit status 1 if a requested check failed."""
    rows, errors = [("ID", "TITLE", "SIZE", "INSTALLED", "VERIFIED")], []
    for entry in catalogue().values():
        path = installed_path(entry, search_dirs=args.dirs or [])
        status, error = _verified(entry, path, args.dirs, args.verify)
        rows.append((entry.id, entry.title, _size(entry), str(path) if path else "-", status))
        errors += [error] if error else []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    for error in errors:
        print(f"\n{error}", file=sys.stderr)
    return 1 if errors else 0


def run_download(args: argparse.Namespace) -> int:
    """Download (or verify) each id; exit status 1 if any failed."""
    failed = 0
    for model_id in args.ids:
        try:
            path = resolve_weights(model_id, search_dirs=[args.dir] if args.dir else [],
                                   download_dir=args.dir)
        except WeightsError as err:
            print(f"{err}\n", file=sys.stderr)
            failed += 1
            continue
        print(f"{model_id}: {path} (sha256 verified)")
    return 1 if failed else 0
