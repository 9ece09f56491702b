"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"):
masked convolutions in a vertical and a horizontal stack, with a softmax over the quantisation levels
of each sub-pixel; and its cached ancestral sampler.

The order is raster order over pixels and, within a pixel, over channels (R, G, B): sub-pixel
``t = (i * W + j) * C + c``. The network's output for sub-pixel t depends on the input sub-pixels
before t only:

* the **vertical stack** at row i sees rows <= i (a (p + 1) x k kernel, p = k // 2, every column in
  reach); its pre-activation is shifted down one row before it enters the horizontal stack, so what
  the horizontal stack gets from it comes from rows < i (no blind spot: every pixel above and to the
  right of (i, j) in reach is seen, which the single masked k x k kernel of the first PixelCNN missed);
* the **horizontal stack** at (i, j) sees columns j - p .. j of its own row. At column j the
  feature channels are split into C groups (group g predicts channel g): the first layer's weights
  from input channel c' to group g are masked unless c' < g (mask A), later layers' unless the input
  group g' <= g (mask B), as in PixelCNN's R -> G -> B masks;
* gated units ``tanh(a) * sigmoid(b)`` in both stacks, a residual 1x1 connection in the horizontal
  one, and a head of two masked 1x1 convolutions to C x ``levels`` logits. The last one starts at zero:
  an untrained network predicts the uniform distribution, log2(levels) bits per dimension.

