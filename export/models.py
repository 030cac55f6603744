"""PyTorch autoencoders over windows ``(B, W, C)`` in scaled units.

Every module maps a window to its reconstruction of the same shape. In ``eval()``
mode the VAE returns the reconstruction of the posterior mean (no sampling), which
is what gets exported. Only the torch trainers import this module.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from export.config import ConvParams, DenseParams, LstmParams, TransformerParams, VaeParams


def _mlp(sizes: list[int], dropout: float, norm: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers.append(nn.Linear(a, b))
        if norm:
            layers.append(nn.LayerNorm(b))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class DenseAE(nn.Module):
    def __init__(self, window: int, n_features: int, p: DenseParams) -> None:
        super().__init__()
        self.window, self.n_features = window, n_features
        d = window * n_features
        sizes = [d, *p.hidden]
        self.encoder = nn.Sequential(*_mlp(sizes, p.dropout), nn.Linear(sizes[-1], p.latent))
        back = [p.latent, *reversed(p.hidden)]
        self.decoder = nn.Sequential(*_mlp(back, p.dropout), nn.Linear(back[-1], d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x.flatten(1))
        return self.decoder(z).reshape(-1, self.window, self.n_features)


class ConvAE(nn.Module):
    """Stride-2 Conv1d encoder, ConvTranspose1d decoder, cropped back to the window."""

    def __init__(self, window: int, n_features: int, p: ConvParams) -> None:
        super().__init__()
        self.window = window
        k, pad = p.kernel_size, p.kernel_size // 2
        enc: list[nn.Module] = []
        ch = n_features
        for c in p.channels:
            enc += [nn.Conv1d(ch, c, k, stride=2, padding=pad), nn.ReLU()]
            ch = c
        enc.append(nn.Conv1d(ch, p.latent, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        ch = p.latent
        for c in reversed(p.channels):
            dec += [nn.ConvTranspose1d(ch, c, k, stride=2, padding=pad, output_padding=1),
                    nn.ReLU()]
            ch = c
        dec.append(nn.Conv1d(ch, n_features, 1))
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.decoder(self.encoder(x.transpose(1, 2)))
        return y[:, :, : self.window].transpose(1, 2)


class LstmAE(nn.Module):
    """LSTM encoder -> last hidden state -> latent -> repeated -> LSTM decoder."""

    def __init__(self, window: int, n_features: int, p: LstmParams) -> None:
        super().__init__()
        self.window = window
        self.encoder = nn.LSTM(n_features, p.hidden, p.num_layers, batch_first=True)
        self.to_latent = nn.Linear(p.hidden, p.latent)
        self.decoder = nn.LSTM(p.latent, p.hidden, p.num_layers, batch_first=True)
        self.head = nn.Linear(p.hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder(x)
        z = self.to_latent(out[:, -1, :])
        rep = z.unsqueeze(1).repeat(1, self.window, 1)
        dec, _ = self.decoder(rep)
        return self.head(dec)


class TransformerAE(nn.Module):
    """Encoder stack -> mean-pooled latent -> decoder stack over positional queries."""

    def __init__(self, window: int, n_features: int, p: TransformerParams) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, p.d_model)
        self.pos = nn.Parameter(torch.randn(1, window, p.d_model) * 0.02)
        self.pos_dec = nn.Parameter(torch.randn(1, window, p.d_model) * 0.02)

        def stack(n: int) -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(p.d_model, p.n_heads, p.dim_feedforward,
                                               p.dropout, batch_first=True)
            return nn.TransformerEncoder(layer, n, enable_nested_tensor=False)

        self.encoder = stack(p.encoder_layers)
        self.to_latent = nn.Linear(p.d_model, p.latent)
        self.from_latent = nn.Linear(p.latent, p.d_model)
        self.decoder = stack(p.decoder_layers)
        self.head = nn.Linear(p.d_model, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(x) + self.pos)
        z = self.to_latent(h.mean(dim=1))
        q = self.from_latent(z).unsqueeze(1) + self.pos_dec
        return self.head(self.decoder(q))


class VAE(nn.Module):
    """Dense VAE on the flattened window (LayerNorm/ReLU/dropout hidden layers)."""

    def __init__(self, window: int, n_features: int, p: VaeParams) -> None:
        super().__init__()
        self.window, self.n_features = window, n_features
        d = window * n_features
        sizes = [d, *p.hidden]
        self.encoder = nn.Sequential(*_mlp(sizes, p.dropout, norm=True))
        self.mu = nn.Linear(sizes[-1], p.latent)
        self.logvar = nn.Linear(sizes[-1], p.latent)
        back = [p.latent, *reversed(p.hidden)]
        self.decoder = nn.Sequential(*_mlp(back, p.dropout, norm=True), nn.Linear(back[-1], d))
        self.last_kl: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x.flatten(1))
        mu = self.mu(h)
        if self.training:
            logvar = self.logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            self.last_kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1))
        else:
            z = mu
        return self.decoder(z).reshape(-1, self.window, self.n_features)


BUILDERS: dict[str, Any] = {
    "dense": DenseAE, "conv": ConvAE, "lstm": LstmAE, "transformer": TransformerAE, "vae": VAE,
}


def build_model(architecture: str, window: int, n_features: int, params: Any) -> nn.Module:
    return BUILDERS[architecture](window, n_features, params)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
