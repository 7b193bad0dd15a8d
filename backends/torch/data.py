"""Training data: sklearn's digits, .npz files and image folders, fitted to a design's input and output.

`load_samples(spec, design, loss)` reads the data, resizes images where that is meaningful (digits and
image folders), checks every sample against the design's input shape and every label against the
output width, and returns float inputs with the targets the loss consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError
from convstudio.ir.shapes import infer_shapes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASS_LOSSES = ("cross_entropy", "triplet")
REGRESSION_LOSSES = ("l1", "mse", "smooth_l1")


@dataclass
class Samples:
    """Inputs fitted to the design, targets for the loss, and class labels when the data has them."""

    x: np.ndarray  # float32, (N, *input_shape)
    targets: np.ndarray  # int64 labels (cross_entropy, triplet) or float32 (bce, regression)
    labels: np.ndarray | None  # int64 class labels, (N,)
    source: str

    def __len__(self) -> int:
        return len(self.x)


def io_shapes(design: Design) -> tuple[list[tuple], list[tuple]]:
    """Per-sample shapes of the design's inputs and outputs (graph order)."""
    graph = design.graph
    infer_shapes(graph, strict=True)
    return [graph.nodes[n].meta["shapes"][0] for n in graph.inputs], [graph.nodes[n].meta["shapes"][0] for n in graph.outputs]


def resolve_data_path(spec: str, design: Design) -> Path:
    """A data path as given (relative to the working folder), else relative to the design's folder."""
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute() or design.path is None:
        return path
    beside = design.path.parent / path
    return beside if beside.exists() else path


def read_raw(spec: str, design: Design, image_shape: tuple | None) -> tuple[np.ndarray, np.ndarray, str, bool]:
    """(x, y, source name, resizable) from 'digits', an .npz file or a folder of class subfolders."""
    if spec == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
        return x, digits.target.astype(np.int64), "digits", True
    path = resolve_data_path(spec, design)
    where = f"dataset '{spec}'"
    if not path.exists():
        raise DesignError("no such file or folder", where)
    if path.is_dir():
        return (*read_image_folder(path, image_shape, where), str(path), True)
    if path.suffix.lower() != ".npz":
        raise DesignError("must be 'digits', a .npz file or an image folder", where)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data or "y" not in data:
                raise DesignError(f"an .npz dataset needs arrays 'x' and 'y', found {', '.join(data.files) or 'none'}", where)
            x, y = np.asarray(data["x"]), np.asarray(data["y"])
    except (OSError, ValueError) as e:
        raise DesignError(f"cannot read ({str(e).splitlines()[0]})", where) from None
    if len(x) != len(y):
        raise DesignError(f"x has {len(x)} samples but y has {len(y)}", where)
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise DesignError("arrays 'x' and 'y' must be numeric", where)
    return x.astype(np.float32), y, str(path), False


