"""EDSR (Lim et al., 2017): the plain residual backbone NLSN is built on."""
from __future__ import annotations

from torch import nn

from .base import Architecture, Hints, SRModel, StateDict, any_size
from .common import MeanShift, ResBlock, Upsampler, conv3, is_residual_backbone, read_residual_backbone
from .nlsn import NLSN_CHOP, has_sparse_attention

DEFAULTS = dict(n_resblocks=32, n_feats=256, res_scale=0.1, rgb_range=255, n_colors=3)


class EDSR(SRModel):
    name = "edsr"

    def __init__(self, scale: int, n_resblocks: int, n_feats: int, res_scale: float, rgb_range: float, n_colors: int):
        super().__init__(scale, dict(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale,
                                     rgb_range=rgb_range, n_colors=n_colors))
        act = nn.ReLU(inplace=True)
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(conv3(n_colors, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, act=act, res_scale=res_scale) for _ in range(n_resblocks)],
                                  conv3(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3(n_feats, n_colors))

    def _forward(self, x):
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.add_mean(self.tail(x))


def _is_edsr(sd: StateDict) -> bool:
    return is_residual_backbone(sd) and not has_sparse_attention(sd)  # NLSN = EDSR + attention blocks


ARCHITECTURE = Architecture(
    EDSR, DEFAULTS, detect=_is_edsr, read=read_residual_backbone, size_rule=any_size,
    chop=NLSN_CHOP,  # srdeploy's EDSR is the NLSN repository's baseline, chopped by that repository's code
    hints=Hints(note="local receptive field: blended tiles with enough context (tile_pad) equal the whole "
                     "image; not calibrated for memory (NLSN's count, on the safe side)"))
