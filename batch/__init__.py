"""Batch jobs: the ``cut`` job over a folder or a list of files, on this machine or a Ray cluster.

Nothing here imports Ray at module level: ``ray`` is the optional ``[distributed]`` extra and
only :mod:`.ray_engine` needs it, imported when ``--engine ray`` is chosen.
"""
