"""Training twin of the engine's Titans model (architecture "titans"), in PyTorch.

It computes what the C++ engine computes (docs/SEMANTICS.md; the engine's src/model and
src/memory), written for training speed on a CPU:

- The neural memory uses the paper's chunk-wise update (preset `paper`: one step per token,
  gradients at the chunk start W_n, every token of chunk n reads W_n). All gates of a sequence
  depend only on its inputs, so the per-chunk coefficients of momentum and forgetting are
  computed for every chunk at once; the sequential part is one loop over chunks that forms
  W_{n+1} = A W_n + f S_n - sum_l a_l^T (c * dz_l) from the chunk's explicit per-token
  gradients (docs/SEMANTICS.md 1.6). Autograd differentiates through the whole loop, so the
  outer training learns the initial memory W0, the projections and the gates.
- Reads of all chunks are one batched product with the stacked W_n.
- Windowed attention is computed in blocks of w queries against 2w keys, so its cost is
  O(T w), never O(T^2).

The same code runs in float64 (model.double()) for parity with the engine, and in float32 for
training. A model is described by the engine's config JSON (docs/FILE_FORMAT.md) and saved
to / loaded from engine model files (`save_engine_model`, `load_engine_model`); parameter
names are the engine's tensor names.

State: `forward(tokens, state)` continues a stream; `state=None` starts one. With a state,
any split of a sequence gives the outputs of one whole call (tests/python/test_twin_parity.py).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------------
# Helpers


def rms_norm(x: Tensor, gain: Tensor | None, eps: float) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * gain over the last dimension."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * gain if gain is not None else y


def activate(name: str, z: Tensor) -> Tensor:
    if name == "none":
        return z
    if name == "silu":
        return F.silu(z)
    if name == "gelu":
        return F.gelu(z)  # exact (erf) form, as the engine
    raise ValueError(f"unknown activation {name!r}")


def activate_derivative(name: str, z: Tensor) -> Tensor:
    """d act / d z, written with differentiable ops (the outer training differentiates it)."""
    if name == "none":
        return torch.ones_like(z)
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return cdf + z * pdf
    raise ValueError(f"unknown activation {name!r}")


def apply_rotary(x: Tensor, first_position: int | Tensor, base: float) -> Tensor:
    """Rotary positions as the engine: x [..., n, dh], row i at position first_position + i
    (or positions given as a tensor [n]); interleaved pairs (x[2i], x[2i+1]) turn by
    pos * base^(-2i/dh). Angles in float64, cos/sin rounded to x's dtype."""
    n, dh = x.shape[-2], x.shape[-1]
    if isinstance(first_position, Tensor):
        pos = first_position.to(torch.float64)
    else:
        pos = torch.arange(first_position, first_position + n, dtype=torch.float64)
    freq = torch.tensor(float(base), dtype=torch.float64) ** (
        -2.0 * torch.arange(dh // 2, dtype=torch.float64) / dh)
    angle = pos[:, None] * freq[None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)


def _next_tail(tail: Tensor, x: Tensor) -> Tensor:
    """The last K-1 rows of [tail | x] (the convolution tail after x)."""
    return torch.cat((tail, x), 1)[:, x.shape[1]:]


def causal_conv(x: Tensor, weight: Tensor, tail: Tensor) -> Tensor:
    """Causal depthwise convolution: out_t = sum_j weight[j] * in_{t-K+1+j}.
    x [B, n, C], weight [K, C], tail [B, K-1, C] = the inputs before x (zeros at the start)."""
    K = weight.shape[0]
    padded = torch.cat((tail, x), dim=1)
    n = x.shape[1]
    out = weight[0] * padded[:, 0:n]
    for j in range(1, K):
        out = out + weight[j] * padded[:, j:j + n]
    return out


# ---------------------------------------------------------------------------------------------
# The neural memory


class NeuralMemory(nn.Module):
    """One memory layer (docs/SEMANTICS.md section 1), preset `paper`: step 1, read = chunk,
    read offset 0, commit every `chunk` tokens. Parameters carry the engine's tensor names
    (without the "layers.<l>.memory." prefix)."""

    def __init__(self, c: dict[str, Any]):
        super().__init__()
        unsupported = []
        if c["step"] != 1:
            unsupported.append(f"step {c['step']} (the twin implements step 1)")
        if c["read"] != "chunk" or c["read_offset"] != 0:
            unsupported.append("read rule other than chunk with offset 0")
        if c["chunk"] <= 0:
            unsupported.append("chunk 0 (never commit)")
        if c["output_proj"]:
            unsupported.append("output_proj (a model's memory branch projects)")
        if unsupported:
            raise NotImplementedError("twin memory: unsupported option(s): " +
                                      "; ".join(unsupported))
        self.c = c
        d, H, dh = c["d_model"], c["heads"], c["head_dim"]
        hd = H * dh
        dm = int(dh * c["expansion"])
        self.widths = [(dh if l == 0 else dm, dh if l == c["depth"] - 1 else dm)
                       for l in range(c["depth"])]
        P = nn.Parameter
        if c["store_norm"]:
            self.store_norm = P(torch.ones(d))
        if c["retrieve_norm"]:
            self.retrieve_norm = P(torch.ones(d))
        self.w_q = P(torch.zeros(d, hd))
        self.w_k = P(torch.zeros(d, hd))
        self.w_v = P(torch.zeros(d, hd))
        if c["conv_kernel"] > 0:
            self.conv_q = P(torch.zeros(c["conv_kernel"], hd))
            self.conv_k = P(torch.zeros(c["conv_kernel"], hd))
            self.conv_v = P(torch.zeros(c["conv_kernel"], hd))
        if c["qk_norm"] == "rms":
            self.q_norm = P(torch.ones(H, dh))
            self.k_norm = P(torch.ones(H, dh))
        self.w_theta = P(torch.zeros(d, H))
        self.b_theta = P(torch.zeros(H))
        if c["momentum"]:
            self.w_eta = P(torch.zeros(d, H))
            self.b_eta = P(torch.zeros(H))
        self.w_alpha = P(torch.zeros(d, H))
        self.b_alpha = P(torch.zeros(H))
        self.mlp = nn.ParameterList([P(torch.zeros(H, i, o)) for i, o in self.widths])
        if c["output"] == "ln_residual":
            self.gain = P(torch.zeros(H, dh))
        if c["output_gate"]:
            self.w_gate = P(torch.zeros(d, H))

    # Engine tensor names in file order (src/memory/ weight table).
    def named_engine_tensors(self) -> list[tuple[str, Tensor]]:
        c = self.c
        names = []
        for n in ("store_norm", "retrieve_norm", "w_q", "w_k", "w_v", "conv_q", "conv_k",
                  "conv_v", "q_norm", "k_norm", "w_theta", "b_theta", "w_eta", "b_eta",
                  "w_alpha", "b_alpha"):
            if hasattr(self, n):
                names.append((n, getattr(self, n)))
        names += [(f"mlp.{l}", w) for l, w in enumerate(self.mlp)]
        if c["output"] == "ln_residual":
            names.append(("gain", self.gain))
        if c["output_gate"]:
            names.append(("w_gate", self.w_gate))
        return names

    # --- state -----------------------------------------------------------------------------

    def initial_state(self, batch: int) -> dict[str, Any]:
        """Fresh stream: W = W0, momentum and convolution tails zero, nothing pending."""
        c = self.c
        H, hd = c["heads"], c["heads"] * c["head_dim"]
        dt = self.w_q.dtype
        W = [w.unsqueeze(0).expand(batch, *w.shape).reshape(batch * H, *w.shape[1:])
             for w in self.mlp]
        g = (self.gain.unsqueeze(0).expand(batch, *self.gain.shape).reshape(batch * H, -1)
             if c["output"] == "ln_residual" else None)
        K1 = max(c["conv_kernel"] - 1, 0)
        zeros_tail = torch.zeros(batch, K1, hd, dtype=dt)
        return {
            "W": W, "g": g,
            "S": [torch.zeros_like(w) for w in W] if c["momentum"] else None,
            "Sg": torch.zeros_like(g) if (g is not None and c["momentum"]) else None,
            "tails": {"q": zeros_tail, "k": zeros_tail, "v": zeros_tail, "q_read": zeros_tail},
            "pending": None,
            "position": 0,
        }

    # --- projections -------------------------------------------------------------------------

    def _heads(self, x: Tensor) -> Tensor:
        """[B, n, H*dh] -> [B*H, n, dh] (heads folded into the batch)."""
        B, n, _ = x.shape
        H, dh = self.c["heads"], self.c["head_dim"]
        return x.view(B, n, H, dh).transpose(1, 2).reshape(B * H, n, dh)

    def _qk_norm(self, x: Tensor, gain: Tensor | None) -> Tensor:
        """x [B, n, H*dh] normalised per head (L2, RMS with gain [H, dh], or none)."""
        c = self.c
        if c["qk_norm"] == "none":
            return x
        B, n, hd = x.shape
        xh = x.view(B, n, c["heads"], c["head_dim"])
        if c["qk_norm"] == "l2":
            xh = xh / xh.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        else:
            xh = rms_norm(xh, gain, c["rms_eps"])
        return xh.reshape(B, n, hd)

    def _query(self, r: Tensor, tails: dict, tail_name: str):
        """Queries [B, n, H*dh] of the retrieve input r [B, n, d], the normalised input and the
        new convolution tail of this query stream."""
        c = self.c
        rn = rms_norm(r, self.retrieve_norm, c["rms_eps"]) if c["retrieve_norm"] else r
        q = rn @ self.w_q
        tail = tails[tail_name]
        if c["conv_kernel"] > 0:
            q, tail = causal_conv(q, self.conv_q, tail), _next_tail(tail, q)
        q = activate(c["qkv_activation"], q)
        q = self._qk_norm(q, getattr(self, "q_norm", None))
        return q, rn, tail

    def _gate(self, q: Tensor, rn: Tensor) -> Tensor:
        """Per-head output gate sigmoid(rn w_gate), applied to q-shaped reads [B, n, H*dh]."""
        if not self.c["output_gate"]:
            return q
        B, n, _ = q.shape
        gate = torch.sigmoid(rn @ self.w_gate)  # [B, n, H]
        return (q.view(B, n, self.c["heads"], -1) * gate[..., None]).reshape(B, n, -1)

    # --- the memory network M_W ---------------------------------------------------------------

    def _mlp(self, W: list[Tensor], g: Tensor | None, x: Tensor):
        """M_W(x) for x [G, ..., n, dh] and W[l] [G, ..., in, out]; returns y and the trace."""
        c = self.c
        a, acts, zs = x, [], []
        for l, w in enumerate(W):
            acts.append(a)
            z = a @ w
            zs.append(z)
            if l + 1 < len(W):
                a = activate(c["activation"], z)
        z = zs[-1]
        if c["output"] == "plain":
            return z, (acts, zs, None, None)
        mean = z.mean(-1, keepdim=True)
        var = (z - mean).pow(2).mean(-1, keepdim=True)
        rstd = torch.rsqrt(var + c["layer_norm_eps"])
        n = (z - mean) * rstd
        y = n * (1 + g.unsqueeze(-2)) + x
        return y, (acts, zs, n, rstd)

    # --- writing --------------------------------------------------------------------------------

    def _coefficients(self, eta: Tensor | None, alpha: Tensor):
        """Per-chunk coefficients of SEMANTICS 1.6 for chunks of b tokens (0-based k):
        eta, alpha [G, N, b] -> A0 [G, N] (decay of W_n), f [G, N] (weight of S_n in W),
        E0 [G, N] (decay of S_n), c [G, N, b] (weight of u_k in W), e [G, N, b] (in S)."""
        keep = 1 - alpha
        b = alpha.shape[-1]
        # suffix[k] = prod_{j >= k} keep[j]; A(k+1, b) = suffix[k + 1] (1 for the last token).
        suffix = torch.flip(torch.cumprod(torch.flip(keep, [-1]), -1), [-1])
        a_after = torch.cat((suffix[..., 1:], torch.ones_like(suffix[..., :1])), -1)
        A0 = suffix[..., 0]
        if eta is None:  # S_j = u_j: W_b = A0 W + sum_k A(k+1, b) u_k
            return A0, None, None, a_after, None
        prefix = torch.cumprod(eta, -1)  # E(0, k+1)
        f = (a_after * prefix).sum(-1)
        e_suffix = torch.flip(torch.cumprod(torch.flip(eta, [-1]), -1), [-1])
        e = torch.cat((e_suffix[..., 1:], torch.ones_like(e_suffix[..., :1])), -1)  # E(k+1, b)
        E0 = e_suffix[..., 0]
        # c_k = A(k+1, b) + eta_{k+1} c_{k+1}, c_{b-1} = 1: a backward recursion over the chunk.
        cols = [a_after[..., b - 1]]
        for k in range(b - 2, -1, -1):
            cols.append(a_after[..., k] + eta[..., k + 1] * cols[-1])
        c = torch.stack(cols[::-1], -1)
        return A0, f, E0, c, e

    def _write_chunk(self, W, g, S, Sg, k, v, theta, coef):
        """One chunk: gradients of all its tokens at W (explicit formulas), folded into the new
        W and S. k, v [G, b, dh]; theta [G, b]; coef = (A0, f, E0, c, e) of this chunk."""
        cfg = self.c
        A0, f, E0, c, e = coef
        lam = 1.0 if cfg["loss"] == "sum" else 1.0 / cfg["head_dim"]
        y, (acts, zs, n, rstd) = self._mlp(W, g, k)
        err = (2 * lam) * theta.unsqueeze(-1) * (y - v)  # dl/dy [G, b, dh]
        gsum_c = gsum_e = None
        if cfg["output"] == "plain":
            dz = err
        else:
            gsum_c = (c.unsqueeze(-1) * err * n).sum(-2)
            if e is not None:
                gsum_e = (e.unsqueeze(-1) * err * n).sum(-2)
            gn = err * (1 + g.unsqueeze(-2))
            dz = rstd * (gn - gn.mean(-1, keepdim=True) - n * (gn * n).mean(-1, keepdim=True))
        grads_c, grads_e = [None] * len(W), [None] * len(W)
        for l in range(len(W) - 1, -1, -1):
            a_t = acts[l].transpose(-1, -2)
            if e is None:
                grads_c[l] = a_t @ (c.unsqueeze(-1) * dz)
            else:
                out = dz.shape[-1]
                both = a_t @ torch.cat((c.unsqueeze(-1) * dz, e.unsqueeze(-1) * dz), -1)
                grads_c[l], grads_e[l] = both[..., :out], both[..., out:]
            if l > 0:
                dz = (dz @ W[l].transpose(-1, -2)) * activate_derivative(cfg["activation"],
                                                                           zs[l - 1])
        # Scalars per (batch, head) row, broadcast over [G, in, out] and [G, dh].
        a0, a1 = A0[:, None, None], A0[:, None]
        if e is None:
            W_new = [a0 * w - gc for w, gc in zip(W, grads_c)]
            g_new = a1 * g - gsum_c if g is not None else None
            return W_new, g_new, None, None
        W_new = [a0 * w + f[:, None, None] * s - gc for w, s, gc in zip(W, S, grads_c)]
        S_new = [E0[:, None, None] * s - ge for s, ge in zip(S, grads_e)]
        g_new = Sg_new = None
        if g is not None:
            g_new = a1 * g + f[:, None] * Sg - gsum_c
            Sg_new = E0[:, None] * Sg - gsum_e
        return W_new, g_new, S_new, Sg_new

    # --- one call ---------------------------------------------------------------------------------

    def forward(self, store: Tensor, retrieve: Tensor, state: dict) -> tuple[Tensor, dict]:
        """Writes store [B, n, d] into the memory and reads it with retrieve [B, n, d] (the
        read rule: every token of chunk j reads the weights at the start of chunk j).
        Returns the reads [B, n, H*dh] (after the output gate) and the new state."""
        c = self.c
        B, n, _ = store.shape
        H, dh, b = c["heads"], c["head_dim"], c["chunk"]
        tails = dict(state["tails"])
        xn = rms_norm(store, self.store_norm, c["rms_eps"]) if c["store_norm"] else store
        k, v = xn @ self.w_k, xn @ self.w_v
        if c["conv_kernel"] > 0:
            k, tails["k"] = causal_conv(k, self.conv_k, tails["k"]), _next_tail(tails["k"], k)
            v, tails["v"] = causal_conv(v, self.conv_v, tails["v"]), _next_tail(tails["v"], v)
        k = self._qk_norm(activate(c["qkv_activation"], k), getattr(self, "k_norm", None))
        v = activate(c["qkv_activation"], v)
        q, rn, tails["q"] = self._query(retrieve, tails, "q")
        theta = c["max_lr"] * torch.sigmoid(xn @ self.w_theta + self.b_theta)  # [B, n, H]
        alpha = torch.sigmoid(xn @ self.w_alpha + self.b_alpha)
        eta = torch.sigmoid(xn @ self.w_eta + self.b_eta) if c["momentum"] else None

        # The tokens of the current chunk not yet written come first.
        kh, vh = self._heads(k), self._heads(v)
        gates = [x.transpose(1, 2).reshape(B * H, n) for x in (theta, alpha)]
        gates.append(eta.transpose(1, 2).reshape(B * H, n) if eta is not None else None)
        p = 0
        if state["pending"] is not None:
            pk, pv, pg = state["pending"]
            p = pk.shape[1]
            kh, vh = torch.cat((pk, kh), 1), torch.cat((pv, vh), 1)
            gates = [torch.cat((a, x), 1) if x is not None else None for a, x in zip(pg, gates)]
        theta_h, alpha_h, eta_h = gates
        total = p + n
        full = total // b
        W, g, S, Sg = state["W"], state["g"], state["S"], state["Sg"]
        Ws, gs = [W], [g]
        if full > 0:
            cut = full * b
            G = B * H
            coef = self._coefficients(
                eta_h[:, :cut].view(G, full, b) if eta_h is not None else None,
                alpha_h[:, :cut].view(G, full, b))
            kc, vc = kh[:, :cut].view(G, full, b, dh), vh[:, :cut].view(G, full, b, dh)
            tc = theta_h[:, :cut].view(G, full, b)
            for j in range(full):
                cj = tuple(x[:, j] if x is not None else None for x in coef)
                W, g, S, Sg = self._write_chunk(W, g, S, Sg, kc[:, j], vc[:, j], tc[:, j], cj)
                Ws.append(W)
                gs.append(g)
        rest = full * b
        pending = None
        if rest < total:
            pending = (kh[:, rest:], vh[:, rest:],
                       [x[:, rest:] if x is not None else None for x in (theta_h, alpha_h, eta_h)])

        # Reads: token at extended index i reads Ws[i // b]; the first p are not read again.
        chunks = (total + b - 1) // b
        qh = self._heads(q)
        qh = F.pad(qh, (0, 0, p, chunks * b - total))
        G = B * H
        qc = qh.view(G, chunks, b, dh)
        Wst = [torch.stack([w[l] for w in Ws[:chunks]], 1) for l in range(len(W))]
        gst = torch.stack(gs[:chunks], 1) if g is not None else None  # [G, chunks, dh]
        y, _ = self._mlp(Wst, gst, qc)
        y = y.reshape(G, chunks * b, dh)[:, p:p + n]
        y = y.view(B, H, n, dh).transpose(1, 2).reshape(B, n, H * dh)
        y = self._gate(y, rn)
        new_state = {"W": W, "g": g, "S": S, "Sg": Sg, "tails": tails, "pending": pending,
                     "position": state["position"] + n}
        return y, new_state

    def read(self, retrieve: Tensor, state: dict) -> tuple[Tensor, dict]:
        """Reads retrieve [B, n, d] with the current weights (all complete chunks written),
        writing nothing: MAC's context tokens. Queries have their own convolution tail."""
        c = self.c
        B, n, _ = retrieve.shape
        H, dh = c["heads"], c["head_dim"]
        tails = dict(state["tails"])
        q, rn, tails["q_read"] = self._query(retrieve, tails, "q_read")
        y, _ = self._mlp(state["W"], state["g"], self._heads(q))
        y = y.view(B, H, n, dh).transpose(1, 2).reshape(B, n, H * dh)
        new_state = dict(state)
        new_state["tails"] = tails
        return self._gate(y, rn), new_state


# ---------------------------------------------------------------------------------------------
# Attention


def attend(q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, window: int,
           pk: Tensor | None, pv: Tensor | None) -> Tensor:
    """Dense masked attention: q [B, H, n, dh] at positions q_pos [n], k, v [B, H, m, dh] at
    k_pos [m] (negative = padding), persistent pk, pv [H, Np, dh]. Key j is visible to query t
    if 0 <= j <= t and (window == 0 or j > t - window)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ k.transpose(-1, -2)) * scale
    visible = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] >= 0)
    if window > 0:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    s = s.masked_fill(~visible, float("-inf"))
    if pk is not None:
        sp = (q @ pk.transpose(-1, -2)) * scale
        s = torch.cat((sp, s), -1)
        v = torch.cat((pv.unsqueeze(0).expand(v.shape[0], *pv.shape), v), -2)
    return torch.softmax(s, -1) @ v


def attend_windowed(q: Tensor, k: Tensor, v: Tensor, first: int, window: int,
                    pk: Tensor | None, pv: Tensor | None) -> Tensor:
    """The same for a window w > 0 in blocks: queries q [B, H, n, dh] at positions first..,
    keys k, v [B, H, w + n, dh] at positions first - w .. (the first rows may be padding,
    marked by positions < 0). Each block of w queries attends to 2w keys: O(n w)."""
    B, H, n, dh = q.shape
    w = window
    nb = (n + w - 1) // w
    pad = nb * w - n
    qb = F.pad(q, (0, 0, 0, pad)).view(B, H, nb, w, dh)
    kp = F.pad(k, (0, 0, 0, pad))
    vp = F.pad(v, (0, 0, 0, pad))
    kb = kp.unfold(2, 2 * w, w).transpose(-1, -2)  # [B, H, nb, 2w, dh]
    vb = vp.unfold(2, 2 * w, w).transpose(-1, -2)
    scale = 1.0 / math.sqrt(dh)
    s = (qb @ kb.transpose(-1, -2)) * scale  # [B, H, nb, w, 2w]
    i = torch.arange(w)
    j = torch.arange(2 * w)
    rel = (i[:, None] + w) - j[None, :]  # query position - key position within a block
    visible = (rel >= 0) & (rel < w)
    kpos = first - w + torch.arange(nb)[:, None] * w + j[None, :]  # [nb, 2w]
    visible = visible[None] & (kpos >= 0)[:, None, :]
    s = s.masked_fill(~visible, float("-inf"))
    if pk is not None:
        sp = (qb @ pk[None, :, None].transpose(-1, -2)) * scale  # [B, H, nb, w, Np]
        s = torch.cat((sp, s), -1)
        p = torch.softmax(s, -1)
        Np = pk.shape[-2]
        out = p[..., :Np] @ pv[None, :, None] + p[..., Np:] @ vb
    else:
        out = torch.softmax(s, -1) @ vb
    return out.reshape(B, H, nb * w, dh)[:, :, :n]


class Attention(nn.Module):
    """Windowed causal attention with rotary positions, GQA and persistent key/value pairs."""

    def __init__(self, d: int, a: dict[str, Any]):
        super().__init__()
        self.a = a
        qw, kw = a["heads"] * a["head_dim"], a["kv_heads"] * a["head_dim"]
        P = nn.Parameter
        self.w_q = P(torch.zeros(d, qw))
        self.w_k = P(torch.zeros(d, kw))
        self.w_v = P(torch.zeros(d, kw))
        self.w_o = P(torch.zeros(qw, d))
        if a["persistent"] > 0:
            self.persistent_k = P(torch.zeros(a["persistent"], kw))
            self.persistent_v = P(torch.zeros(a["persistent"], kw))

    def named_engine_tensors(self):
        names = [("w_q", self.w_q), ("w_k", self.w_k), ("w_v", self.w_v), ("w_o", self.w_o)]
        if self.a["persistent"] > 0:
            names += [("persistent_k", self.persistent_k), ("persistent_v", self.persistent_v)]
        return names

    def split(self, x: Tensor, heads: int) -> Tensor:
        B, n, _ = x.shape
        return x.view(B, n, heads, self.a["head_dim"]).transpose(1, 2)

    def persistent(self):
        a = self.a
        if a["persistent"] == 0:
            return None, None
        g = a["heads"] // a["kv_heads"]
        pk = self.persistent_k.view(a["persistent"], a["kv_heads"], a["head_dim"]).transpose(0, 1)
        pv = self.persistent_v.view(a["persistent"], a["kv_heads"], a["head_dim"]).transpose(0, 1)
        return pk.repeat_interleave(g, 0), pv.repeat_interleave(g, 0)

    def project(self, u: Tensor, positions: Tensor):
        """Rotated q [B, H, n, dh], rotated k and v [B, Hkv, n, dh] of u [B, n, d]."""
        a = self.a
        q = apply_rotary(self.split(u @ self.w_q, a["heads"]), positions, a["rope_base"])
        k = apply_rotary(self.split(u @ self.w_k, a["kv_heads"]), positions, a["rope_base"])
        v = self.split(u @ self.w_v, a["kv_heads"])
        return q, k, v

    def expand_kv(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(self.a["heads"] // self.a["kv_heads"], 1)

    def out(self, o: Tensor) -> Tensor:
        B, H, n, dh = o.shape
        return o.transpose(1, 2).reshape(B, n, H * dh) @ self.w_o

    def forward(self, u: Tensor, cache: dict | None) -> tuple[Tensor, dict]:
        """SWA(u) for u [B, n, d] continuing the stream in `cache` (the last w rotated keys and
        values and the position); returns [B, n, d] and the new cache."""
        a = self.a
        B, n, _ = u.shape
        w = a["window"]
        first = cache["position"] if cache else 0
        pos = torch.arange(first, first + n)
        q, k, v = self.project(u, pos)
        if cache is not None and cache["k"] is not None:
            k = torch.cat((cache["k"], k), 2)
            v = torch.cat((cache["v"], v), 2)
        m = k.shape[2]
        pk, pv = self.persistent()
        if w > 0:
            kp = F.pad(k, (0, 0, w - (m - n), 0)) if m - n < w else k[:, :, m - n - w:]
            vp = F.pad(v, (0, 0, w - (m - n), 0)) if m - n < w else v[:, :, m - n - w:]
            o = attend_windowed(q, self.expand_kv(kp), self.expand_kv(vp), first, w, pk, pv)
            keep = min(w, first + n)
        else:
            kpos = torch.arange(first + n - m, first + n)
            o = attend(q, self.expand_kv(k), self.expand_kv(v), pos, kpos, 0, pk, pv)
            keep = first + n
        new_cache = {"k": k[:, :, m - keep:], "v": v[:, :, m - keep:], "position": first + n}
        return self.out(o), new_cache


# ---------------------------------------------------------------------------------------------
# Blocks and the model


class Block(nn.Module):
    def __init__(self, kind: str, cfg: dict[str, Any]):
        super().__init__()
        self.kind = kind
        self.cfg = cfg
        d, f = cfg["d_model"], cfg["ffn_hidden"]
        P = nn.Parameter
        self.norm = P(torch.ones(d))
        if kind == "mal":
            self.attn_norm = P(torch.ones(d))
        if kind == "mag":
            self.gate_norm_y = P(torch.ones(d))
            self.gate_norm_m = P(torch.ones(d))
        if kind != "lmm":
            self.attention = Attention(d, cfg["attention"])
        if kind != "attention":
            m = cfg["memory"]
            hd = m["heads"] * m["head_dim"]
            self.memory = NeuralMemory(m)
            self.branch_norm = P(torch.ones(m["heads"], m["head_dim"]))
            self.branch_w_g = P(torch.zeros(d, hd))
            self.branch_w_o = P(torch.zeros(hd, d))
        self.ffn_norm = P(torch.ones(d))
        self.ffn_gate = P(torch.zeros(d, f))
        self.ffn_up = P(torch.zeros(d, f))
        self.ffn_down = P(torch.zeros(f, d))

    def named_engine_tensors(self):
        k = self.kind
        names = [("norm", self.norm)]
        if k == "mal":
            names.append(("attn_norm", self.attn_norm))
        if k == "mag":
            names += [("gate_norm_y", self.gate_norm_y), ("gate_norm_m", self.gate_norm_m)]
        if k != "lmm":
            names += [("attention." + n, t) for n, t in self.attention.named_engine_tensors()]
        if k != "attention":
            names += [("memory." + n, t) for n, t in self.memory.named_engine_tensors()]
            names += [("memory_branch.norm", self.branch_norm),
                      ("memory_branch.w_g", self.branch_w_g),
                      ("memory_branch.w_o", self.branch_w_o)]
        names += [("ffn_norm", self.ffn_norm), ("ffn_gate", self.ffn_gate),
                  ("ffn_up", self.ffn_up), ("ffn_down", self.ffn_down)]
        return names

    def n(self, x: Tensor, gain: Tensor) -> Tensor:
        return rms_norm(x, gain, self.cfg["norm_eps"])

    def branch(self, m: Tensor, retrieve: Tensor) -> Tensor:
        """W_o (RMSNorm_heads(m) * SiLU(retrieve W_g)): m [B, n, H*dh] -> [B, n, d]."""
        B, n, hd = m.shape
        H = self.cfg["memory"]["heads"]
        mn = rms_norm(m.view(B, n, H, -1), self.branch_norm, self.cfg["norm_eps"])
        return (mn.reshape(B, n, hd) * F.silu(retrieve @ self.branch_w_g)) @ self.branch_w_o

    def memory_branch(self, store, retrieve, mstate):
        m, mstate = self.memory(store, retrieve, mstate)
        return self.branch(m, retrieve), mstate

    def forward(self, x: Tensor, st: dict) -> tuple[Tensor, dict]:
        k = self.kind
        st = dict(st)
        if k in ("lmm", "mal"):
            u = self.n(x, self.norm)
            t, st["memory"] = self.memory_branch(u, u, st["memory"])
            x = x + t
            if k == "mal":
                t, st["attention"] = self.attention(self.n(x, self.attn_norm), st["attention"])
                x = x + t
        elif k == "mag":
            u = self.n(x, self.norm)
            y, st["attention"] = self.attention(u, st["attention"])
            m, st["memory"] = self.memory_branch(u, u, st["memory"])
            x = x + self.n(y, self.gate_norm_y) * torch.sigmoid(self.n(m, self.gate_norm_m))
        elif k == "attention":
            t, st["attention"] = self.attention(self.n(x, self.norm), st["attention"])
            x = x + t
        else:
            x, st = self.mac(x, st)
        u = self.n(x, self.ffn_norm)
        x = x + (F.silu(u @ self.ffn_gate) * (u @ self.ffn_up)) @ self.ffn_down
        return x, st

    def mac(self, x: Tensor, st: dict) -> tuple[Tensor, dict]:
        """Memory as context, segment by segment (a call may end inside a segment; the
        segment's interleaved keys and values so far are the attention state)."""
        C = self.cfg["segment"]
        att = self.attention
        u = self.n(x, self.norm)
        B, n, _ = u.shape
        position = st["position"]
        mstate, seg = st["memory"], st["attention"]
        outs = []
        pk, pv = att.persistent()
        r0 = 0
        while r0 < n:
            pos = position + r0
            rows = min(n - r0, C - pos % C)
            if pos % C == 0:
                seg = None  # a new segment: its cache starts empty
            us = u[:, r0:r0 + rows]
            m, mstate = self.memory.read(us, mstate)
            h = self.branch(m, us)
            z = torch.stack((h, us), 2).reshape(B, 2 * rows, -1)  # h_0, u_0, h_1, u_1, ...
            zpos = torch.arange(pos, pos + rows).repeat_interleave(2)
            q, k, v = att.project(z, zpos)
            if seg is not None:
                k, v = torch.cat((seg["k"], k), 2), torch.cat((seg["v"], v), 2)
            m_rows = k.shape[2]
            # Causal order in the interleaved segment: row r sees rows <= r.
            qrow = torch.arange(m_rows - 2 * rows, m_rows)
            o = attend(q, att.expand_kv(k), att.expand_kv(v), qrow, torch.arange(m_rows), 0,
                       pk, pv)
            seg = {"k": k, "v": v}
            y = att.out(o[:, :, 1::2])  # the u slots
            t, mstate = self.memory_branch(y, y, mstate)
            outs.append(y * torch.sigmoid(t))
            r0 += rows
        st["memory"], st["attention"] = mstate, seg
        return x + torch.cat(outs, 1), st


class TitansModel(nn.Module):
    """The engine's Titans model (config: the engine's ModelConfig JSON as a dict)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        if config.get("architecture", "titans") != "titans":
            raise NotImplementedError("the twin implements architecture 'titans'")
        if config["vocab_size"] <= 0:
            raise NotImplementedError("the twin needs a vocabulary (vocab_size > 0)")
        if "mac" in config["layers"] and config["segment"] != config["memory"]["chunk"]:
            raise ValueError("segment must equal memory.chunk")
        self.config = config
        d, V = config["d_model"], config["vocab_size"]
        self.embedding = nn.Parameter(torch.zeros(V, d))
        self.layers = nn.ModuleList(Block(k, config) for k in config["layers"])
        self.final_norm = nn.Parameter(torch.ones(d))
        if not config["tie_embeddings"]:
            self.lm_head = nn.Parameter(torch.zeros(d, V))

    def named_engine_tensors(self) -> list[tuple[str, Tensor]]:
        names = [("embedding", self.embedding)]
        for l, block in enumerate(self.layers):
            names += [(f"layers.{l}.{n}", t) for n, t in block.named_engine_tensors()]
        names.append(("final_norm", self.final_norm))
        if not self.config["tie_embeddings"]:
            names.append(("lm_head", self.lm_head))
        return names

    def initial_state(self, batch: int) -> dict:
        return {
            "position": 0,
            "layers": [{"memory": b.memory.initial_state(batch) if b.kind != "attention" else None,
                        "attention": None, "position": 0} for b in self.layers],
        }

    def forward(self, tokens: Tensor, state: dict | None = None,
                return_hidden: bool = False) -> tuple[Tensor, dict]:
        """Logits [B, n, V] for tokens [B, n], continuing `state` (None: a new stream)."""
        B, n = tokens.shape
        if state is None:
            state = self.initial_state(B)
        x = self.embedding[tokens]
        new_layers = []
        for block, st in zip(self.layers, state["layers"]):
            st = dict(st, position=state["position"])
            x, st = block(x, st)
            new_layers.append(st)
        h = rms_norm(x, self.final_norm, self.config["norm_eps"])
        logits = h @ (self.embedding.t() if self.config["tie_embeddings"] else self.lm_head)
        new_state = {"position": state["position"] + n, "layers": new_layers}
        return (logits, new_state) if not return_hidden else (logits, new_state, h)


# ---------------------------------------------------------------------------------------------
# Engine model files (safetensors: docs/FILE_FORMAT.md)


def _config_json(config: dict[str, Any]) -> str:
    return json.dumps(config, separators=(",", ":"))


def save_engine_model(model: TitansModel, path: str) -> None:
    """Writes `model` as an engine model file (F32 tensors in the engine's table order),
    atomically (temporary file, then rename)."""
    import os
    import tempfile

    header: dict[str, Any] = {"__metadata__": {"format": "titans.model", "format_version": "1",
                                               "config": _config_json(model.config)}}
    blobs, offset = [], 0
    for name, t in model.named_engine_tensors():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the model private
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_safetensors(path: str) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a safetensors file (F32, F64, I32, I64 tensors)."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    meta = header.pop("__metadata__", {})
    base = 8 + size
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[base + a:base + b], dtype=dtypes[info["dtype"]])
        tensors[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return meta, tensors


def load_engine_model(path: str, dtype: torch.dtype = torch.float32) -> TitansModel:
    """A twin with the weights of an engine model file."""
    meta, tensors = read_safetensors(path)
    if meta.get("format") != "titans.model":
        raise ValueError(f"{path}: not a titans model file")
    model = TitansModel(json.loads(meta["config"]))
    with torch.no_grad():
        for name, t in model.named_engine_tensors():
            if name not in tensors:
                raise ValueError(f"{path}: missing tensor {name}")
            if tuple(tensors[name].shape) != tuple(t.shape):
                raise ValueError(f"{path}: tensor {name} has shape {list(tensors[name].shape)},"
                                 f" the config needs {list(t.shape)}")
            t.copy_(tensors[name])
    return model.to(dtype)
