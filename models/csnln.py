"""CSNLN (Mei et al., CVPR 2020): recurrent self-exemplar mining with cross-scale attention.

The cross-scale attention is computed for the whole batch at once: per-sample matching
filters become one grouped convolution, and the per-sample transposed convolution that folds
high-resolution patches back is ``torch.ops.srdeploy.cross_scale_fold``.

Both attentions score every query position against all L' keys ([L, L'] scores: 11 GB for
a 192×192 input). In eager mode they run in blocks of query positions sized so that one
block's score tensors stay within ``block_bytes`` (default :data:`ATTENTION_BLOCK_BYTES`):
memory grows with L × block instead of L², and the result equals the dense form up to
float rounding (softmax is per query, so blocks are independent). Traced or exported
graphs (``torch.export``, ONNX) use the dense form: the block loop's trip count depends on
the input size, which a graph with dynamic H and W cannot hold as a Python loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops  # noqa: F401  (registers torch.ops.srdeploy)
from .base import Architecture, ChopRule, Hints, InputSizeError, SizeRule, SRModel, StateDict
from .common import MeanShift, ResBlock, conv3, conv_act, mean_shift_range

DEFAULTS = dict(n_feats=128, depth=12, rgb_range=255, n_colors=3)

# scale -> (kernel, stride, padding) of the projection (de)convolutions and the attention up-factor
_PROJECTION = {2: (6, 2, 2), 3: (9, 3, 3), 4: (6, 2, 2)}


def up_factor(scale: int) -> int:
    """Attention up-factor u: 3 for x3, 2 for x2 and x4 (x4 applies two x2 projections)."""
    return 3 if scale == 3 else 2


def downscale(x: torch.Tensor, u: int) -> torch.Tensor:
    """Bilinear 1/u downscale (align_corners=False) for H, W divisible by u, in exact form."""
    if u == 2:
        return F.avg_pool2d(x, 2)
    if u == 3:
        return x[..., 1::3, 1::3]
    raise ValueError(f"unsupported up-factor {u}")


#: Size target of each score tensor of one attention block (the scores, their softmax; all
#: batch items): far below any large tile's feature maps, large enough that per-block overhead
#: is negligible, and above glibc's largest mmap threshold (32 MiB), so these temporaries are
#: mapped and unmapped instead of fragmenting the heap (measured: with 31.9 MiB blocks a
#: 192×192 CSNLN's RSS grew by one block per block, to 5.3 GB).
ATTENTION_BLOCK_BYTES = 64 << 20


def block_size(n_queries: int, bytes_per_query: int, block_bytes: int | None) -> int:
    """Queries per block so that a block's score tensor takes at most ``block_bytes`` (at least one
    query; all of them when ``block_bytes`` is None or the graph is being traced/exported)."""
    if block_bytes is None or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return n_queries
    return max(1, min(n_queries, block_bytes // max(1, bytes_per_query)))


def set_attention_block_bytes(model: nn.Module, block_bytes: int | None) -> None:
    """Set the block memory target of every CSNLN attention in ``model`` (None: dense)."""
    for m in model.modules():
        if isinstance(m, (NonLocalAttention, CrossScaleAttention)):
            m.block_bytes = block_bytes


def patches(x: torch.Tensor, k: int, stride: int, pad: int) -> torch.Tensor:
    """All k×k patches of x [N, C, H, W] (zero padding ``pad``) -> [N, K, C, k, k]."""
    N, C = x.shape[:2]
    cols = F.unfold(F.pad(x, (pad, pad, pad, pad)), k, stride=stride)  # [N, C·k·k, K]
    return cols.view(N, C, k, k, -1).permute(0, 4, 1, 2, 3)


class NonLocalAttention(nn.Module):
    """In-scale non-local attention: softmax over all positions, in blocks of query positions."""

    def __init__(self, channel: int = 128, reduction: int = 2, block_bytes: int | None = ATTENTION_BLOCK_BYTES):
        super().__init__()
        self.block_bytes = block_bytes
        self.conv_match1 = conv_act(channel, channel // reduction, 1, nn.PReLU())
        self.conv_match2 = conv_act(channel, channel // reduction, 1, nn.PReLU())
        self.conv_assembly = conv_act(channel, channel, 1, nn.PReLU())

    def forward(self, x):
        a = self.conv_match1(x).flatten(2).transpose(1, 2)  # [N, HW, c]
        b = self.conv_match2(x).flatten(2)  # [N, c, HW]
        v = self.conv_assembly(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        N, L = b.shape[0], b.shape[2]
        rows = block_size(L, N * L * b.element_size(), self.block_bytes)  # one row of scores per query
        if rows == L:
            out = torch.matmul(torch.softmax(torch.matmul(a, b), dim=2), v)
        else:
            out = torch.cat([torch.matmul(torch.softmax(torch.matmul(a[:, i:i + rows], b), dim=2), v)
                             for i in range(0, L, rows)], dim=1)
        return out.transpose(1, 2).reshape(x.shape)


class CrossScaleAttention(nn.Module):
    """Matches 3×3 patches of x against those of x downscaled by u, and assembles the matched
    (3u)×(3u) patches of x into a u× larger map."""

    def __init__(self, channel: int = 128, reduction: int = 2, scale: int = 2, ksize: int = 3,
                 softmax_scale: float = 10.0, block_bytes: int | None = ATTENTION_BLOCK_BYTES):
        super().__init__()
        self.block_bytes = block_bytes
        self.scale = scale
        self.ksize = ksize
        self.softmax_scale = softmax_scale
        self.register_buffer("escape_NaN", torch.tensor([1e-4]))
        self.conv_match_1 = conv_act(channel, channel // reduction, 1, nn.PReLU())
        self.conv_match_2 = conv_act(channel, channel // reduction, 1, nn.PReLU())
        self.conv_assembly = conv_act(channel, channel, 1, nn.PReLU())

    def forward(self, x):
        N, _, H, W = x.shape
        u, k = self.scale, self.ksize
        if H % u or W % u:
            raise InputSizeError(f"cross-scale attention needs H and W divisible by {u}, got {H}x{W}")
        # (3u)×(3u) patches of the embedding at stride u ('same' padding u) reconstruct the output.
        raw = patches(self.conv_assembly(x), k * u, u, u)  # [N, K, C, 3u, 3u]
        # 3×3 patches of the downscaled image are the matching filters, normalised per patch.
        w = patches(self.conv_match_2(downscale(x, u)), k, 1, k // 2)  # [N, K, c, 3, 3]
        norm = torch.maximum(w.pow(2).sum(dim=(2, 3, 4), keepdim=True).sqrt(), self.escape_NaN)
        w = w / norm
        p = k // 2
        match = F.pad(self.conv_match_1(x), (p,) * 4)
        K, c = w.shape[1], w.shape[2]
        filters = w.reshape(N * K, c, k, k)

        def attention(y0: int, y1: int) -> torch.Tensor:
            """Softmax scores of the query rows [y0, y1) over all K patches: [N, K, y1 - y0, W]."""
            rows = match[:, :, y0:y1 + 2 * p].reshape(1, N * c, y1 - y0 + 2 * p, W + 2 * p)
            scores = F.conv2d(rows, filters, groups=N).view(N, K, y1 - y0, W)
            return torch.softmax(scores * self.softmax_scale, dim=1)

        rows = block_size(H, N * K * W * x.element_size(), self.block_bytes)  # [N, K, W] scores per query row
        if rows == H:
            return torch.ops.srdeploy.cross_scale_fold(attention(0, H), raw, u, u) / 6.0
        # Fold each block without padding onto the unpadded canvas (rows overlap across block
        # edges and add up, as in the transposed convolution), then crop the padding u.
        canvas = raw.new_zeros(N, raw.shape[2], (H - 1) * u + k * u, (W - 1) * u + k * u)
        for y0 in range(0, H, rows):
            y1 = min(H, y0 + rows)
            canvas[:, :, u * y0:u * (y1 - 1) + k * u] += torch.ops.srdeploy.cross_scale_fold(attention(y0, y1), raw, u, 0)
        Ho, Wo = (H + k - 3) * u, (W + k - 3) * u  # as conv_transpose2d with padding u
        return canvas[:, :, u:u + Ho, u:u + Wo] / 6.0


class MultisourceProjection(nn.Module):
    def __init__(self, channel: int, scale: int):
        super().__init__()
        kernel, stride, padding = _PROJECTION[scale]
        self.up_attention = CrossScaleAttention(channel, scale=up_factor(scale))
        self.down_attention = NonLocalAttention(channel)
        self.upsample = nn.Sequential(nn.ConvTranspose2d(channel, channel, kernel, stride, padding), nn.PReLU())
        self.encoder = ResBlock(channel, 3, act=nn.PReLU(), res_scale=1.0)

    def forward(self, x):
        down_map = self.upsample(self.down_attention(x))
        up_map = self.up_attention(x)
        return down_map + self.encoder(up_map - down_map)


def _down(channel, kernel, stride, padding):
    return nn.Sequential(nn.Conv2d(channel, channel, kernel, stride, padding), nn.PReLU())


def _up(channel, kernel, stride, padding):
    return nn.Sequential(nn.ConvTranspose2d(channel, channel, kernel, stride, padding), nn.PReLU())


class RecurrentProjection(nn.Module):
    """The self-exemplar mining cell; x4 runs two x2 projections."""

    def __init__(self, channel: int, scale: int):
        super().__init__()
        self.scale = scale
        kernel, stride, padding = _PROJECTION[scale]
        self.multi_source_projection = MultisourceProjection(channel, scale)
        self.down_sample_1 = _down(channel, kernel, stride, padding)
        if scale != 4:
            self.down_sample_2 = _down(channel, kernel, stride, padding)
        self.error_encode = _up(channel, kernel, stride, padding)
        self.post_conv = conv_act(channel, channel, 3, nn.PReLU())
        if scale == 4:
            self.multi_source_projection_2 = MultisourceProjection(channel, scale)
            self.down_sample_3 = _down(channel, 8, 4, 2)
            self.down_sample_4 = _down(channel, 8, 4, 2)
            self.error_encode_2 = _up(channel, 8, 4, 2)

    def forward(self, x):
        x_up = self.multi_source_projection(x)
        h = x_up + self.error_encode(x - self.down_sample_1(x_up))
        if self.scale == 4:
            x_up = self.multi_source_projection_2(h)
            h = x_up + self.error_encode_2(x - self.down_sample_3(x_up))
            return self.post_conv(self.down_sample_4(h)), h
        return self.post_conv(self.down_sample_2(h)), h


class CSNLN(SRModel):
    name = "csnln"

    def __init__(self, scale: int, n_feats: int, depth: int, rgb_range: float, n_colors: int):
        super().__init__(scale, dict(n_feats=n_feats, depth=depth, rgb_range=rgb_range, n_colors=n_colors))
        self.depth = depth
        # Registration order = official state_dict order.
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.SEM = RecurrentProjection(n_feats, scale)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(conv_act(n_colors, n_feats, 3, nn.PReLU()),
                                  conv_act(n_feats, n_feats, 3, nn.PReLU()))
        self.tail = nn.Sequential(conv3(n_feats * depth, n_colors))

    def _forward(self, x):
        x = self.head(self.sub_mean(x))
        estimates = []
        for _ in range(self.depth):
            x, h = self.SEM(x)
            estimates.append(h)
        return self.add_mean(self.tail(torch.cat(estimates, dim=1)))


def _is_csnln(sd: StateDict) -> bool:
    return any(k.startswith("SEM.") for k in sd)


def _read(sd: StateDict) -> tuple[int, dict]:
    """Scale from the projections (x4 has a second one; x3 down-samples with 9×9 kernels), width
    from the head, depth from the tail, which concatenates ``depth`` estimates."""
    n_feats = sd["head.0.0.weight"].shape[0]
    if "SEM.multi_source_projection_2.up_attention.conv_assembly.0.weight" in sd:
        scale = 4
    else:
        scale = 3 if sd["SEM.down_sample_1.0.weight"].shape[-1] == 9 else 2
    return scale, dict(n_feats=n_feats, depth=sd["tail.0.weight"].shape[1] // n_feats,
                       n_colors=sd["head.0.0.weight"].shape[1], rgb_range=mean_shift_range(sd))


def _size_rule(scale: int, config) -> SizeRule:
    return SizeRule(multiple=up_factor(scale))  # the cross-scale attention downscales by u


#: SHI-Labs/Cross-Scale-Non-Local-Attention src/model/__init__.py (min_size 3600 at every scale)
CSNLN_CHOP = ChopRule(shave=10, min_size=3600)

ARCHITECTURE = Architecture(
    CSNLN, DEFAULTS, detect=_is_csnln, read=_read, size_rule=_size_rule, chop=CSNLN_CHOP,
    hints=Hints(tiling_advised=True, dense_attention=True, feature_maps=6.0,
                note="attention over all pairs of positions (11 GB of scores for 192×192 in an exported "
                     "graph); the tail concatenates the HR estimates of all depth iterations"))
