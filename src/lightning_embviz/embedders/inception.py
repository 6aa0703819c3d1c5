"""The FID Inception-v3 network in plain torch: 2048-d pool features, standard weights file.

FID is defined on one specific network: the TensorFlow Inception-v3 graph of 2015-12-05
that the original FID code (Heusel et al., 2017) loaded, ported to PyTorch by pytorch-fid
and torch-fidelity. That port differs from torchvision's ImageNet Inception-v3 in four
places, all kept here: the average pools of the A, C and first E blocks do not count the
zero padding (TensorFlow's ``AVG`` pool), the last E block pools with a max instead of an
average, the classifier has 1008 outputs, and inputs are resized the way TensorFlow 1.x
``resize_bilinear`` does (no half-pixel offset) and normalized as ``(x - 128) / 128``.

The module's parameter names follow those ports, so its ``state_dict`` loads the standard
weights file ``pt_inception-2015-12-05-6726825d.pth`` (torch-fidelity ships the same file
as ``weights-inception-2015-12-05-6726825d.pth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_embviz.embedders.base import Embedder, as_image_batch, images_to_float255

__all__ = ["FID_WEIGHTS_URL", "FIDInceptionV3", "inception", "resize_bilinear_tf1"]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
"""Where ``inception()`` downloads the standard FID weights (sha256 prefix ``6726825d``)."""

INPUT_SIZE = 299


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in TensorFlow) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 "SAME" average pool divides by the number of real pixels under the
    # window, not by 9: count_include_pad=False.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = _ConvBN(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = _ConvBN(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, kernel_size=3, padding=1)
        self.branch_pool = _ConvBN(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                double,
                self.branch_pool(_avg_pool_tf(x)),
            ],
            dim=1,
        )


class _ReductionB(nn.Module):
    """35x35 -> 17x17: strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [self.branch3x3(x), double, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class _BlockC(nn.Module):
    """17x17 block with factorized 7x7 convolutions (1x7 then 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = (
            {"kernel_size": (1, 7), "padding": (0, 3)},
            {"kernel_size": (7, 1), "padding": (3, 0)},
        )
        self.branch1x1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = _ConvBN(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = _ConvBN(c7, c7, **row)
        self.branch7x7_3 = _ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = _ConvBN(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = _ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = _ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = _ConvBN(c7, 192, **row)
        self.branch_pool = _ConvBN(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            double = layer(double)
        return torch.cat(
            [self.branch1x1(x), single, double, self.branch_pool(_avg_pool_tf(x))], dim=1
        )


class _ReductionD(nn.Module):
    """17x17 -> 8x8: strided 3x3, factorized 7x7 then strided 3x3, and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = _ConvBN(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = _ConvBN(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                seven,
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class _BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; ``pool`` is "avg" (7b) or "max" (7c)."""

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        row, col = (
            {"kernel_size": (1, 3), "padding": (0, 1)},
            {"kernel_size": (3, 1), "padding": (1, 0)},
        )
        self.pool = pool
        self.branch1x1 = _ConvBN(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = _ConvBN(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = _ConvBN(384, 384, **row)
        self.branch3x3_2b = _ConvBN(384, 384, **col)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, **row)
        self.branch3x3dbl_3b = _ConvBN(384, 384, **col)
        self.branch_pool = _ConvBN(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "avg":
            pooled = _avg_pool_tf(x)
        else:
            # The 2015 TensorFlow graph max-pools here (unlike the Inception-v3 paper).
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize like TensorFlow 1.x ``tf.image.resize_bilinear`` (``align_corners=False``).

    Output pixel ``i`` samples the input at ``i * in_size / out_size``, with no half-pixel
    offset (PyTorch's ``F.interpolate`` uses ``(i + 0.5) * scale - 0.5``), and neighbours
    clamped at the last row and column. This is the resize inside the FID graph.

    Args:
        images: (B, C, H, W) float.
        size: (out_H, out_W).

    Returns:
        (B, C, out_H, out_W), the same dtype.
    """
    out_h, out_w = size
    in_h, in_w = images.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return images

    def taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Source positions in float32, as TensorFlow computes them.
        scale = torch.tensor(in_size / out_size, dtype=torch.float32)
        source = torch.arange(out_size, dtype=torch.float32) * scale
        low = source.long()  # source >= 0: truncation is floor
        high = (low + 1).clamp_max(in_size - 1)
        return low.to(images.device), high.to(images.device), (source - low).to(images)

    y_low, y_high, dy = taps(in_h, out_h)
    x_low, x_high, dx = taps(in_w, out_w)
    top = images.index_select(-2, y_low)
    bottom = images.index_select(-2, y_high)
    top_left, top_right = top.index_select(-1, x_low), top.index_select(-1, x_high)
    bottom_left, bottom_right = bottom.index_select(-1, x_low), bottom.index_select(-1, x_high)
    upper = top_left + (top_right - top_left) * dx
    lower = bottom_left + (bottom_right - bottom_left) * dx
    return upper + (lower - upper) * dy.unsqueeze(-1)


class FIDInceptionV3(Embedder):
    """The FID Inception-v3: images in, the 2048-d pool features FID is computed on.

    Input: uint8 (B, C, H, W) in [0, 255] or floating in [0, 1] (multiplied by 255 without
    rounding, so ``x / 255`` gives the features of ``x``), any H and W; C = 1 (grayscale) is
    repeated to RGB. Images are resized to 299x299 as TensorFlow 1.x does
    (:func:`resize_bilinear_tf1`) and normalized as ``(x - 128) / 128``.

    Output: (B, 2048) float32, the average pool after the last block (``pool3`` in TF FID).

    Build it with :func:`inception`, which loads the weights; ``fc`` (1008 classes) is part
    of the module only so that the standard weights file loads strictly.
    """

    def __init__(self) -> None:
        super().__init__(dim=2048, modality="image")
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, kernel_size=3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b = _BlockC(768, channels_7x7=128)
        self.Mixed_6c = _BlockC(768, channels_7x7=160)
        self.Mixed_6d = _BlockC(768, channels_7x7=160)
        self.Mixed_6e = _BlockC(768, channels_7x7=192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b = _BlockE(1280, pool="avg")
        self.Mixed_7c = _BlockE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)
        self._freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Check, resize and normalize images as the FID graph does.

        Args:
            images: uint8 (B, C, H, W) in [0, 255] or floating in [0, 1]; C in (1, 3);
                (B, H, W) is grayscale.

        Returns:
            (B, 3, 299, 299) in the module's dtype and on its device, ``(x - 128) / 128``
            of the resized 0..255 values.

        Raises:
            TypeError: for another dtype.
            ValueError: for another layout, or floating values outside [0, 1].
        """
        checked = as_image_batch(images, "inception()")
        dtype = self.Conv2d_1a_3x3.conv.weight.dtype
        x = images_to_float255(checked.to(self.device)).to(dtype)
        x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
        return (x - 128.0) / 128.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            images: uint8 (B, C, H, W) in [0, 255] or floating in [0, 1]; C in (1, 3);
                (B, H, W) is grayscale.

        Returns:
            (B, 2048) float32 on the module's device.

        Raises:
            TypeError: for another dtype.
            ValueError: for another layout, or floating values outside [0, 1].
        """
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3)).to(torch.float32)


def _check_state_dict(state: Any, module: nn.Module, source: str) -> Mapping[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} does not hold a state dict, it holds a {type(state).__name__}.")
    # BatchNorm's step counters are not part of the weights: files with or without them load.
    expected = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    present = {k for k in state if not str(k).endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} is not an FID Inception-v3 weights file: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]}. Expected pt_inception-2015-12-05-6726825d.pth."
        )
    return {k: v for k, v in state.items() if k in expected}