Sampling (:meth:`GatedPixelCNN.generate`) is ancestral, sub-pixel by sub-pixel, from uniforms
drawn by the caller (inverse CDF of the softmax at a temperature). Cached (the default, the idea of
Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models"): every layer
keeps the few rows of activations its kernel reads; a new sub-pixel recomputes the horizontal stack
at that position only (the channels of that sub-pixel's group), and a finished row runs the vertical
stack over that row only. Each position of each layer is computed once, so a sample costs one forward
pass (less the last row's vertical stack, which feeds nothing), whatever the image size, where the
uncached sampler (``cached=False``, the reference) runs the whole network once per sub-pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gen_bench import interrupt
from gen_bench.data.spec import DataSpec


def channel_groups(channels: int, groups: int) -> Tensor:
    """The group (the image channel it serves) of each of ``channels`` feature channels: ``groups``
    contiguous blocks of (nearly) equal size."""
    if channels < groups:
        raise ValueError(f"{channels} feature channels cannot serve {groups} image channels: set "
                         f"model.nets.image.net.hidden and head to at least {groups}")
    return torch.arange(channels) * groups // channels


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed 0/1 mask.

    The kernel's last column is the centre column (the kernels here have no taps right of the centre);
    at the centre row and column the weight from input channel group ``g_in`` to output group
    ``g_out`` is kept when ``g_in < g_out`` (``mask_type="A"``) or ``g_in <= g_out`` (``"B"``).

    Args:
        in_groups: (in_channels,) group of each input channel.
        out_groups: (out_channels,) group of each output channel.
        mask_type: ``"A"`` (the first layer: a sub-pixel never sees itself) or ``"B"``.
        kernel_size: (kh, kw); the centre is at (kh - 1, kw - 1).
    """

    def __init__(self, in_groups: Tensor, out_groups: Tensor, mask_type: str,
                 kernel_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__(len(in_groups), len(out_groups), kernel_size)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        out_g, in_g = out_groups[:, None], in_groups[None]
        allowed = out_g > in_g if mask_type == "A" else out_g >= in_g
        mask = torch.ones_like(self.weight)
        mask[:, :, -1, -1] = allowed.float()
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias)

    def at_one_position(self, window: Tensor) -> Tensor:
        """The convolution's output at one position from its (B, C_in, kh, kw) input window: (B, C_out)."""
        return F.linear(window.flatten(1), self.masked_weight().flatten(1), self.bias)


def gate(x: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the channel dimension (dim 1)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One layer of both stacks.

    Args:
        c_in: Input channels of both stacks (the image's C for the first layer).
        hidden: Feature channels F (a multiple of C).
        kernel: k (odd): the vertical kernel is (k // 2 + 1) x k, the horizontal one 1 x (k // 2 + 1).
        image_channels: C.
        first: The first layer (mask A, no residual connection).
    """

    def __init__(self, c_in: int, hidden: int, kernel: int, image_channels: int, first: bool) -> None:
        super().__init__()
        p = kernel // 2
        self.p, self.first = p, first
        groups_in = torch.arange(c_in) if first else channel_groups(c_in, image_channels)
        groups_f = channel_groups(hidden, image_channels)
        groups_2f = torch.cat([groups_f, groups_f])  # the gate's tanh half and sigmoid half
        self.v_conv = nn.Conv2d(c_in, 2 * hidden, (p + 1, kernel))
        self.h_conv = MaskedConv2d(groups_in, groups_2f, "A" if first else "B", (1, p + 1))
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # rows above: no mask needed
        self.h_out = MaskedConv2d(groups_f, groups_f, "B")

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(B, c_in, H, W) stacks -> (B, F, H, W) stacks."""
        p = self.p
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))                   # (B, 2F, H, W): rows i - p .. i
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]                 # row i gets row i - 1
        h_pre = self.h_conv(F.pad(h, (p, 0, 0, 0))) + self.v_to_h(v_down)
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN over images quantised to ``levels`` per channel.

    Args:
        spec: The dataset's spec (images).
        levels: Quantisation levels per channel (the softmax's size).
        hidden: Feature channels F of each stack (split among the image's channels).
        layers: Gated layers (each one a vertical and a horizontal convolution).
        kernel: Odd kernel width k: each layer reaches k // 2 rows up and columns left and right.
        head: Channels of the hidden 1x1 layer of the output head.
    """

    def __init__(self, spec: DataSpec, levels: int = 256, hidden: int = 32, layers: int = 6, kernel: int = 3,
                 head: int = 64) -> None:
        super().__init__()
        if spec.kind != "image":
            raise ValueError(f"the gated PixelCNN models images, not {spec.kind} data: choose an image data=")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the PixelCNN kernel must be odd, got {kernel}")
        if levels < 2 or layers < 1:
            raise ValueError(f"the PixelCNN needs levels >= 2 and layers >= 1, got {levels} and {layers}")
        c = spec.channels
        self.image_shape = tuple(spec.shape)  # (C, H, W)
        self.levels, self.p = levels, kernel // 2
        self.layers = nn.ModuleList([GatedLayer(c if k == 0 else hidden, hidden, kernel, c, k == 0)
                                     for k in range(layers)])
        self.head1 = MaskedConv2d(channel_groups(hidden, c), channel_groups(head, c), "B")
        self.head2 = MaskedConv2d(channel_groups(head, c), torch.arange(c).repeat_interleave(levels), "B")
        nn.init.zeros_(self.head2.weight)  # uniform predictions at the start
        nn.init.zeros_(self.head2.bias)

    # --- teacher forcing ---------------------------------------------------------------------------
    def to_input(self, q: Tensor) -> Tensor:
        """Levels (long, 0 .. levels - 1) -> network input in [-1, 1]."""
        return q.float() * (2.0 / (self.levels - 1)) - 1.0

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) input in [-1, 1] (:meth:`to_input`) -> (B, levels, C, H, W) logits; the logits of
        sub-pixel t depend on the input sub-pixels before t (raster order, channels within a pixel)."""
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        out = self._head(h)                                            # (B, C * levels, H, W)
        b, _, hh, ww = out.shape
        return out.view(b, -1, self.levels, hh, ww).transpose(1, 2)

    def _head(self, h: Tensor) -> Tensor:
        return self.head2(F.relu(self.head1(F.relu(h))))

    # --- sampling --------------------------------------------------------------------------------
    def generate(self, u: Tensor, temperature: float = 1.0, cached: bool = True,
                 progress: bool = False) -> Tensor:
        """Ancestral sampling in raster order, sub-pixel t drawn by the inverse CDF of its softmax at
        ``temperature`` at the uniform ``u[:, t]``.

        Args:
            u: (B, C * H * W) uniforms in [0, 1), on this network's device; column t belongs to sub-pixel
                ``t = (i * W + j) * C + c``.
            temperature: Divides the logits (> 0; 1: the model's distribution).
            cached: Recompute only what each new sub-pixel affects (:class:`_Cache`); ``False`` runs the
                whole network per sub-pixel (the reference: the same samples, H * W * C times the cost).
            progress: A progress bar over the rows.

        Returns:
            (B, C, H, W) levels (long).
        """
        c, hh, ww = self.image_shape
        if u.shape[1:] != (c * hh * ww,):
            raise ValueError(f"u must be (B, {c * hh * ww}), got {tuple(u.shape)}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        b = u.shape[0]
        u = u.view(b, hh, ww, c)
        q = torch.zeros(b, c, hh, ww, dtype=torch.long, device=u.device)
        cache = _Cache(self, b, u.device, next(self.parameters()).dtype) if cached else None
        rows = tqdm(range(hh), desc="sampling (pixel by pixel)", disable=not progress, leave=False,
                    dynamic_ncols=True, mininterval=1.0)
        for i in rows:
            interrupt.check()  # a run asked to stop (SIGTERM) does not wait for the whole image
            for j in range(ww):
                for ch in range(c):
                    if cache is not None:
                        logits = cache.pixel_logits(i, j, ch)          # (B, levels)
                    else:
                        logits = self(self.to_input(q))[:, :, ch, i, j]
                    q[:, ch, i, j] = inverse_cdf(logits / temperature, u[:, i, j, ch])
                    if cache is not None:
                        cache.set_subpixel(i, j, ch, self.to_input(q[:, ch, i, j]))
            if cache is not None and i < hh - 1:  # the last row's vertical stack feeds nothing
                cache.finish_row(i)
        return q


def inverse_cdf(logits: Tensor, u: Tensor) -> Tensor:
    """(B,) draws from the softmax of (B, K) ``logits`` at (B,) uniforms ``u``: the smallest k whose
    cumulative probability exceeds u."""
    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
    return (cdf <= u[:, None]).sum(-1).clamp(max=logits.shape[-1] - 1)


class _Cache:
    """What the cached sampler keeps per layer: the last p + 1 rows of the vertical stack's input
    (padded), the current row of the horizontal stack's input (padded on the left), the down-shifted
    vertical contribution ``v_to_h`` of the row above, and the current pixel's gated features.

    At sub-pixel (i, j, c) only the feature channels of group c are computed: those of the groups
    before are final already (group g reads channels < g of the pixel), the later ones are not needed
    yet. So every position of every layer is computed once, as in one forward pass.
    """

    def __init__(self, net: GatedPixelCNN, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        c, hh, ww = net.image_shape
        p = net.p
        self.net, self.p = net, p

        def new(*shape: int) -> Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        def rows(groups: Tensor) -> list[Tensor]:  # the channels of each group
            return [torch.nonzero(groups == g).flatten().to(device) for g in range(c)]

        self.v_win: list[Tensor] = []   # per layer: (B, c_in, p + 1, W + 2p), rows i - p .. i
        self.h_row: list[Tensor] = []   # per layer: (B, c_in, W + p), row i; then the last layer's output
        self.v_to_h: list[Tensor] = []  # per layer: (B, 2F, W), from the row above (row -1: zeros)
        self.gated: list[Tensor] = []   # per layer: (B, F), the current pixel's gated features
        self.rows_2f: list[list[Tensor]] = []
        self.rows_f: list[list[Tensor]] = []
        for layer in net.layers:
            c_in, two_f = layer.v_conv.in_channels, layer.v_to_h.in_channels
            self.v_win.append(new(c_in, p + 1, ww + 2 * p))
            self.h_row.append(new(c_in, ww + p))
            self.v_to_h.append(layer.v_to_h(new(two_f, 1, ww))[:, :, 0])
            self.gated.append(new(two_f // 2))
            groups_f = channel_groups(two_f // 2, c)
            self.rows_2f.append(rows(torch.cat([groups_f, groups_f])))  # the tanh half, then the sigmoid half
            self.rows_f.append(rows(groups_f))
        self.h_row.append(new(net.head1.in_channels, ww + p))
        self.head_hidden = new(net.head1.out_channels)  # relu(head1(...)) at the current pixel
        self.rows_head = rows(channel_groups(net.head1.out_channels, c))
        self.rows_logits = rows(torch.arange(c).repeat_interleave(net.levels))
        # the weights do not change while sampling: mask them once, as (out, in) matrices
        self.w_h = [layer.h_conv.masked_weight().flatten(1) for layer in net.layers]
        self.w_out = [layer.h_out.masked_weight().flatten(1) for layer in net.layers]
        self.w_head = (net.head1.masked_weight().flatten(1), net.head2.masked_weight().flatten(1))

    def set_subpixel(self, i: int, j: int, c: int, value: Tensor) -> None:
        """Write sub-pixel (i, j, c)'s network input (B,) where the first layer reads it."""
        self.h_row[0][:, c, self.p + j] = value
        self.v_win[0][:, c, -1, self.p + j] = value

    def pixel_logits(self, i: int, j: int, c: int) -> Tensor:
        """(B, levels) logits of sub-pixel (i, j, c): the horizontal stack and the head at this position,
        group c only."""
        p, net = self.p, self.net
        for k, layer in enumerate(net.layers):
            r2, r1 = self.rows_2f[k][c], self.rows_f[k][c]
            window = self.h_row[k][:, :, j : j + p + 1].flatten(1)     # (B, c_in * (p + 1)): cols j - p .. j
            h_pre = F.linear(window, self.w_h[k][r2], layer.h_conv.bias[r2]) + self.v_to_h[k][:, r2, j]
            self.gated[k][:, r1] = gate(h_pre)                          # (B, F / C)
            h = F.linear(self.gated[k], self.w_out[k][r1], layer.h_out.bias[r1])
            if not layer.first:
                h = h + self.h_row[k][:, r1, p + j]                     # the residual connection
            self.h_row[k + 1][:, r1, p + j] = h
        w1, w2 = self.w_head
        rh, rl = self.rows_head[c], self.rows_logits[c]
        h = F.relu(self.h_row[-1][:, :, p + j])
        self.head_hidden[:, rh] = F.relu(F.linear(h, w1[rh], net.head1.bias[rh]))
        return F.linear(self.head_hidden, w2[rl], net.head2.bias[rl])

    def finish_row(self, i: int) -> None:
        """Row i is complete: run the vertical stack over it, and start row i + 1."""
        layers = self.net.layers
        for k, layer in enumerate(layers):
            v_pre = layer.v_conv(self.v_win[k])                         # (B, 2F, 1, W)
            self.v_to_h[k] = layer.v_to_h(v_pre)[:, :, 0]               # for row i + 1
            if k + 1 < len(layers):
                nxt = self.v_win[k + 1]
                row = F.pad(gate(v_pre), (self.p, self.p))             # (B, F, 1, W + 2p)
                self.v_win[k + 1] = torch.cat([nxt[:, :, 1:], row], dim=2)
        first = self.v_win[0]
        self.v_win[0] = torch.cat([first[:, :, 1:], torch.zeros_like(first[:, :, :1])], dim=2)
        for row in self.h_row:
            row.zero_()


__all__ = ["GatedPixelCNN", "MaskedConv2d", "channel_groups", "gate", "inverse_cdf"]
