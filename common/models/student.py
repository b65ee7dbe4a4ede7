"""Compact semantic encoder: the Table I search space (CLIP ModifiedResNet pattern).

Stem (3x3 convs 3->32 stride 2, 32->32, 32->64, each BN+ReLU; 2x2 avg-pool), four layers of
CLIP Bottleneck blocks (expansion 4; planes 16, 32, 64, 128 -> outputs 64, 128, 256, 512;
strides 1, 2, 2, 2; anti-aliased downsampling: avg-pool before the strided step), and an
AttentionPool2d head (8 heads, the mean token is the only query) -> ``feature_dim`` (512).

KDL-DARTS searches the depth of each layer (Table I: k in 1..max_depth blocks):

* ``MixedLayer`` holds ONE chain of ``max_depth`` Bottleneck blocks. Candidate operation
  ``o^(l,j)`` (Eq. 12) is the chain's first ``j`` blocks, so the chain is computed once and its
  output is tapped after every block.
* Eq. (13): ``y = sum_j softmax(alpha / T)_j * o^(l,j)(x)``.
* Eq. (14): ``x_next = shortcut(x) + y``; the shortcut is the identity where the shapes match
  (layer 1) and CLIP's downsample (AvgPool(stride) + 1x1 conv + BN) where they do not.
  The first block of every chain also has CLIP's own downsample on its residual path, so the
  Eq. (14) shortcut of layers 2-4 is an extra module (+173,824 parameters at the paper size;
  without it depths [1, 2, 2, 2] are exactly CLIP's ModifiedResNet, 1,976,864 parameters).
* ``Student(cfg, depths)`` is the derived fixed-depth network with the same module names, so
  ``derive_student`` copies weights by name and a one-hot mixture equals the derived network.

Initialisation follows CLIP for the attention pool (std = embed_dim ** -0.5) but keeps the
BatchNorm weights at 1 (CLIP zeroes ``bn3``): with zeroed ``bn3`` every depth of a chain gives
the same output at step 0 and the architecture weights would get no gradient.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LAYER_STRIDES = (1, 2, 2, 2)  # Table I: stride of layers 1-4


@dataclass
class StudentConfig:
    input_size: int = 224  # square input side in pixels (paper: 224; presets: 32 / 64)
    stem_widths: tuple[int, int, int] = (32, 32, 64)  # output channels of the 3 stem convs
    planes: tuple[int, int, int, int] = (16, 32, 64, 128)  # Bottleneck width of layers 1-4
    expansion: int = 4  # Bottleneck output channels = planes * expansion
    max_depth: int = 5  # candidate depths 1..max_depth blocks per layer
    feature_dim: int = 512  # semantic feature size h (AttentionPool2d output)
    heads: int = 8  # attention-pool heads

    def __post_init__(self) -> None:
        if len(self.stem_widths) != 3:
            raise ValueError(f"StudentConfig.stem_widths must have 3 entries, got {self.stem_widths}")
        if len(self.planes) != len(LAYER_STRIDES):
            raise ValueError(f"StudentConfig.planes must have 4 entries, got {self.planes}")
        if self.max_depth < 1:
            raise ValueError(f"StudentConfig.max_depth must be >= 1, got {self.max_depth}")
        if self.embed_dim % self.heads:
            raise ValueError(f"StudentConfig.heads={self.heads} must divide the attention-pool "
                             f"width planes[-1]*expansion={self.embed_dim}")
        if self.input_size < 32 or self.grid_size < 1:
            raise ValueError(f"StudentConfig.input_size must be >= 32 (overall stride 32), got {self.input_size}")

    @property
    def embed_dim(self) -> int:  # channels entering the attention pool
        return self.planes[-1] * self.expansion

    @property
    def grid_size(self) -> int:  # spatial side after stem + pool + strided layers
        g = (self.input_size + 1) // 2  # stem conv1: k3, s2, p1
        g //= 2  # stem 2x2 avg-pool
        for s in LAYER_STRIDES:
            g //= s
        return g


class Stem(nn.Module):
    def __init__(self, widths: tuple[int, int, int]):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(3, w1, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, w3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w3)
        self.avgpool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, w3, H/4, W/4]
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        return self.avgpool(x)


def downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """CLIP's downsample: avg-pool first, then a stride-1 1x1 conv + BN."""
    return nn.Sequential(OrderedDict([
        ("-1", nn.AvgPool2d(stride)),
        ("0", nn.Conv2d(inplanes, outplanes, 1, bias=False)),
        ("1", nn.BatchNorm2d(outplanes)),
    ]))


