"""The fast exact forward of the SPADE generator (:class:`FastSPADE`).

Two forwards compute the same function:

* :class:`SPADEGenerator` is the straightforward module: its ``state_dict()`` keys and shapes equal
  the official ``latest_net_G.pth`` (spectral-norm convs keep ``weight_orig``/``weight_u``/``weight_v``);
  its ``forward(seg)`` runs the dense one-hot map through every SPADE convolution in float32, exactly
  as the official code does in eval mode.
* :class:`FastSPADE` is built once from a generator (spectral norm folded with the stored ``u``/``v``,
  batch norm folded into the modulation) and computes the same output from the *label-index map*:

  - ``mlp_shared`` on a one-hot input is a sum of 9 kernel columns, one per 3x3 tap:
    ``a(p) = relu(b + sum_d W[:, key(p + d), d])``: an ``embedding_bag`` over per-tap tables
    instead of a ``semantic_nc -> 128`` convolution;
  - where the 5x5 neighbourhood of a pixel holds one key (label, instance edge) and lies inside the
    image, ``gamma`` and ``beta`` do not depend on the pixel: they come from a per-key table
    ``gb[k] = b_gb + (sum_d W_gb[:, :, d]) a[k]``;
  - the remaining (boundary) pixels are grouped by their 5x5 key pattern (exact: hashed, then
    verified), and the activations they read are grouped by 3x3 key pattern. One matrix product
    ``R = A_rows @ [W_0^T | ... | W_8^T]`` gives every tap's contribution of every distinct activation
    row, and ``gamma, beta`` of a pattern is an ``embedding_bag`` sum of 9 rows of ``R``;
  - at low resolutions, where nearly every pixel is a boundary pixel, gamma/beta are one dense
    ``128 -> 2C`` convolution of the gathered activation map instead;
  - ``BN(x) * (1 + gamma) + beta`` becomes ``x * A + B`` with ``A = s (1 + gamma)``,
    ``B = t (1 + gamma) + beta`` formed on the table rows, not on the full map;
  - index structures depend only on the resolution, so all SPADE layers at one resolution share them;
    main convolutions run in ``channels_last``; the 1x1 shortcut is a matrix product.

  All of it is exact algebra: the two forwards differ only by float summation order (~1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...data.labelmaps import instance_edges
from .reference import SPADE, SNConv2d, SPADEGenerator

__all__ = ["FastSPADE"]


def _tap_table(weight: torch.Tensor, num_label_channels: int, has_edge: bool) -> torch.Tensor:
    """Per-tap embedding tables of a 3x3 conv on [one-hot labels (+ edge channel)].

    ``weight`` (Cout, semantic_nc, 3, 3) -> (9 * (nkeys + 1), Cout); row ``d * (nkeys + 1) + k`` is the
    contribution of key ``k`` (label ``k % nl``, edge ``k // nl``) seen through tap ``d``; key
    ``nkeys`` is the zero padding outside the image (zero row).
    """
    nl = num_label_channels
    taps = weight.permute(2, 3, 1, 0).reshape(9, weight.shape[1], weight.shape[0])  # (9, sem, Cout)
    rows = [taps[:, :nl]]
    if has_edge:
        rows.append(taps[:, :nl] + taps[:, nl:nl + 1])
    rows.append(torch.zeros_like(taps[:, :1]))
    return torch.cat(rows, 1).reshape(-1, weight.shape[0]).contiguous()


class _FastSPADELayer:
    """Precomputed tables of one SPADE layer (weights folded, float32 maths)."""

    def __init__(self, spade: SPADE, nl: int, has_edge: bool, dtype: torch.dtype):
        bn = spade.param_free_norm
        conv_s = spade.mlp_shared[0]
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        self.scale = scale.float()
        self.shift = (-bn.running_mean.double() * scale).float()
        self.C = bn.num_features
        self.tap = _tap_table(conv_s.weight.detach().float(), nl, has_edge)          # (9*(nk+1), 128)
        self.bias_shared = conv_s.bias.detach().float()
        nk1 = self.tap.shape[0] // 9
        self.a_table = torch.relu(self.tap.view(9, nk1, -1).sum(0)[:-1] + self.bias_shared)  # (nk, 128)
        w_gb = torch.cat([spade.mlp_gamma.weight, spade.mlp_beta.weight], 0).detach().float()  # (2C, 128, 3, 3)
        self.w_gb_conv = w_gb.contiguous(memory_format=torch.channels_last).to(dtype)
        # W_all[:, d*2C:(d+1)*2C] = W_d^T: one product gives every tap's contribution of an activation row
        self.w_all = w_gb.permute(1, 2, 3, 0).reshape(w_gb.shape[1], 9 * w_gb.shape[0]).contiguous().to(dtype)
        self.b_gb = torch.cat([spade.mlp_gamma.bias, spade.mlp_beta.bias]).detach().float()
        gb_table = self.a_table @ w_gb.sum((2, 3)).t() + self.b_gb                   # (nk, 2C)
        self.ab_table = self.modulation(gb_table)                                      # (nk, 2C): A | B
        self.dtype = dtype

    def modulation(self, gb: torch.Tensor) -> torch.Tensor:
        """Rows (gamma | beta) -> (A | B) with ``BN(x)(1+gamma)+beta = x*A + B``."""
        C = self.C
        g1 = 1 + gb[:, :C].float()
        return torch.cat([g1 * self.scale, g1 * self.shift + gb[:, C:].float()], 1)

    def to(self, device) -> _FastSPADELayer:
        for k, v in list(vars(self).items()):
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(device))
        return self


_HASH_MULT = torch.randint(1, 2**62, (25,), generator=torch.Generator().manual_seed(12345)) | 1


def _unique_rows(rows: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Exact unique rows: (count, inverse (N,), representative row index per unique row).

    A 64-bit hash sorts the rows; the grouping is then checked row by row against its
    representative, and any collision falls back to ``torch.unique(dim=0)``.
    """
    n = rows.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=rows.device)
        return 0, empty, empty
    mult = _HASH_MULT[: rows.shape[1]].to(rows.device)
    h = (rows * mult).sum(1)  # int64 arithmetic wraps: a hash, verified below
    _, inverse = torch.unique(h, return_inverse=True)
    nu = int(inverse.max()) + 1
    rep = torch.empty(nu, dtype=torch.long, device=rows.device)
    rep.scatter_(0, inverse, torch.arange(n, device=rows.device))
    if not torch.equal(rows[rep][inverse], rows):  # hash collision: exact fallback
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        nu = int(inverse.max()) + 1
        rep = torch.empty(nu, dtype=torch.long, device=rows.device)
        rep.scatter_(0, inverse, torch.arange(n, device=rows.device))
    return nu, inverse, rep


