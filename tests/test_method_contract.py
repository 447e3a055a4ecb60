"""The method contract (djax.methods.base) seen from outside djax: a plain autoencoder defined
here, registered with one line, trains through the one loop, evaluates with two metrics, draws
its grids, resumes, runs as two stages (the second started from the first), and trains on
points (three_moons) as on images. Also: no import cycles among djax's modules."""

import ast
import json
import os
import pkgutil
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import djax
from djax import methods, stages, train
from djax.methods import base


class _MLP(nn.Module):
  widths: tuple
  out_shape: tuple

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    for w in self.widths:
      h = nn.relu(nn.Dense(w)(h))
    return nn.Dense(int(np.prod(self.out_shape)))(h).reshape((x.shape[0],) + self.out_shape)


class PlainAutoencoder(base.Method):
  """x -> code -> x̂ with a squared-error loss; a second stage appends two code units
  (zero decoder rows: it starts as the first stage's function)."""
  groups = ("ae",)

  def __init__(self, config, axis_name=base.AXIS):
    super().__init__(config, axis_name)
    self.key = config.data.get("input_key", "image")
    self.code_size = int(config.model.code_size)
    self.input_shape = tuple(config.model.input_shape)
    self.encoder = _MLP((16,), (self.code_size,))
    self.decoder = _MLP((16,), self.input_shape)
    self.tx = {"ae": optax.adam(1e-2)}

  def init(self, rng, batch, previous=None):
    x = batch[self.key]
    k1, k2, k3 = jax.random.split(rng, 3)
    params = {"ae": {"encoder": self.encoder.init(k1, x)["params"],
                     "decoder": self.decoder.init(k2, jnp.zeros((1, self.code_size)))["params"]}}
    if previous is not None:  # grow: copy the previous stage, new units start silent
      old = previous["params"]["ae"]
      enc, dec = params["ae"]["encoder"], params["ae"]["decoder"]
      n = old["decoder"]["Dense_0"]["kernel"].shape[0]
      enc["Dense_0"] = old["encoder"]["Dense_0"]
      enc["Dense_1"] = {"kernel": enc["Dense_1"]["kernel"].at[:, :n].set(
          old["encoder"]["Dense_1"]["kernel"]),
          "bias": enc["Dense_1"]["bias"].at[:n].set(old["encoder"]["Dense_1"]["bias"])}
      dec["Dense_0"] = {"kernel": jnp.zeros_like(dec["Dense_0"]["kernel"]).at[:n].set(
          old["decoder"]["Dense_0"]["kernel"]), "bias": old["decoder"]["Dense_0"]["bias"]}
      dec["Dense_1"] = old["decoder"]["Dense_1"]
    return base.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                           opt_state={"ae": self.tx["ae"].init(params["ae"])}, rng=k3)

  def loss(self, ae, x):
    x_hat = self.decoder.apply({"params": ae["decoder"]},
                               self.encoder.apply({"params": ae["encoder"]}, x))
    return jnp.mean(jnp.square(x_hat - x))

  def train_step(self, state, batch, rng):
    loss, grads = jax.value_and_grad(self.loss)(state.params["ae"], batch[self.key])
    grads = base.pmean({"ae": grads}, self.axis_name)
    params, opt = base.update_groups(self.tx, grads, state.opt_state, state.params)
    return (state.replace(step=state.step + 1, params=params, opt_state=opt),
            base.pmean({"loss_rec": loss}, self.axis_name))

  def encode(self, params, stats, x):
    return self.encoder.apply({"params": params["ae"]["encoder"]}, x)

  def decode(self, params, stats, code):
    return self.decoder.apply({"params": params["ae"]["decoder"]}, code)

  def code_parts(self):
    return {"first": slice(0, 2), "rest": slice(2, self.code_size)}

  def eval_images(self, params, stats, x):
    return {"reconstruction": jnp.stack([x[:4], self.decode(params, stats,
                                                             self.encode(params, stats, x[:4]))])}

  @classmethod
  def stages(cls, config, steps_per_epoch):
    out = []
    for i, code in enumerate((4, 6)):
      c = ml_collections.ConfigDict(config.to_dict())
      del c["stages"]
      c.model.code_size = code
      c.train.steps = int(config.stages.steps)
      out.append(base.Stage(f"stage_{i}", c, from_previous=i > 0, description=f"code {code}"))
    return out

  @classmethod
  def stage_row(cls, stage, summary):
    return {"code_size": int(stage.config.model.code_size),
            "test_mse": float(summary["eval"]["results"]["reconstruction_mse"]["mse"])}

  @classmethod
  def stage_table(cls, rows):
    return "\n".join(f"| {r['stage']} | {r['code_size']} | {r['test_mse']:.4f} |" for r in rows)


methods.register("plain_autoencoder", PlainAutoencoder)  # the one line


def _config(steps=6):
  c = ml_collections.ConfigDict()
  c.method = "plain_autoencoder"
  c.seed = 0
  c.num_devices = 2
  c.tensorboard = False
  c.progress_bar = False
  c.data = ml_collections.ConfigDict(dict(name="tiny_shapes", image_size=16,
                                          value_range=(-1.0, 1.0), pairing=None))
  c.model = ml_collections.ConfigDict(dict(code_size=4, input_shape=(16, 16, 3)))
  c.train = ml_collections.ConfigDict(dict(batch_size=16, steps=steps, log_every=1, save_every=3,
                                           eval_every=0, keep_checkpoints=5))
  c.eval = ml_collections.ConfigDict(dict(
      metrics=("retrieval_map", "reconstruction_mse"), factors=("colour", "size"), split="test",
      sample_split="validation", num_grid_images=4, at_end=True))
  return c