class Bottleneck(nn.Module):
    """CLIP Bottleneck: 1x1 -> 3x3 -> avg-pool(stride) -> 1x1 (x expansion), residual, ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, expansion: int = 4):
        super().__init__()
        out = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = downsample(inplanes, out, stride) if stride > 1 or inplanes != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, H, W] -> [B, Cout, H/s, W/s]
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP attention pool: mean token prepended, positional embedding added, the mean token
    is the only query. The positional embedding is sized from the configured input size and
    interpolated (bicubic) when a different grid arrives."""

    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.grid_size = grid_size
        self.positional_embedding = nn.Parameter(torch.randn(grid_size ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads
        std = embed_dim ** -0.5
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(lin.weight, std=std)

    def _pos(self, h: int, w: int) -> torch.Tensor:  # -> [1 + h*w, C]
        pos = self.positional_embedding
        if (h, w) == (self.grid_size, self.grid_size):
            return pos
        g, c = self.grid_size, pos.shape[1]
        grid = pos[1:].reshape(1, g, g, c).permute(0, 3, 1, 2)  # [1, C, g, g]
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], grid.flatten(2)[0].t()], dim=0)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # [B, L, C] -> [B, nh, L, C/nh]
        # explicit traced sizes (not unflatten): keeps the batch axis dynamic in the TorchScript ONNX export
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, h, w] -> [B, output_dim]
        pos = self._pos(x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # [B, hw, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + pos.to(x.dtype)  # [B, 1+hw, C]
        q = self._heads(self.q_proj(x[:, :1]))  # [B, nh, 1, d]: the mean token is the only query
        k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))  # [B, nh, 1+hw, d]
        attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)  # [B, nh, 1, 1+hw]
        out = (attn @ v).transpose(1, 2).reshape(x.shape[0], -1)  # [B, C]
        return self.c_proj(out)


def _chain(cfg: StudentConfig, layer: int, depth: int) -> tuple[nn.ModuleList, nn.Module]:
    """First `depth` blocks of layer `layer` and its Eq. (14) shortcut."""
    inplanes = cfg.stem_widths[-1] if layer == 0 else cfg.planes[layer - 1] * cfg.expansion
    planes, stride = cfg.planes[layer], LAYER_STRIDES[layer]
    out = planes * cfg.expansion
    blocks = nn.ModuleList([Bottleneck(inplanes, planes, stride, cfg.expansion)])
    blocks.extend(Bottleneck(out, planes, 1, cfg.expansion) for _ in range(depth - 1))
    shortcut = nn.Identity() if stride == 1 and inplanes == out else downsample(inplanes, out, stride)
    return blocks, shortcut


class MixedLayer(nn.Module):
    """Eqs. (12)-(14): one chain of max_depth blocks; candidate j = first j blocks."""

    def __init__(self, cfg: StudentConfig, layer: int):
        super().__init__()
        self.blocks, self.shortcut = _chain(cfg, layer, cfg.max_depth)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # weights [max_depth]
        y, out = 0.0, x
        for j, block in enumerate(self.blocks):
            out = block(out)  # o^(l,j+1)(x): the chain after j+1 blocks
            y = y + weights[j] * out  # Eq. (13)
        return self.shortcut(x) + y  # Eq. (14)