class _ResolutionIndex:
    """Index structures of one resolution, shared by every SPADE layer at that resolution."""

    def __init__(self, keys: torch.Tensor, size: tuple[int, int], nkeys: int, dense_threshold: float):
        B = keys.shape[0]
        h, w = size
        # Official: F.interpolate(seg, size, mode='nearest') from the full-resolution map.
        K = F.interpolate(keys[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        dev = keys.device
        Kp = F.pad(K, (1, 1, 1, 1), value=nkeys)
        wp = w + 2
        base = (torch.arange(B, device=dev)[:, None, None] * (h + 2) * wp
                + torch.arange(h, device=dev)[None, :, None] * wp + torch.arange(w, device=dev)[None, None, :]).reshape(-1)
        off = torch.tensor([ky * wp + kx for ky in range(3) for kx in range(3)], device=dev)
        tap_shift = torch.arange(9, device=dev) * (nkeys + 1)

        def window_uniform(r: int) -> torch.Tensor:
            padded = F.pad(K[:, None].float(), (r, r, r, r), value=float(nkeys))
            mx = F.max_pool2d(padded, 2 * r + 1, stride=1)
            mn = -F.max_pool2d(-padded, 2 * r + 1, stride=1)
            return (mx == mn)[:, 0].reshape(-1)

        u3 = window_uniform(1)
        u5 = window_uniform(2)
        q = (~u3).nonzero()[:, 0]
        p = (~u5).nonzero()[:, 0]
        self.size = (h, w)
        self.batch = B
        self.npix = B * h * w
        # mlp_shared at non-uniform-3x3 pixels depends only on their 3x3 key pattern: one row per pattern.
        q_pat = Kp.reshape(-1)[base[q][:, None] + off]                              # (Nq, 9)
        nqu, q_inv, q_rep = _unique_rows(q_pat)
        self.nq, self.nqu = q.numel(), nqu
        self.q_taps = q_pat[q_rep] + tap_shift                                      # (Nqu, 9) rows of the tap tables
        # Activation rows: [a_table[present keys]; a(unique 3x3 patterns); 0 (zero padding)]
        self.present = torch.unique(K)
        npres = self.present.numel()
        lut = torch.full((nkeys + 1,), -1, dtype=torch.long, device=dev)
        lut[self.present] = torch.arange(npres, device=dev)
        lut[nkeys] = npres + nqu
        ib = lut[Kp.reshape(-1)]
        ib[base[q] + wp + 1] = npres + q_inv
        self.nrows = npres + nqu + 1
        # Boundary pixels with the same 5x5 key pattern (padding included) get identical gamma/beta:
        # compute each pattern once, at one representative pixel.
        K2 = F.pad(K, (2, 2, 2, 2), value=nkeys)
        wp2 = w + 4
        base2 = (torch.arange(B, device=dev)[:, None, None] * (h + 4) * wp2
                 + torch.arange(h, device=dev)[None, :, None] * wp2 + torch.arange(w, device=dev)[None, None, :]).reshape(-1)
        off2 = torch.tensor([ky * wp2 + kx for ky in range(5) for kx in range(5)], device=dev)
        patterns = K2.reshape(-1)[base2[p][:, None] + off2]                        # (Np, 25)
        nu, inverse, rep = _unique_rows(patterns)
        self.np_ = p.numel()
        self.nu = nu
        self.dense = self.nu > dense_threshold * self.npix
        if self.dense:
            self.ia_map = ib.view(B, h + 2, wp)
        else:
            # gamma/beta of pattern u = b + sum_d (W_d a)[row of neighbour d]: rows of R = A_in @ W_all, (n*9, 2C)
            self.p_idx = ib[base[p[rep]][:, None] + off] * 9 + torch.arange(9, device=dev)  # (Nu, 9)
            igb = K.reshape(-1).clone()
            igb[p] = nkeys + inverse
            self.igb = igb.view(B, h, w)
        self.K = K


class FastSPADE:
    """Exact fast forward of a :class:`SPADEGenerator` from label-index maps (see module docstring).

    Parameters
    ----------
    generator:
        a generator with loaded weights (read once; later changes to it are not seen).
    num_label_channels, has_edge:
        how the generator's ``semantic_nc`` input channels split: one-hot labels, then the edge channel.
    dtype:
        float32 (exact) or bfloat16/float16 (faster on hardware that has it; reported separately).
    dense_threshold:
        distinct boundary patterns per pixel above which a resolution computes gamma/beta as one dense
        convolution (0: always dense, > 1: never).
    """

    def __init__(self, generator: SPADEGenerator, num_label_channels: int, has_edge: bool, *,
                 dtype: torch.dtype = torch.float32, dense_threshold: float = 0.55):
        g = generator
        if num_label_channels + int(has_edge) != g.semantic_nc:
            raise ValueError(f"num_label_channels {num_label_channels} + edge {has_edge} != semantic_nc {g.semantic_nc}")
        self.nl, self.has_edge, self.dtype = num_label_channels, has_edge, dtype
        self.nkeys = num_label_channels * (2 if has_edge else 1)
        self.dense_threshold = dense_threshold
        self.sh, self.sw = g.sh, g.sw
        with torch.no_grad():
            self.fc_tap = _tap_table(g.fc.weight.detach().float(), num_label_channels, has_edge).to(dtype)
            self.fc_bias = g.fc.bias.detach().to(dtype)
            self.blocks = []
            for _, block, up in g.blocks():
                entry = {
                    "up": up,
                    "norm_0": _FastSPADELayer(block.norm_0, num_label_channels, has_edge, dtype),
                    "norm_1": _FastSPADELayer(block.norm_1, num_label_channels, has_edge, dtype),
                    "conv_0": self._conv(block.conv_0),
                    "conv_1": self._conv(block.conv_1),
                }
                if block.learned_shortcut:
                    entry["norm_s"] = _FastSPADELayer(block.norm_s, num_label_channels, has_edge, dtype)
                    entry["conv_s"] = self._conv(block.conv_s)
                self.blocks.append(entry)
            self.conv_img = (g.conv_img.weight.detach().contiguous(memory_format=torch.channels_last).to(dtype),
                             g.conv_img.bias.detach().to(dtype))
        self.device = torch.device("cpu")
        self.to(next(g.parameters()).device)

    def _conv(self, conv: SNConv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = conv.folded_weight().detach().contiguous(memory_format=torch.channels_last).to(self.dtype)
        b = conv.bias.detach().to(self.dtype) if conv.bias is not None else None
        return (w, b)

    def to(self, device) -> FastSPADE:
        device = torch.device(device)
        mv = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.fc_tap, self.fc_bias = mv(self.fc_tap), mv(self.fc_bias)
        for entry in self.blocks:
            for k, v in entry.items():
                if isinstance(v, _FastSPADELayer):
                    v.to(device)
                elif isinstance(v, tuple):
                    entry[k] = tuple(mv(t) for t in v)
        self.conv_img = tuple(mv(t) for t in self.conv_img)
        self.device = device
        return self

    def keys(self, labels: torch.Tensor, instances: torch.Tensor | None) -> torch.Tensor:
        """Key map ``label + nl * edge`` (B, H, W) int64."""
        if not self.has_edge:
            return labels
        edges = instance_edges(instances if instances is not None else labels)[:, 0].long()
        return labels + self.nl * edges

    def _spade(self, layer: _FastSPADELayer, x: torch.Tensor, idx: _ResolutionIndex) -> torch.Tensor:
        dt = self.dtype
        C = layer.C
        nh = layer.a_table.shape[1]
        if idx.nqu:
            a_uq = torch.relu(F.embedding_bag(idx.q_taps, layer.tap, mode="sum") + layer.bias_shared)
        else:
            a_uq = layer.a_table.new_zeros(0, nh)
        a_in = torch.cat([layer.a_table[idx.present], a_uq, layer.a_table.new_zeros(1, nh)]).to(dt)
        if idx.dense:
            a_map = F.embedding(idx.ia_map, a_in).permute(0, 3, 1, 2)                # (B,128,h+2,w+2) channels_last
            gb = F.conv2d(a_map, layer.w_gb_conv, None).float()                       # (B,2C,h,w)
            gb = gb + layer.b_gb.view(1, -1, 1, 1)
            g1 = 1 + gb[:, :C]
            A = (g1 * layer.scale.view(1, -1, 1, 1)).to(dt)
            Bm = (g1 * layer.shift.view(1, -1, 1, 1) + gb[:, C:]).to(dt)
            return torch.addcmul(Bm, x, A)
        nk = layer.ab_table.shape[0]
        A_tab = torch.empty(nk + idx.nu, C, device=x.device)
        B_tab = torch.empty(nk + idx.nu, C, device=x.device)
        A_tab[:nk] = layer.ab_table[:, :C]
        B_tab[:nk] = layer.ab_table[:, C:]
        if idx.nu:
            rows = torch.mm(a_in, layer.w_all).view(-1, 2 * C)                        # (nrows*9, 2C)
            gb = F.embedding_bag(idx.p_idx, rows, mode="sum").float().add_(layer.b_gb)
            g1 = gb[:, :C].add_(1)
            torch.mul(g1, layer.scale, out=A_tab[nk:])
            torch.addcmul(gb[:, C:], g1, layer.shift, out=B_tab[nk:])
        A = F.embedding(idx.igb, A_tab.to(dt)).permute(0, 3, 1, 2)
        Bm = F.embedding(idx.igb, B_tab.to(dt)).permute(0, 3, 1, 2)
        return torch.addcmul(Bm, x, A)

    @staticmethod
    def _conv_apply(x: torch.Tensor, wb, padding: int) -> torch.Tensor:
        w, b = wb
        if w.shape[2:] == (1, 1) and b is None:
            # 1x1 shortcut conv as a matrix product over channels_last pixels (CPU conv2d has no fast 1x1 path)
            B, C, H, W = x.shape
            y = torch.mm(x.permute(0, 2, 3, 1).reshape(-1, C), w.view(w.shape[0], C).t())
            return y.view(B, H, W, -1).permute(0, 3, 1, 2)
        return F.conv2d(x, w, b, padding=padding)

    @torch.no_grad()
    def __call__(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` (B, H, W) int64 (validated ids) -> (B, 3, H', W') float32 in [-1, 1]."""
        labels = labels.to(self.device)
        if instances is not None:
            instances = instances.to(self.device)
        keys = self.keys(labels, instances)
        B = keys.shape[0]
        cache: dict[tuple[int, int], _ResolutionIndex] = {}

        def index(size):
            if size not in cache:
                cache[size] = _ResolutionIndex(keys, size, self.nkeys, self.dense_threshold)
            return cache[size]

        # fc on the one-hot map at the latent size = per-tap lookups of the fc kernel
        K = F.interpolate(keys[:, None].float(), size=(self.sh, self.sw), mode="nearest")[:, 0].long()
        Kp = F.pad(K, (1, 1, 1, 1), value=self.nkeys)
        taps = torch.stack([Kp[:, ky:ky + self.sh, kx:kx + self.sw] for ky in range(3) for kx in range(3)], -1)
        taps = taps + torch.arange(9, device=self.device) * (self.nkeys + 1)
        x = F.embedding_bag(taps.reshape(-1, 9), self.fc_tap, mode="sum") + self.fc_bias
        x = x.view(B, self.sh, self.sw, -1).permute(0, 3, 1, 2)  # channels_last (B, 16nf, sh, sw)
        for entry in self.blocks:
            if entry["up"]:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            idx = index(tuple(x.shape[2:]))
            if "conv_s" in entry:
                x_s = self._conv_apply(self._spade(entry["norm_s"], x, idx), entry["conv_s"], 0)
            else:
                x_s = x
            dx = F.leaky_relu_(self._spade(entry["norm_0"], x, idx), 0.2)
            dx = self._conv_apply(dx, entry["conv_0"], 1)
            dx = F.leaky_relu_(self._spade(entry["norm_1"], dx, idx), 0.2)
            dx = self._conv_apply(dx, entry["conv_1"], 1)
            x = dx.add_(x_s)
        x = F.conv2d(F.leaky_relu(x, 0.2), *self.conv_img, padding=1)
        return torch.tanh(x.float()).contiguous()
