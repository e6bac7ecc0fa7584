"""Our place in ComfyUI's model folders, and telling the weights library about them.

``models/meticulous`` is registered under the folder key ``meticulous`` so that folders users
add in ``extra_model_paths.yaml`` under that key are searched too. ComfyUI core's
``background_removal`` folder is searched for the BiRefNet file core itself uses, so one copy
serves both. Downloads go to ``models/<key>``.
"""

import os

from ..weights import HostFolders, set_host_folders

FOLDER_KEY = "meticulous"
CORE_FOLDER_KEY = "background_removal"
# Never a pickle: only safetensors files are listed and loaded.
EXTENSIONS = {".safetensors"}


def register_model_folders() -> None:
    """Register ``models/meticulous`` with ComfyUI and point the weights library at ComfyUI's
    model folders. Called once when the node extension loads."""
    import folder_paths  # ComfyUI's own module: only importable inside ComfyUI

    ours = os.path.join(folder_paths.models_dir, FOLDER_KEY)
    if FOLDER_KEY in folder_paths.folder_names_and_paths:
        # Created by extra_model_paths.yaml: keep its folders and add ours.
        if ours not in folder_paths.get_folder_paths(FOLDER_KEY):
            folder_paths.add_model_folder_path(FOLDER_KEY, ours)
        paths, extensions = folder_paths.folder_names_and_paths[FOLDER_KEY]
        if not extensions:
            # A key created from the yaml file lists every file; ours lists safetensors only.
            folder_paths.folder_names_and_paths[FOLDER_KEY] = (paths, set(EXTENSIONS))
    else:
        folder_paths.folder_names_and_paths[FOLDER_KEY] = ([ours], set(EXTENSIONS))

    def search(key: str) -> list[str]:
        if key in folder_paths.folder_names_and_paths:
            return folder_paths.get_folder_paths(key)
        # Older ComfyUI versions have no background_removal key; look where newer ones would.
        return [os.path.join(folder_paths.models_dir, key)]

    downloads = {key: os.path.join(folder_paths.models_dir, key) for key in (FOLDER_KEY, CORE_FOLDER_KEY)}
    set_host_folders(HostFolders(search=search, downloads=downloads))
