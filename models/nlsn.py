"""NLSN (Mei et al., CVPR 2021): EDSR with Non-Local Sparse Attention blocks.

Deployment semantics (DESIGN.md §2): fixed seeded LSH rotations held in a non-persistent
buffer, hashing in fp32, stable bucket order through ``torch.ops.srdeploy.bucket_sort``, the
attention itself through ``torch.ops.srdeploy.bucket_attention``.
"""
from __future__ import annotations

import torch
from torch import nn

from . import ops  # noqa: F401  (registers torch.ops.srdeploy)
from .base import Architecture, ChopRule, Hints, InputSizeError, SizeRule, SRModel, StateDict
from .common import MeanShift, ResBlock, Upsampler, conv3, conv_act, is_residual_backbone, read_residual_backbone

DEFAULTS = dict(n_resblocks=32, n_feats=256, res_scale=0.1, chunk_size=144, n_hashes=4,
                rgb_range=255, n_colors=3, lsh_seed=0)
MAX_BUCKETS = 128
KEY_EPS = 5e-5  # eps of the L2 normalisation of keys


def num_buckets(L: int, chunk_size: int) -> int:
    """Hash buckets per round for L positions (official rule, capped at 128)."""
    n = L // chunk_size
    return min(n + n % 2, MAX_BUCKETS)


class NonLocalSparseAttention(nn.Module):
    def __init__(self, channels: int, chunk_size: int = 144, n_hashes: int = 4, reduction: int = 4,
                 res_scale: float = 1.0, rotations: torch.Tensor | None = None):
        super().__init__()
        self.chunk_size = chunk_size
        self.n_hashes = n_hashes
        self.res_scale = res_scale
        self.conv_match = conv_act(channels, channels // reduction, 3, None)
        self.conv_assembly = conv_act(channels, channels, 1, None)
        if rotations is None:
            rotations = torch.randn(channels // reduction, n_hashes, MAX_BUCKETS // 2)
        # [c, R, 64]; an input with hb buckets uses the first hb/2 columns.
        self.register_buffer("rotations", rotations.float(), persistent=False)

    def _apply(self, fn, recurse=True):
        # .half()/.to(dtype) must not touch the rotations: hashing is fp32 whatever the precision.
        rotations = self.rotations
        super()._apply(fn, recurse)
        self.rotations = rotations.to(device=self.rotations.device)
        return self

    def hash_codes(self, q: torch.Tensor, buckets: int) -> torch.Tensor:
        """LSH codes with round offsets, int32 [N, R·L], values in [0, R·buckets)."""
        N, L, _ = q.shape
        rot = self.rotations[:, :, : buckets // 2]
        projected = torch.einsum("ntf,fri->nrti", q.float(), rot)
        codes = torch.cat([projected, -projected], dim=-1).argmax(dim=-1)  # [N, R, L]
        offsets = torch.arange(self.n_hashes, device=q.device).view(1, -1, 1) * buckets
        return (codes + offsets).reshape(N, -1).to(torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        L = H * W
        if L < self.chunk_size:
            raise InputSizeError(f"NLSN needs H·W ≥ chunk_size ({self.chunk_size}), got {H}x{W}")
        q = self.conv_match(x).flatten(2).transpose(1, 2)  # [N, L, c]
        v = self.conv_assembly(x).flatten(2).transpose(1, 2)  # [N, L, C]
        buckets = num_buckets(L, self.chunk_size)
        order, rank = torch.ops.srdeploy.bucket_sort(self.hash_codes(q, buckets), self.n_hashes * buckets)
        out = torch.ops.srdeploy.bucket_attention(q, v, order, rank, self.chunk_size, self.n_hashes, KEY_EPS)
        return out.transpose(1, 2).reshape(N, C, H, W) * self.res_scale + x


class NLSN(SRModel):
    name = "nlsn"

    def __init__(self, scale: int, n_resblocks: int, n_feats: int, res_scale: float, chunk_size: int,
                 n_hashes: int, rgb_range: float, n_colors: int, lsh_seed: int = 0):
        super().__init__(scale, dict(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale,
                                     chunk_size=chunk_size, n_hashes=n_hashes, rgb_range=rgb_range,
                                     n_colors=n_colors, lsh_seed=lsh_seed))
        # One seeded generator draws every block's rotations in forward order.
        gen = torch.Generator().manual_seed(lsh_seed)

        def attention():
            rot = torch.randn(n_feats // 4, n_hashes, MAX_BUCKETS // 2, generator=gen)
            return NonLocalSparseAttention(n_feats, chunk_size, n_hashes, 4, res_scale, rot)

        act = nn.ReLU(inplace=True)
        body: list[nn.Module] = [attention()]
        for i in range(n_resblocks):
            body.append(ResBlock(n_feats, act=act, res_scale=res_scale))
            if (i + 1) % 8 == 0:
                body.append(attention())
        body.append(conv3(n_feats, n_feats))
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(conv3(n_colors, n_feats))
        self.body = nn.Sequential(*body)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3(n_feats, n_colors))

    def attention_blocks(self) -> list[NonLocalSparseAttention]:
        return [m for m in self.body if isinstance(m, NonLocalSparseAttention)]

    def _forward(self, x):
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.add_mean(self.tail(x))


def has_sparse_attention(sd: StateDict) -> bool:
    """Whether a state dict holds attention blocks (their ``conv_match``): NLSN's, not EDSR's."""
    return any(k.endswith("conv_match.0.weight") for k in sd)


def _is_nlsn(sd: StateDict) -> bool:
    return is_residual_backbone(sd) and has_sparse_attention(sd)


def _size_rule(scale: int, config) -> SizeRule:
    return SizeRule(min_pixels=config["chunk_size"])  # one attention chunk at least


#: HarukiYqM/Non-Local-Sparse-Attention src/model/__init__.py (its EDSR baseline uses it too)
NLSN_CHOP = ChopRule(shave=10, min_size=120000, round_to=(4, 8))

ARCHITECTURE = Architecture(
    NLSN, DEFAULTS, detect=_is_nlsn, read=read_residual_backbone, size_rule=_size_rule, chop=NLSN_CHOP,
    hints=Hints(note="sparse attention within hash buckets: memory grows linearly with H·W; tiles see "
                     "less of the image than the whole and approximate its output"))