def inception(
    weights: str | Path | None = None, *, device: torch.device | str | None = None
) -> FIDInceptionV3:
    """The FID Inception-v3 embedder (2048-d), with the standard FID weights.

    Args:
        weights: path of the weights file (``pt_inception-2015-12-05-6726825d.pth``, or
            torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``), or ``None`` to
            download it once into torch's hub cache (``$TORCH_HOME/hub/checkpoints``),
            checking its sha256 prefix ``6726825d``.
        device: where to put the module (default: the CPU).

    Returns:
        A frozen :class:`FIDInceptionV3` in eval mode: uint8 (B, C, H, W) or floating
        [0, 1] images in, (B, 2048) float32 out.

    Raises:
        FileNotFoundError: if ``weights`` does not exist.
        ValueError: if the file is not the FID Inception weights file.

    Example::

        >>> from lightning_embviz import embedders
        >>> net = embedders.inception("pt_inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
        >>> net(torch.zeros(4, 3, 64, 64, dtype=torch.uint8)).shape  # doctest: +SKIP
        torch.Size([4, 2048])
    """
    # Build without random initialization (every tensor is overwritten by the file): on
    # the meta device, then allocated; BatchNorm's step counters are the only other state.
    with torch.device("meta"):
        module = FIDInceptionV3()
    module = module.to_empty(device="cpu")
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d) and layer.num_batches_tracked is not None:
            layer.num_batches_tracked.zero_()
    if weights is None:
        source = FID_WEIGHTS_URL
        state = torch.hub.load_state_dict_from_url(
            FID_WEIGHTS_URL, map_location="cpu", progress=False, check_hash=True
        )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"`inception(weights={str(weights)!r})`: no such file. Pass the path of "
                "pt_inception-2015-12-05-6726825d.pth, or weights=None to download it."
            )
        source = str(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(_check_state_dict(state, module, source), strict=False)
    if device is not None:
        module.to(device)
    return module
