"""``python -m comfyui_meticulous``, or ``python path/to/this/folder/__main__.py`` where the
folder's name is no importable module name (a ComfyUI ``custom_nodes`` checkout)."""

import sys

try:
    if __package__:
        from .cli import main
    else:
        # Run as a file: load this folder as the package under its own name (the package uses
        # relative imports only, so any name works), without touching sys.path.
        import importlib
        import importlib.util
        from pathlib import Path

        _folder = Path(__file__).resolve().parent
        _spec = importlib.util.spec_from_file_location(
            "comfyui_meticulous", _folder / "__init__.py", submodule_search_locations=[str(_folder)])
        _package = importlib.util.module_from_spec(_spec)
        sys.modules[_spec.name] = _package
        _spec.loader.exec_module(_package)
        main = importlib.import_module("comfyui_meticulous.cli").main
except KeyboardInterrupt:  # Ctrl-C while torch is still importing
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
