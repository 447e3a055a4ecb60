"""Samplers: each tested on its defining property, alone and through the Pipeline."""

import ml_collections
import numpy as np
import pytest

from djax.data import pipeline, samplers

LABELS = np.repeat(np.arange(5), [1, 7, 20, 3, 9])  # unbalanced, one singleton class
RNG = np.random.default_rng


def _shuffled_labels():
  return LABELS[np.random.default_rng(1).permutation(len(LABELS))]


def test_label_index_groups_by_label():
  labels = _shuffled_labels()
  index = samplers.LabelIndex(labels)
  for c in range(len(index.classes)):
    members = index.order[index.start[c]:index.start[c] + index.count[c]]
    assert (labels[members] == index.classes[c]).all()
    assert (index.rank[members] == np.arange(len(members))).all()


def test_same_label_partners_share_the_label_and_are_others():
  labels = _shuffled_labels()
  index = samplers.LabelIndex(labels)
  anchors = np.tile(np.arange(len(labels)), 50)
  partner = index.same(anchors, RNG(0))
  assert (labels[partner] == labels[anchors]).all()
  alone = labels[anchors] == 0  # the singleton class: its only member is itself
  assert (partner[~alone] != anchors[~alone]).all() and (partner[alone] == anchors[alone]).all()
  # uniform over the other members of the class: every one of them is drawn
  big = np.flatnonzero(labels == 2)
  a = np.full(20000, big[0])
  drawn = np.bincount(index.same(a, RNG(1)), minlength=len(labels))[big]
  assert drawn[0] == 0 and (drawn[1:] > 0).all()
  assert drawn[1:].std() / drawn[1:].mean() < 0.2


def test_different_label_partners_have_another_label():
  labels = _shuffled_labels()
  index = samplers.LabelIndex(labels)
  anchors = np.tile(np.arange(len(labels)), 50)
  partner = index.different(anchors, RNG(0))
  assert (labels[partner] != labels[anchors]).all()
  # uniform over all examples of other classes
  a = np.full(40000, np.flatnonzero(labels == 2)[0])
  counts = np.bincount(index.different(a, RNG(2)), minlength=len(labels))
  outside = labels != 2
  assert (counts[~outside] == 0).all() and (counts[outside] > 0).all()
  assert counts[outside].std() / counts[outside].mean() < 0.2


def test_same_or_different_says_which():
  labels = _shuffled_labels()
  index = samplers.LabelIndex(labels)
  anchors = np.tile(np.arange(len(labels)), 20)
  partner, same = index.same_or_different(anchors, RNG(3))
  assert (labels[partner][same] == labels[anchors][same]).all()
  assert (labels[partner][~same] != labels[anchors][~same]).all()
  assert 0.4 < same.mean() < 0.6


def test_triplets_are_mathieus():
  labels = _shuffled_labels()
  index = samplers.LabelIndex(labels)
  x1 = np.arange(len(labels))
  x1p, x2 = samplers.triplets(index, x1, RNG(4))
  big = labels[x1] != 0
  assert (labels[x1p] == labels[x1]).all() and (x1p[big] != x1[big]).all()
  assert (labels[x2] != labels[x1]).all()


def test_random_other_is_never_the_anchor_and_uniform():
  anchors = np.tile(np.arange(10), 5000)
  partner = samplers.random_other(10, anchors, RNG(5))
  assert (partner != anchors).all() and partner.min() >= 0 and partner.max() <= 9
  counts = np.bincount(partner[anchors == 3], minlength=10)
  assert counts[3] == 0 and counts.sum() == 5000 and counts[counts > 0].std() < 60


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 1.0])
def test_labelled_mask_is_a_fixed_stratified_fraction(fraction):
  labels = _shuffled_labels()
  mask = samplers.labelled_mask(labels, fraction, seed=7)
  np.testing.assert_array_equal(mask, samplers.labelled_mask(labels, fraction, seed=7))
  for c, n in zip(*np.unique(labels, return_counts=True)):
    k = mask[labels == c].sum()
    assert k == (max(round(fraction * n), 1) if fraction > 0 else 0)
  if 0 < fraction < 1:
    assert not np.array_equal(mask, samplers.labelled_mask(labels, fraction, seed=8))


def test_epoch_stream_is_a_permutation_per_epoch_and_drops_the_rest():
  n, b = 23, 5
  steps = n // b
  for epoch in range(3):
    seen = np.concatenate([samplers.epoch_batch_indices(n, b, 0, epoch * steps + s)
                           for s in range(steps)])
    assert len(set(seen)) == steps * b  # no repeats inside an epoch; 3 examples dropped
  np.testing.assert_array_equal(samplers.epoch_batch_indices(n, b, 0, 7),
                                samplers.epoch_batch_indices(n, b, 0, 7))


# ------------------------------------------------------------------------- through Pipeline


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(name="tiny_shapes", image_size=16, value_range=(-1.0, 1.0),
                                     data_dir="", manual_dir="", in_memory_max_gb=4.0))
  c.update(kw)
  return c


def _get(pairing=None, seed=0, batch_size=8, num_devices=2, **kw):
  return pipeline.get_dataset(_cfg(**kw), "train", batch_size=batch_size,
                              num_devices=num_devices, seed=seed, pairing=pairing)


