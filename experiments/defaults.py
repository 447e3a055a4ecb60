"""What every experiment shares: run, data, train and eval settings with their defaults.

An experiment file starts from :func:`get_config` and sets what its paper says; everything
it does not set is what is written here. A plain python file, read top to bottom.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  c.num_devices = 0  # 0: all local devices
  # Several processes: jax.distributed.initialize() once per process (optionally with
  # coordinator_address, num_processes, process_id; else the cluster's environment).
  c.distributed = False
  c.tensorboard = True
  c.progress_bar = True

  c.data = ml_collections.ConfigDict()
  c.data.name = ""
  c.data.data_dir = ""  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.manual_dir = ""  # files a dataset reads that you download yourself
  c.data.image_size = 32
  c.data.value_range = (-1.0, 1.0)
  c.data.pairing = None  # what a batch carries beside its examples (djax.data.samplers)
  c.data.in_memory_max_gb = 4.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  c.train.steps = 1000
  c.train.log_every = 50
  c.train.save_every = 1000
  c.train.eval_every = 0  # sample grids every N steps (0: at the end only)
  c.train.keep_checkpoints = 3
  c.train.halt_on_nonfinite = True

  c.eval = ml_collections.ConfigDict()
  c.eval.metrics = ()
  c.eval.factors = ()
  c.eval.split = "test"
  c.eval.sample_split = "test"
  c.eval.num_grid_images = 8
  c.eval.at_end = True
  # eval.json's "untrained" row: the same metrics on the initial parameters (step 0 of a run
  # that does not start from a previous stage), the baseline a score is read against. Off by
  # default (it is a second evaluation); the mixing experiments turn it on.
  c.eval.untrained = False
  # Every N steps (0: never), eval.track_metrics (default: the first of eval.metrics) on
  # eval.split (or eval.track_examples of its examples, 0: all) into metrics.jsonl as
  # eval/<headline key>, drawn by djax.report's curves.png.
  c.eval.track_every = 0
  c.eval.track_metrics = ()
  c.eval.track_examples = 0
  return c


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0,
         decay_every: int = 0, decay_rate: float = 0.9, clip_norm: float = 0.0):
  """An optimiser block for ``djax.methods.base.make_optimizer``."""
  return ml_collections.ConfigDict(dict(learning_rate=learning_rate, b1=b1, b2=b2,
                                        weight_decay=weight_decay, decay_every=decay_every,
                                        decay_rate=decay_rate, clip_norm=clip_norm))
