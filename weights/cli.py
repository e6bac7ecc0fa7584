"""Command-line subcommands ``models`` (the catalogue and what is installed) and ``download``."""

import argparse
import sys
from pathlib import Path

from ..errors import WeightsError
from . import integrity
from .catalogue import WeightsEntry, catalogue, get_entry
from .hub import expected_digest, installed_path, resolve_weights


def add_models_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``models`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser = subparsers.add_parser(
        "models", help="list the weights catalogue and where each file is installed",
        description="List every model id with its size, licence, where its file is on this machine "
                    "(the folders given with --dir, then the Hugging Face cache) and how its sha256 is "
                    "known: a 'published digest' from the catalogue, or one 'recorded on first use' "
                    "on this machine where none is published.")
    parser.add_argument("--dir", dest="dirs", action="append", type=Path, metavar="FOLDER",
                        help="a model folder to look in (repeatable)")
    parser.add_argument("--verify", action="store_true",
                        help="check every installed file now (reads each file once); a failing file is "
                             "reported and left where it is")
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


def digest_source(entry: WeightsEntry, path: Path | None = None) -> str:
    """How the file's sha256 is known: ``published digest`` (in the catalogue) or ``recorded on
    first use`` (learnt on this machine; ``not recorded yet`` before the first use)."""
    if entry.sha256 is not None:
        return "published digest"
    if path is not None and expected_digest(entry, path) is None:
        return "not recorded yet"
    return "recorded on first use"


def _verified(entry: WeightsEntry, path: Path | None, dirs: list[Path] | None,
              check: bool) -> tuple[str, str | None]:
    """The digest status of an installed file, and the error if a check failed."""
    if path is None:
        return "-", None
    source = digest_source(entry, path)
    if check:
        try:
            resolve_weights(entry, search_dirs=dirs or [], download=False, check_only=True)
        except WeightsError as err:
            return f"FAILED ({source})", str(err)
        return ("checked, no digest recorded yet" if source == "not recorded yet"
                else f"verified ({source})"), None
    remembered = integrity.remembered_digest(path)
    expected = expected_digest(entry, path)
    if expected is None:
        return source, None
    if remembered is None:
        return f"{source}, not checked yet", None
    return (f"verified ({source})", None) if remembered == expected else (f"MISMATCH ({source})", None)


def run_models(args: argparse.Namespace) -> int:
    """Print the catalogue as a table; exit status 1 if a requested check failed."""
    rows, errors = [("ID", "TITLE", "SIZE", "LICENCE", "INSTALLED", "SHA256")], []
    for entry in catalogue().values():
        path = installed_path(entry, search_dirs=args.dirs or [])
        status, error = _verified(entry, path, args.dirs, args.verify)
        rows.append((entry.id, entry.title, _size(entry), entry.licence_text, str(path) if path else "-", status))
        errors += [error] if error else []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    notes = [entry for entry in catalogue().values() if entry.non_commercial or entry.gated]
    for entry in notes:
        terms = "non-commercial use only" if entry.non_commercial else ""
        gated = "gated: accept its terms on the Hub and set HF_TOKEN" if entry.gated else ""
        print(f"note: {entry.id}: {'; '.join(t for t in (terms, gated) if t)} "
              f"(https://huggingface.co/{entry.repo})", file=sys.stderr)
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
        entry = get_entry(model_id)
        how = ("sha256 verified against the published digest" if entry.sha256 is not None
               else "sha256 recorded on first use: the catalogue publishes no digest for it")
        print(f"{model_id}: {path} ({how}; licence {entry.licence_text})")
    return 1 if failed else 0