def test_random_pairing_is_unchanged():
  """'random' still gives exactly the foundation's batches (resumed runs depend on it)."""
  p = _get("random", seed=5)
  source = p.source
  for step in (0, 3, p.steps_per_epoch + 1):
    epoch, pos = divmod(step, p.steps_per_epoch)
    sl = slice(pos * 8, pos * 8 + 8)
    i1 = np.random.default_rng([5, epoch, 0]).permutation(len(source))[sl]
    i2 = np.random.default_rng([5, epoch, 1]).permutation(len(source))[sl]
    b = pipeline.unshard(p.batch(step))
    assert set(b) == {"image", "image2", "labels"}
    np.testing.assert_array_equal(
        b["image"], pipeline.to_model_images(source.take(i1)["image"], 16))
    np.testing.assert_array_equal(
        b["image2"], pipeline.to_model_images(source.take(i2)["image"], 16))
    np.testing.assert_array_equal(b["labels"]["colour"], source.take(i1)["colour"])


@pytest.mark.parametrize("pairing", ["same_label", "different_label", "same_or_different",
                                     "random_other"])
def test_pair_samplers_in_batches(pairing):
  p = _get(pairing, label_key="colour")
  b = pipeline.unshard(p.batch(2))
  assert b["image2"].shape == b["image"].shape == (8, 16, 16, 3)
  a, o = b["labels"]["colour"], b["labels2"]["colour"]
  if pairing == "same_label":
    assert (a == o).all()
  elif pairing == "different_label":
    assert (a != o).all()
  elif pairing == "same_or_different":
    assert ((a == o) == b["same"]).all()
  else:
    assert not np.array_equal(b["image"], b["image2"])
  np.testing.assert_array_equal(pipeline.unshard(_get(pairing, label_key="colour").batch(2))["image2"],
                                b["image2"])


def test_triplet_batches():
  b = pipeline.unshard(_get("triplet", label_key="size").batch(1))
  assert {"image", "image_same", "image_other", "labels_same", "labels_other"} <= set(b)
  assert (b["labels_same"]["size"] == b["labels"]["size"]).all()
  assert (b["labels_other"]["size"] != b["labels"]["size"]).all()


def test_label_pairing_without_a_label_key_says_which_to_set():
  with pytest.raises(ValueError, match="label_key.*colour"):
    _get("same_label")


def _numbered(n, offset):
  images = np.zeros((n, 4, 4, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n) % 256
  return {"image": images, "idx": np.arange(n) + offset}


def test_reference_stream_comes_from_the_reference_split():
  from djax.data import registry
  registry.register_arrays("numbered", {"unlabelled": _numbered(40, 0),
                                        "reference": _numbered(24, 1000)}, {"idx": 2000})
  cfg = _cfg(name="numbered", image_size=4)
  p = pipeline.get_dataset(cfg, "unlabelled", batch_size=8, num_devices=2, seed=0,
                           pairing="reference")
  assert p.steps_per_epoch == 5
  ref_ids, ids = [], []
  for step in range(6):  # 3 reference batches = one pass over the 24 reference examples
    b = pipeline.unshard(p.batch(step))
    assert b["image_ref"].shape == (8, 4, 4, 1)
    assert (b["labels"]["idx"] < 1000).all()
    ref_ids.append(b["labels_ref"]["idx"])
    ids.append(b["labels"]["idx"])
  assert sorted(np.concatenate(ref_ids[:3])) == list(range(1000, 1024))
  assert sorted(np.concatenate(ref_ids[3:])) == list(range(1000, 1024))
  assert sorted(np.concatenate(ids[:5])) == list(range(40))  # its own epochs: 5 steps
  with pytest.raises(ValueError, match="unknown pairing"):
    _get("no_such_pairing")


def test_labelled_fraction_masks_labels_and_carries_the_mask():
  p = _get(label_key="colour", labelled_fraction=0.25, batch_size=64)
  for step in range(p.steps_per_epoch):
    b = pipeline.unshard(p.batch(step))
    m = b["label_mask"]
    assert (b["labels"]["colour"][~m] == -1).all() and (b["labels"]["colour"][m] >= 0).all()
  assert abs(p.labelled.mean() - 0.25) < 0.02
  # the same examples are labelled in every epoch
  idx = p.global_indices(p.steps_per_epoch + 2, 0)
  b = pipeline.unshard(p.batch(p.steps_per_epoch + 2))
  np.testing.assert_array_equal(b["label_mask"], p.labelled[idx])


def test_sequential_pads_the_last_batch():
  q = pipeline.get_dataset(_cfg(), "test", batch_size=40, num_devices=2, seed=0)  # 96 examples
  batches = [pipeline.unshard(b) for b in q.sequential()]
  assert [int(b["valid"].sum()) for b in batches] == [40, 40, 16]
  assert all(b["image"].shape[0] == 40 for b in batches)
  got = np.concatenate([b["image"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(got, pipeline.to_model_images(q.source.arrays["image"], 16))
  assert q.steps_per_epoch == 96 // 40  # training batches drop the partial one