def read_image_folder(folder: Path, image_shape: tuple | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images under class subfolders (sorted names = labels 0..K-1), resized to the input's HxW."""
    from PIL import Image, UnidentifiedImageError

    if image_shape is None or len(image_shape) != 3:
        raise DesignError("an image folder needs a design whose input is CxHxW", where)
    channels, height, width = image_shape
    if channels not in (1, 3):
        raise DesignError(f"images load as 1 or 3 channels, the design's input has {channels}", where)
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, class_dir in enumerate(classes):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as e:
                raise DesignError(f"cannot read image ({str(e).splitlines()[0]})", f"file '{file}'") from None
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DesignError("no PNG or JPEG images in class subfolders", where)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def fit_inputs(x: np.ndarray, shape: tuple, resizable: bool, source: str, input_name: str) -> np.ndarray:
    """Inputs of exactly the design's per-sample shape; images are resized (and gray repeated) when allowed."""
    have = tuple(x.shape[1:])
    if have == shape:
        return x
    if resizable and x.ndim == 4 and len(shape) == 3 and have[0] in (1, shape[0]):
        t = torch.from_numpy(np.ascontiguousarray(x))
        if have[1:] != shape[1:]:
            t = F.interpolate(t, size=shape[1:], mode="bilinear", align_corners=False)
        return t.expand(-1, shape[0], -1, -1).contiguous().numpy()
    raise DesignError(f"samples are {list(have)} but the design's input '{input_name}' is {list(shape)}", f"dataset '{source}'")


def class_labels(y: np.ndarray, source: str) -> np.ndarray | None:
    """y as int64 class labels when it is a 1-d array of whole numbers, else None."""
    if y.ndim != 1 or not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
        return None
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise DesignError(f"class labels must be >= 0, found {labels.min()}", f"dataset '{source}'")
    return labels


def check_label_range(labels: np.ndarray, width: int, where: str) -> None:
    if labels.max() >= width:
        raise DesignError(f"label {labels.max()} is out of range for the output width {width} (labels must be 0..{width - 1})", where)


def make_targets(y: np.ndarray, labels: np.ndarray | None, loss: str, out_shape: tuple, source: str) -> np.ndarray:
    """The target array the loss consumes, checked against the output shape."""
    where = f"dataset '{source}'"
    width = out_shape[0] if len(out_shape) == 1 else None
    if loss in CLASS_LOSSES:
        if labels is None:
            raise DesignError(f"loss '{loss}' needs integer class labels in y (1-d)", where)
        if loss == "cross_entropy":
            if width is None:
                raise DesignError(f"cross_entropy needs an output of shape [classes], the design's is {list(out_shape)}", where)
            check_label_range(labels, width, where)
        return labels
    if labels is not None and width is not None:
        if width == 1:
            if loss == "bce" and labels.max() > 1:
                raise DesignError(f"label {labels.max()} is out of range for one output logit (binary labels must be 0 or 1)", where)
            return labels.astype(np.float32)[:, None]
        check_label_range(labels, width, where)
        return np.eye(width, dtype=np.float32)[labels]
    target = y.astype(np.float32)
    if target.ndim == 1 and out_shape == (1,):
        target = target[:, None]
    if tuple(target.shape[1:]) != tuple(out_shape):
        raise DesignError(f"targets are {list(target.shape[1:])} but the design's output is {list(out_shape)}", where)
    if loss == "bce" and (target.min() < 0 or target.max() > 1):
        raise DesignError("bce targets must lie in [0, 1]", where)
    return target


def load_samples(spec: str, design: Design, loss: str) -> Samples:
    """Read the dataset `spec` and fit it to the design for `loss`; errors name the dataset and what is off."""
    in_shapes, out_shapes = io_shapes(design)
    graph = design.graph
    triplet = loss == "triplet"
    if triplet:
        if len(in_shapes) not in (1, 3) or len(set(in_shapes)) != 1 or len(out_shapes) != len(in_shapes):
            raise DesignError("triplet loss needs an embedding design with 1 input and 1 output, or 3 same-shaped inputs and 3 outputs",
                              f"design '{design.name}'")
    elif len(in_shapes) != 1 or len(out_shapes) != 1:
        raise DesignError(f"loss '{loss}' needs a design with one input and one output "
                          f"(this one has {len(in_shapes)} and {len(out_shapes)})", f"design '{design.name}'")
    x, y, source, resizable = read_raw(spec, design, in_shapes[0])
    if len(x) == 0:
        raise DesignError("the dataset is empty", f"dataset '{source}'")
    if not np.all(np.isfinite(x)) or (np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y))):
        raise DesignError("the data contains NaN or infinite values", f"dataset '{source}'")
    x = fit_inputs(x, in_shapes[0], resizable, source, graph.inputs[0])
    labels = class_labels(y, source)
    targets = make_targets(y, labels, loss, out_shapes[0], source)
    return Samples(np.ascontiguousarray(x, dtype=np.float32), targets, labels, source)


def split_indices(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of 0..n-1 cut into (train, validation)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_split))
    if n - n_val < 1:
        raise DesignError(f"val_split {val_split} leaves no training samples out of {n}", "training.val_split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def mine_triplets(labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each anchor, a random positive of the same class (another sample when there is one) and a random negative."""
    n = len(labels)
    positives = torch.empty(n, dtype=torch.long)
    negatives = torch.empty(n, dtype=torch.long)
    everyone = torch.arange(n)
    for c in torch.unique(labels):
        members = everyone[labels == c]
        others = everyone[labels != c]
        if len(others) == 0:
            raise DesignError("triplet loss needs at least two classes", "dataset")
        k = len(members)
        slot = torch.arange(k)
        shift = torch.randint(1, max(k, 2), (k,), generator=generator) if k > 1 else torch.zeros(1, dtype=torch.long)
        positives[members] = members[(slot + shift) % k]
        negatives[members] = others[torch.randint(0, len(others), (k,), generator=generator)]
    return positives, negatives
