"""Stand-in for ComfyUI's ``folder_paths``: model folder keys, their folders and file lists.

``models_dir`` is ``<base>/models``; ``rebase(base)`` points the stand-in at another base folder
(ComfyUI's ``--base-directory``) and resets the keys to the two the pack cares about.
"""

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
models_dir = ""


def rebase(base: str) -> None:
    global models_dir
    models_dir = os.path.join(base, "models")
    folder_names_and_paths.clear()
    folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions)
    folder_names_and_paths["background_removal"] = (
        [os.path.join(models_dir, "background_removal")], supported_pt_extensions)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths, _ = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    folders, extensions = folder_names_and_paths[folder_name]
    names = set()
    for folder in folders:
        for root, _, files in os.walk(folder, followlinks=True):
            names.update(os.path.relpath(os.path.join(root, name), folder) for name in files
                         if not extensions or os.path.splitext(name)[-1].lower() in extensions)
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for folder in folder_names_and_paths[folder_name][0]:
        path = os.path.join(folder, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


rebase(os.path.dirname(os.path.realpath(__file__)))
