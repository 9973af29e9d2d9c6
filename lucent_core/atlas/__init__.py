"""Full-layer atlases: render every unit of layers to a resumable, shardable, browsable directory.

Example:
    >>> import tempfile, torch
    >>> from lucent_core import atlas
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> out = tempfile.mkdtemp()
    >>> summary = atlas.render_atlas(net, out, "0", steps=4, size=16, progress=False)
    >>> [len(s["units"]) for s in atlas.load_manifest(out)["series"]]
    [4]
"""

from lucent_core.atlas.gallery import write_gallery
from lucent_core.atlas.index import build_index, load_manifest
from lucent_core.atlas.plan import AtlasSettings, plan_batches, unit_seed
from lucent_core.atlas.runner import AtlasSummary, render_atlas, reproduce_command
from lucent_core.atlas.store import AtlasError, AtlasStore, AtlasWriteError
from lucent_core.units import (Series, layer_unit_maps, load_directions, parse_units, unit_maps,
                               unit_values)

__all__ = ["AtlasError", "AtlasSettings", "AtlasStore", "AtlasSummary", "AtlasWriteError",
           "Series", "build_index", "load_directions", "load_manifest", "parse_units",
           "layer_unit_maps", "plan_batches", "render_atlas", "reproduce_command", "unit_maps",
           "unit_seed", "unit_values",
           "write_gallery"]
