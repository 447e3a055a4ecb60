"""Tests of djax.data.sprites: the procedural Sprites builder and its renderer."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from djax.data import sprites as S

SPLITS = ("train", "validation", "test")
ATTRS = dict(body=0, skin=0, vest=0, hair=1, arm=0, leg=0, weapon=1)


def _prepare(config, data_dir, manual_dir=None):
  builder = S.Sprites(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return _prepare("tiny", tmp_path_factory.mktemp("tiny_a")).as_data_source()


# ------------------------------------------------------------------------- constants


def test_factor_cardinalities():
  assert S.FACTORS == ("body", "skin", "vest", "hair", "arm", "leg", "weapon", "pose")
  assert S.FACTOR_SIZES == dict(body=2, skin=4, vest=3, hair=6, arm=2, leg=2, weapon=5,
                                pose=178)
  assert S.FACTOR_SIZES == {k: len(v) for k, v in S.FACTOR_NAMES.items()}


def test_pose_table():
  assert len(S.POSES) == 178
  for pose, (action, direction, frame) in enumerate(S.POSES):
    assert S.pose_index(action, direction, frame) == pose
    assert S.decode_pose(pose) == (action, direction, frame)
  counts = {a: sum(p[0] == a for p in S.POSES) for a in S.ACTIONS}
  assert counts == dict(spellcast=28, thrust=32, walk=36, slash=24, shoot=52, hurt=6)
  # Sprite-sheet order: first spellcast facing up, last hurt.
  assert S.POSES[0] == ("spellcast", "up", 0) and S.POSES[7] == ("spellcast", "left", 0)
  assert S.POSES[-1] == ("hurt", "down", 5)


def test_characters_distinct_and_every_value_in_every_split():
  table = S.CHARACTERS
  assert table.shape == (672, 7)
  assert len({tuple(r) for r in table}) == 672
  for split, n in S.SPLIT_SIZES.items():
    ids = S.split_characters(split)
    assert len(ids) == n
    for j, k in enumerate(S.APPEARANCE):
      assert set(table[list(ids), j]) == set(range(S.FACTOR_SIZES[k])), (split, k)
  assert S.character_attributes(5) == dict(zip(S.APPEARANCE, map(int, table[5])))


# ------------------------------------------------------------------------- builder


def test_tiny_splits_shapes_and_labels(tiny):
  poses = S.Sprites.builder_configs["tiny"].poses
  names = S.variant_values(poses)
  seen = {}
  for split in SPLITS:
    ds = tiny[split]
    assert len(ds) == S.SPLIT_SIZES[split] * len(poses)
    examples = ds.__getitems__(list(range(len(ds))))
    seen[split] = {int(e["character"]) for e in examples}
    assert seen[split] == set(S.split_characters(split))
    for e in examples[:50]:
      assert e["image"].shape == (64, 64, 3) and e["image"].dtype == np.uint8
      c, pose = int(e["character"]), int(e["pose_id"])
      assert pose in poses
      assert names["pose"][int(e["pose"])] == S.POSE_NAMES[pose]  # the config's pose names
      assert {k: int(e[k]) for k in S.APPEARANCE} == S.character_attributes(c)
      action, direction, frame = S.decode_pose(pose)
      assert (names["action"][e["action"]], names["direction"][e["direction"]],
              int(names["frame"][e["frame"]])) == (action, direction, frame)
      np.testing.assert_array_equal(e["image"], S.render_character(S.character_attributes(c), pose))
    for e in examples:
      for k in S.APPEARANCE:
        assert 0 <= int(e[k]) < S.FACTOR_SIZES[k]
      for k in ("pose", "direction", "action", "frame"):
        assert 0 <= int(e[k]) < len(names[k])
  assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"]
              or seen["validation"] & seen["test"])


@pytest.mark.parametrize("config,poses,values", [
    ("small", 16, dict(direction=4, action=1, frame=4)),
    ("tiny", 4, dict(direction=3, action=3, frame=3)),
    ("full", 178, dict(direction=4, action=6, frame=13)),
    ("original", 178, dict(direction=4, action=6, frame=13)),
])
def test_each_config_describes_what_it_holds(config, poses, values, tmp_path):
  """The dataset card's facts (description, factor cardinalities) come from the config's
  poses: sprites/small says 16 poses, not the 178 of the sprite sheet. Nothing is prepared:
  the info is the builder's own."""
  info = S.Sprites(config=config, data_dir=str(tmp_path)).info
  assert info.features["pose"].num_classes == len(S.Sprites.builder_configs[config].poses) == poses
  assert {k: info.features[k].num_classes for k in values} == values
  assert f"x {poses} poses" in info.description and "178" not in info.description.replace(
      f"x {poses} poses", "")
  if config == "small":
    assert info.features["action"].names == ["walk"]
    assert info.features["frame"].names == ["1", "3", "5", "7"]
    assert "10,752 images" in info.description
  for k in S.APPEARANCE:  # every character in every config: all appearance values
    assert info.features[k].num_classes == S.FACTOR_SIZES[k]


