"""djax's data: every method gets its batches from ``get_dataset`` and nowhere else.

    from djax import data
    train = data.get_dataset(config.data, "train", batch_size=64, num_devices=1, seed=0)
    batch = train.batch(step)        # {'image': float32 [devices, B/devices, H, W, C], ...}
    train.meta                       # DatasetMeta: shapes, value range, factors, classes

Datasets by name (``known_names()``): djax's offline builders (``sprites``, ``mnist_5k``,
``styled_mnist``, ``three_moons``; ``yaleb`` reads the user's Cropped Yale files from
manual_dir), the tfds datasets of the papers with their crops and
sizes (``tfds_datasets.SPECS``), arrays registered with ``register_arrays``. Samplers
(pairs, triplets, reference stream, labelled fraction) are in ``samplers``.
"""

from djax.data import samplers
from djax.data.pipeline import (ArraySource, DatasetMeta, Pipeline, TfdsSource, get_dataset,
                                load_split, shard, to_model_images, unshard)
from djax.data.registry import (check_config, check_image_size, known_names, open_split,
                                register_arrays)

__all__ = [
    "ArraySource", "DatasetMeta", "Pipeline", "TfdsSource", "get_dataset", "load_split",
    "shard", "to_model_images", "unshard", "check_config", "check_image_size", "known_names",
    "open_split", "register_arrays", "samplers",
]
