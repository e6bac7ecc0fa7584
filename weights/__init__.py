"""Pretrained weights: the catalogue, where files are found, verified downloads from the Hub."""

from .catalogue import WeightsEntry, catalogue, get_entry, licence_summary, load_catalogue
from .folders import HostFolders, host_folders, set_host_folders
from .hub import expected_digest, installed_path, resolve_weights, weights_url

__all__ = [
    "HostFolders", "WeightsEntry", "catalogue", "expected_digest", "get_entry", "host_folders",
    "installed_path", "licence_summary", "load_catalogue", "resolve_weights", "set_host_folders", "weights_url",
]