def test_tiny_is_deterministic(tiny, tmp_path):
  # The record bytes themselves are not comparable (protobuf map order varies per
  # process); the decoded examples, in order, are.
  again = _prepare("tiny", tmp_path).as_data_source()
  for split in SPLITS:
    a, b = tiny[split], again[split]
    assert len(a) == len(b)
    for i in range(0, len(a), 7):
      ea, eb = a[i], b[i]
      assert ea.keys() == eb.keys()
      for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k])


def test_drawing_is_repeatable():
  # Builds in one process share label_map's cache; redraw a few maps from scratch.
  for pose in (0, 60, 100, 177):
    np.testing.assert_array_equal(S._draw_label_map(1, 3, 3, pose), S.label_map(1, 3, 3, pose))


def _write_fake_manual(root, per_split=2):
  rng = np.random.default_rng(0)
  written = {}
  cid = 0
  for split in SPLITS:
    d = root / "sprites" / split
    d.mkdir(parents=True)
    for _ in range(per_split):
      attrs = {k: int(rng.integers(S.FACTOR_SIZES[k])) for k in S.APPEARANCE}
      if cid == 0:  # Reed's 60x60 float frames must be accepted too
        images = rng.random((178, 60, 60, 3), dtype=np.float32)
      else:
        images = rng.integers(0, 256, (178, 64, 64, 3), dtype=np.uint8)
      np.savez(d / f"{cid:04d}.npz", images=images, character=cid * 7, **attrs)
      written[cid * 7] = (images, attrs, split)
      cid += 1
  return written


def test_original_reads_manual_dir(tmp_path):
  written = _write_fake_manual(tmp_path / "manual")
  sources = _prepare("original", tmp_path / "data", manual_dir=str(tmp_path / "manual"))
  sources = sources.as_data_source()
  for split in SPLITS:
    ds = sources[split]
    assert len(ds) == 2 * 178
    for i in range(0, len(ds), 37):
      e = ds[i]
      images, attrs, wsplit = written[int(e["character"])]
      assert wsplit == split
      assert {k: int(e[k]) for k in S.APPEARANCE} == attrs
      expected = images[int(e["pose_id"])]
      if expected.dtype != np.uint8:
        expected = np.pad(np.round(expected.astype(np.float64) * 255).astype(np.uint8),
                          ((2, 2), (2, 2), (0, 0)), mode="edge")
      np.testing.assert_array_equal(e["image"], expected)
      assert int(e["pose"]) == int(e["pose_id"])  # all 178 poses: names as in POSE_NAMES
      assert S.decode_pose(int(e["pose"]))[0] == S.ACTIONS[e["action"]]


# ------------------------------------------------------------------------- rendering


def _regions(attrs, pose):
  return S.label_map(attrs["body"], attrs["hair"], attrs["weapon"], pose)


@pytest.mark.parametrize("factor,labels", [
    ("vest", {S.VEST}), ("skin", {S.SKIN, S.SKIN_FAR}), ("arm", {S.SLEEVE, S.SLEEVE_FAR}),
    ("leg", {S.TROUSER, S.TROUSER_FAR})])
def test_colour_factors_change_only_their_part(factor, labels):
  for pose in (S.pose_index("walk", "down", 3), S.pose_index("slash", "left", 2)):
    part = np.isin(_regions(ATTRS, pose), list(labels))
    a = S.render_character(ATTRS, pose)
    for v in range(1, S.FACTOR_SIZES[factor]):
      b = S.render_character({**ATTRS, factor: v}, pose)
      changed = (a != b).any(-1)
      assert changed.sum() >= 20, (factor, v)
      assert not (changed & ~part).any(), (factor, v)
      # ...and clearly: a large colour difference, not a shade.
      assert np.abs(a[changed].astype(int) - b[changed]).sum(-1).min() >= 60