def _steps(workdir):
  return [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_a_method_defined_outside_djax_trains_evaluates_draws_and_resumes(tmp_path):
  wd = str(tmp_path / "run")
  c = _config()
  out = train.train_and_evaluate(c, wd)
  assert out["train_step_traces"] == 1  # compiled once, log and save steps included
  ev = json.load(open(os.path.join(wd, "eval.json")))
  assert set(ev["results"]) == {"retrieval_map", "reconstruction_mse"}
  assert ev["headline"]["reconstruction_mse"] == out["eval"]["headline"]["reconstruction_mse"]
  assert "map[all]/colour" in ev["headline"] or any(k.startswith("map[") for k in ev["headline"])
  assert any(f.startswith("reconstruction_") for f in os.listdir(os.path.join(wd, "samples")))
  # Resume: drop the last checkpoint, rerun; the final parameters are the uninterrupted ones.
  like = train.create_state(methods.create(c), c, _data(c))
  from djax import checkpoint
  final = checkpoint.Checkpointer(os.path.join(wd, "checkpoints")).restore(like)[0]
  shutil.rmtree(os.path.join(wd, "checkpoints", "6"))
  train.train_and_evaluate(c, wd)
  again = checkpoint.Checkpointer(os.path.join(wd, "checkpoints")).restore(like)[0]
  jax.tree_util.tree_map(np.testing.assert_array_equal, final.params, again.params)


def _data(c):
  from djax.data import pipeline
  return pipeline.get_dataset(c.data, "train", batch_size=c.train.batch_size, num_devices=1,
                              seed=c.seed)


def test_two_stages_the_second_started_from_the_first(tmp_path):
  c = _config()
  c.stages = ml_collections.ConfigDict(dict(steps=4))
  out = stages.main(c, str(tmp_path / "run"))
  assert [r["code_size"] for r in out["rows"]] == [4, 6]
  # The grown stage starts as the first stage's function: its first loss is the first
  # stage's last loss (the next batch differs, so compare with a tolerance).
  s0 = [json.loads(l) for l in open(tmp_path / "run" / "stage_0" / "metrics.jsonl")]
  s1 = [json.loads(l) for l in open(tmp_path / "run" / "stage_1" / "metrics.jsonl")]
  assert s1[0]["loss_rec"] < s0[0]["loss_rec"]
  assert "| 1 | 6 |" in open(tmp_path / "run" / "table.md").read()
  # A finished run is skipped on a rerun.
  again = stages.main(c, str(tmp_path / "run"))
  assert again["rows"] == json.loads(json.dumps(out["rows"]))


def test_a_metric_the_method_cannot_support_fails_before_training(tmp_path):
  class EncoderOnly(PlainAutoencoder):
    decode = None
  methods.register("encoder_only", EncoderOnly)
  c = _config()
  c.method = "encoder_only"
  c.eval.metrics = ("reconstruction_mse",)
  with pytest.raises(ValueError, match="reconstruction_mse.*'decode' capability"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
  assert base.capabilities(EncoderOnly) == {"code_parts", "eval_images", "stages"}


def test_points_train_and_evaluate_through_the_same_loop(tmp_path):
  c = _config(steps=4)
  c.data = ml_collections.ConfigDict(dict(name="three_moons", pairing=None, input_key="point"))
  c.model = ml_collections.ConfigDict(dict(code_size=4, input_shape=(2,)))
  c.eval.factors = ("label",)
  c.eval.metrics = ("linear_probe", "reconstruction_mse")
  c.eval.split = c.eval.sample_split = "test"
  c.eval.probe_split = "train"
  out = train.train_and_evaluate(c, str(tmp_path / "run"))
  res = out["eval"]["results"]
  assert res["reconstruction_mse"]["num_images"] == 3000
  assert res["linear_probe"]["accuracy"]["label"] > 0.5  # chance 1/3; x carries the label


def test_no_two_djax_modules_import_each_other():
  """The import graph of the djax package (every import, module-level or in a function)
  has no cycle."""
  root = os.path.dirname(djax.__file__)
  names = {m.name for m in pkgutil.walk_packages([root], "djax.")} | {"djax"}
  graph = {}
  for name in names:
    path = os.path.join(root, *name.split(".")[1:])
    path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
    deps = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        deps |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module:
        # ``from pkg import submodule`` imports the submodule; ``from mod import name``, mod.
        subs = {f"{node.module}.{a.name}" for a in node.names} & names
        deps |= subs or {node.module}
    # A module's own packages are imported before it by Python itself: not an edge.
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    graph[name] = {d for d in deps if d in names and d != name and d not in parents}

  def cycle_from(start):
    stack, seen = [(start, [start])], set()
    while stack:
      node, path = stack.pop()
      for nxt in graph[node]:
        if nxt == start:
          return path + [start]
        if nxt not in seen:
          seen.add(nxt)
          stack.append((nxt, path + [nxt]))
    return None

  cycles = [c for c in map(cycle_from, sorted(graph)) if c]
  assert not cycles, f"import cycles: {cycles[:3]}"
  assert not any(n.startswith("djax.methods") for n in graph["djax.stages"] - {"djax.methods"})