class FixedLayer(nn.Module):
    """A derived layer: `depth` blocks, same names as MixedLayer."""

    def __init__(self, cfg: StudentConfig, layer: int, depth: int):
        super().__init__()
        self.blocks, self.shortcut = _chain(cfg, layer, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.blocks:
            out = block(out)
        return self.shortcut(x) + out  # Eq. (14) with a one-hot mixture


class SearchableStudent(nn.Module):
    """Table I supernet for (KDL-)DARTS: alphas [4, max_depth] select each layer's depth."""

    def __init__(self, cfg: StudentConfig, alpha_temperature: float = 1.0):
        super().__init__()
        if alpha_temperature <= 0:
            raise ValueError(f"alpha_temperature must be > 0, got {alpha_temperature}")
        self.cfg, self.alpha_temperature = cfg, alpha_temperature
        self.stem = Stem(cfg.stem_widths)
        self.layers = nn.ModuleList(MixedLayer(cfg, i) for i in range(len(LAYER_STRIDES)))
        self.attnpool = AttentionPool2d(cfg.grid_size, cfg.embed_dim, cfg.heads, cfg.feature_dim)
        self.alphas = nn.Parameter(torch.zeros(len(LAYER_STRIDES), cfg.max_depth))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alphas"]

    def mixture_weights(self) -> torch.Tensor:  # [4, max_depth], rows sum to 1 (Eq. 13)
        return torch.softmax(self.alphas / self.alpha_temperature, dim=-1)

    def candidate_params(self) -> list[list[int]]:
        """|o^(l,j)| for Eq. (17): parameters of blocks 1..j of layer l's chain.

        The layer's Eq. (14) shortcut is excluded: it is shared by every candidate of the layer,
        and the softmax of Eq. (17) is unchanged by a constant added to all of a layer's counts.
        """
        counts = []
        for layer in self.layers:
            total, row = 0, []
            for block in layer.blocks:
                total += sum(p.numel() for p in block.parameters())
                row.append(total)
            counts.append(row)
        return counts

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, 3, H, W] -> h [B, feature_dim]; `weights` [4, max_depth] overrides the mixture."""
        w = self.mixture_weights() if weights is None else weights
        x = self.stem(x)  # [B, 64, H/4, W/4]
        for i, layer in enumerate(self.layers):
            x = layer(x, w[i])  # [B, planes*4, ., .]
        return self.attnpool(x)  # [B, feature_dim]


class Student(nn.Module):
    """Fixed-depth compact semantic encoder (the architecture a* found by the search)."""

    def __init__(self, cfg: StudentConfig, depths: list[int] | tuple[int, ...]):
        super().__init__()
        depths = [int(d) for d in depths]
        if len(depths) != len(LAYER_STRIDES) or not all(1 <= d <= cfg.max_depth for d in depths):
            raise ValueError(f"depths must be 4 ints in 1..{cfg.max_depth}, got {depths}")
        self.cfg, self.depths = cfg, depths
        self.stem = Stem(cfg.stem_widths)
        self.layers = nn.ModuleList(FixedLayer(cfg, i, d) for i, d in enumerate(depths))
        self.attnpool = AttentionPool2d(cfg.grid_size, cfg.embed_dim, cfg.heads, cfg.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, feature_dim]
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.attnpool(x)


def derive_student(searchable: SearchableStudent, depths: list[int] | tuple[int, ...]) -> Student:
    """Copy stem, the first k blocks of each chain, the shortcuts and the attention pool."""
    student = Student(searchable.cfg, depths)
    source = searchable.state_dict()
    student.load_state_dict({k: source[k].clone() for k in student.state_dict()}, strict=True)
    return student.to(device=searchable.alphas.device, dtype=searchable.alphas.dtype)


__all__ = [
    "StudentConfig", "Stem", "Bottleneck", "AttentionPool2d", "MixedLayer", "FixedLayer",
    "SearchableStudent", "Student", "derive_student", "LAYER_STRIDES",
]