def test_shape_factors_change_the_silhouette():
  pose = S.pose_index("walk", "down", 0)
  sil = lambda attrs: S.label_map(attrs["body"], attrs["hair"], attrs["weapon"], pose) != S.BG
  width = lambda m: np.ptp(np.flatnonzero(m.any(0)))
  torso_rows = slice(32, 42)
  slim, broad = sil(ATTRS), sil({**ATTRS, "body": 1})
  assert width(broad[torso_rows]) >= width(slim[torso_rows]) + 4
  for k in ("hair", "weapon"):
    images = [S.render_character({**ATTRS, k: v}, pose) for v in range(S.FACTOR_SIZES[k])]
    for i in range(len(images)):
      for j in range(i):
        assert (images[i] != images[j]).any(-1).sum() >= 15, (k, i, j)


def _min_shift_mismatch(a, b, max_shift=10):
  """Fewest differing pixels between b and any translation of a."""
  best = a.size
  for dy in range(-max_shift, max_shift + 1):
    for dx in range(-max_shift, max_shift + 1):
      shifted = np.full_like(a, S.BG)
      src = a[max(0, -dy):a.shape[0] - max(0, dy), max(0, -dx):a.shape[1] - max(0, dx)]
      shifted[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
      best = min(best, int((shifted != b).sum()))
  return best


@pytest.mark.parametrize("first,second", [
    (("walk", "left", 1), ("walk", "left", 3)),
    (("walk", "down", 0), ("walk", "down", 3)),
    (("spellcast", "down", 0), ("spellcast", "down", 3)),
    (("slash", "right", 0), ("slash", "right", 2)),
    (("thrust", "up", 0), ("thrust", "up", 6)),
    (("hurt", "down", 0), ("hurt", "down", 4)),
])
def test_pose_moves_limbs_not_just_a_shift(first, second):
  attrs = {**ATTRS, "weapon": 2}
  a, b = _regions(attrs, S.pose_index(*first)), _regions(attrs, S.pose_index(*second))
  assert _min_shift_mismatch(a, b) >= 25
  # The limbs are what moved.
  moved = a != b
  limbs = np.isin(a, [S.SLEEVE, S.SLEEVE_FAR, S.TROUSER, S.TROUSER_FAR, S.SKIN, S.SKIN_FAR])
  assert (moved & limbs).sum() >= 10


def test_directions_differ():
  frames = {d: _regions(ATTRS, S.pose_index("walk", d, 0)) for d in S.DIRECTIONS}
  assert (frames["down"] == S.EYE).sum() >= 4     # front: two eyes
  assert (frames["up"] == S.EYE).sum() == 0       # back: hair only
  assert (frames["up"] == S.HAIR).sum() > (frames["down"] == S.HAIR).sum()
  for d in ("left", "right"):                     # profile: one eye
    assert 0 < (frames[d] == S.EYE).sum() <= 3
  # The profiles are mirror images in outline, but not identical pictures...
  left, right = frames["left"] != S.BG, frames["right"] != S.BG
  assert (left & right[:, ::-1]).sum() / (left | right[:, ::-1]).sum() > 0.75
  assert (frames["left"] != frames["right"]).sum() >= 100
  # ...and front and profile differ by more than a translation.
  assert _min_shift_mismatch(frames["down"], frames["left"]) >= 100


def test_render_batch_and_range_checks():
  poses = [0, 50, 177]
  attrs = {k: [S.character_attributes(c)[k] for c in (1, 2, 3)] for k in S.APPEARANCE}
  batch = S.render_batch(attrs, poses)
  assert batch.shape == (3, 64, 64, 3) and batch.dtype == np.uint8
  for i, c in enumerate((1, 2, 3)):
    np.testing.assert_array_equal(batch[i], S.render_character(S.character_attributes(c), poses[i]))
  # Plain light background in the corners.
  assert (batch[:, 0, 0] == S.BACKGROUND_RGB).all()
  with pytest.raises(ValueError):
    S.render_character({**ATTRS, "hair": 6}, 0)
  with pytest.raises(ValueError):
    S.render_character(ATTRS, 178)
