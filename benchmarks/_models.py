"""Models a user writes, shared by the benchmark scripts: a CNN with the activation applied as a
function, a ResNet-style CNN with batch norm, and a pre-LN transformer whose blocks are stacked
with `nnx.vmap` and applied with `nnx.scan`; and the cross-entropy loss."""

from __future__ import annotations

import jax
import optax
from flax import nnx


class CNN(nnx.Module):
    def __init__(self, depth: int, channels: int, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, channels, (3, 3), rngs=rngs)
        self.convs = nnx.List(
            [nnx.Conv(channels, channels, (3, 3), rngs=rngs) for _ in range(depth - 1)]
        )
        self.head = nnx.Linear(channels, 10, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.stem(x))
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return self.head(h.mean(axis=(1, 2)))


class ResBlock(nnx.Module):
    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(channels, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(channels, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        return jax.nn.relu(x + self.bn2(self.conv2(h)))


class ResNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, channels: int = 32, blocks: int = 3):
        self.stem = nnx.Conv(3, channels, (3, 3), rngs=rngs)
        self.blocks = nnx.List([ResBlock(channels, rngs) for _ in range(blocks)])
        self.head = nnx.Linear(channels, 10, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(axis=(1, 2)))


class Block(nnx.Module):
    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))


class Transformer(nnx.Module):
    def __init__(
        self, vocab: int, width: int, heads: int, depth: int, rngs: nnx.Rngs, *, final_norm=False
    ):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return Block(width, heads, rngs)

        self.blocks = make(rngs)
        self.final = nnx.LayerNorm(width, rngs=rngs) if final_norm else None
        self.head = nnx.Linear(width, vocab, rngs=rngs)

    def __call__(self, tokens):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        x = body(self.embed(tokens), self.blocks)
        return self.head(x if self.final is None else self.final(x))


def cross_entropy(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
