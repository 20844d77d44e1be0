"""Prompt -> text embeddings, in windows so that no prompt is too long.

A CLIP text encoder reads a fixed window (77 tokens for Stable Diffusion, 32 for the built-in model),
start and end tokens included. A longer prompt is cut into chunks of ``window - 2`` tokens, each
chunk gets its own start/end tokens and padding and is encoded on its own, and the chunks'
hidden states are concatenated along the sequence (the A1111 way). The UNet's cross-attention reads
a sequence of any length, so nothing is truncated. Within one ``encode_prompts`` call every prompt
is padded to the same number of chunks with the encoding of an empty chunk (``<bos> <eos> <pad>...``),
so a prompt and a longer negative prompt can share one batched UNet call; ``TextEmbeddings.cat``
pads the same way across calls.

A prompt that fits one window is encoded exactly as ``tokenizer(text, padding="max_length")`` would.

SDXL reads two encoders: the hidden states of each encoder's penultimate layer, concatenated along
the feature axis (768 + 1280 = 2048), and the second encoder's projected pooled output
(``text_embeds``, 1280) of the first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextEncoder:
    """One tokenizer + text encoder pair and which of its outputs the UNet reads.

    Attributes:
        tokenizer: a transformers tokenizer with ``bos``/``eos``/``pad`` tokens.
        model: ``CLIPTextModel`` or ``CLIPTextModelWithProjection``.
        layer: ``"last"`` (``last_hidden_state``, final layer norm applied: SD 1.x/2.x) or
            ``"penultimate"`` (``hidden_states[-2]``, no final norm: SDXL).
        pooled: whether this encoder provides the pooled ``text_embeds`` (SDXL's second encoder).
    """

    tokenizer: object
    model: torch.nn.Module
    layer: str = "last"
    pooled: bool = False

    @property
    def window(self) -> int:
        """Tokens per window, start/end included: the tokenizer's ``model_max_length`` capped at the
        encoder's position embeddings (tokenizers saved without a limit report 1e30)."""
        limit = int(getattr(self.model.config, "max_position_embeddings", 77))
        return min(int(self.tokenizer.model_max_length), limit)


@dataclass
class TextEmbeddings:
    """Embeddings of N prompts, tensor-like enough for the engine's batching code.

    Attributes:
        hidden: ``[N, L, D]`` in the prior's dtype, ``L`` a multiple of the window.
        pooled: ``[N, P]`` (SDXL's ``text_embeds``) or None.
        pad: ``[window, D]``: the hidden states of an empty chunk, appended by ``cat`` to rows with
            fewer chunks.
        tokens, chunks: per prompt, how many tokens it took (start/end excluded) and how many windows.
    """

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None
    pad: torch.Tensor | None = None
    tokens: list[int] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)

    @property
    def shape(self) -> torch.Size:
        return self.hidden.shape

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def _rows(self, index) -> "TextEmbeddings":
        pooled = None if self.pooled is None else self.pooled[index]
        if isinstance(index, torch.Tensor):  # a device tensor: no host sync, no bookkeeping
            return TextEmbeddings(self.hidden[index], pooled, self.pad)
        picked = list(range(len(self)))[index] if isinstance(index, slice) else list(index)
        return TextEmbeddings(self.hidden[index], pooled, self.pad,
                              [self.tokens[i] for i in picked] if self.tokens else [],
                              [self.chunks[i] for i in picked] if self.chunks else [])

    def __getitem__(self, index) -> "TextEmbeddings":
        """Rows, like a tensor's first axis; an int keeps a batch of one (``expand`` and ``cat`` take it)."""
        if isinstance(index, int):
            index = [index]
        return self._rows(index)

    def unbind(self, dim: int = 0) -> tuple["TextEmbeddings", ...]:
        assert dim == 0, "TextEmbeddings only splits along the prompt axis"
        return tuple(self[i] for i in range(len(self)))

    def expand(self, n: int, *_ignored) -> "TextEmbeddings":
        """Repeat a single prompt ``n`` times (``tensor.expand(n, -1, -1)``)."""
        if len(self) != 1:
            raise ValueError(f"expand needs one prompt, got {len(self)}")
        return self._rows([0] * n)

    def to(self, *args, **kwargs) -> "TextEmbeddings":
        return TextEmbeddings(self.hidden.to(*args, **kwargs),
                              None if self.pooled is None else self.pooled.to(*args, **kwargs),
                              None if self.pad is None else self.pad.to(*args, **kwargs), self.tokens, self.chunks)

    @staticmethod
    def cat(parts: list["TextEmbeddings"]) -> "TextEmbeddings":
        """Concatenate along the prompt axis, padding shorter sequences with empty chunks."""
        length = max(p.hidden.shape[1] for p in parts)
        hidden = []
        for p in parts:
            h = p.hidden
            if h.shape[1] < length:
                if p.pad is None or (length - h.shape[1]) % p.pad.shape[0]:
                    raise ValueError("cannot pad text embeddings: no empty-chunk encoding of matching width")
                fill = p.pad.repeat((length - h.shape[1]) // p.pad.shape[0], 1)
                h = torch.cat([h, fill[None].expand(h.shape[0], -1, -1).to(h.dtype)], dim=1)
            hidden.append(h)
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return TextEmbeddings(torch.cat(hidden), pooled, parts[0].pad,
                              [n for p in parts for n in p.tokens], [n for p in parts for n in p.chunks])

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # torch.cat([...]) on embeddings: the engine batches prompts the same way for every prior.
        if func is torch.cat and (not kwargs or kwargs.get("dim", 0) == 0) and len(args) == 1:
            return cls.cat(list(args[0]))
        return NotImplemented


def token_windows(tokenizer, text: str, window: int) -> tuple[torch.Tensor, int]:
    """Token ids of ``text`` in windows: ``([C, window] long, number of tokens)``.

    Every window is ``<bos> up-to-(window-2)-tokens <eos> <pad>...``; the empty text is one window.
    """
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    body = window - 2
    pieces = [ids[i:i + body] for i in range(0, len(ids), body)] or [[]]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = [[bos] + piece + [eos] + [pad] * (body - len(piece)) for piece in pieces]
    return torch.tensor(rows, dtype=torch.long), len(ids)


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` without start/end tokens (what the windows hold)."""
    return len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids)


@torch.no_grad()
def encode_prompts(encoders: list[TextEncoder], prompts: list[str], device, dtype,
                   zero_empty: bool = False) -> TextEmbeddings:
    """Prompts -> ``TextEmbeddings``, every prompt padded to the longest one's number of chunks.

    Args:
        encoders: one (SD 1.x/2.x, built-in) or two (SDXL) encoders; their hidden states are
            concatenated along the feature axis.
        prompts: any length.
        zero_empty: the empty prompt encodes as zeros (hidden and pooled): SDXL was trained with
            zeroed conditioning as its unconditional input (diffusers' ``force_zeros_for_empty_prompt``).
    """
    per_encoder = []  # per encoder: (list of [C_i, window, D] per prompt, pooled [N, P] or None, empty [window, D])
    tokens: list[int] = []
    chunk_counts = [0] * len(prompts)
    for k, enc in enumerate(encoders):
        windows = [token_windows(enc.tokenizer, p, enc.window) for p in prompts]
        empty_ids, _ = token_windows(enc.tokenizer, "", enc.window)
        if k == 0:
            tokens = [n for _, n in windows]
        ids = torch.cat([w for w, _ in windows] + [empty_ids]).to(device)
        out = enc.model(ids, output_hidden_states=enc.layer == "penultimate")
        hidden = out.hidden_states[-2] if enc.layer == "penultimate" else out.last_hidden_state
        splits = list(hidden.split([w.shape[0] for w, _ in windows] + [1]))
        pooled = None
        if enc.pooled:
            firsts = torch.tensor([sum(w.shape[0] for w, _ in windows[:i]) for i in range(len(prompts))], device=device)
            pooled = out.text_embeds[firsts]
        chunk_counts = [max(c, s.shape[0]) for c, s in zip(chunk_counts, splits[:-1])]
        per_encoder.append((splits[:-1], pooled, splits[-1][0]))

    chunks = max(chunk_counts)
    hidden_parts, pads = [], []
    for rows, _, empty in per_encoder:
        padded = [torch.cat([r, empty[None].expand(chunks - r.shape[0], -1, -1)]) for r in rows]
        hidden_parts.append(torch.stack(padded).flatten(1, 2))  # [N, chunks * window, D_k]
        pads.append(empty)
    hidden = torch.cat(hidden_parts, dim=-1)
    pad = torch.cat(pads, dim=-1)
    pooled_list = [p for _, p, _ in per_encoder if p is not None]
    pooled = pooled_list[0] if pooled_list else None
    if zero_empty:
        empty_rows = torch.tensor([not p.strip() for p in prompts], device=hidden.device)
        hidden = hidden.masked_fill(empty_rows[:, None, None], 0.0)
        if pooled is not None:
            pooled = pooled.masked_fill(empty_rows[:, None], 0.0)
    return TextEmbeddings(hidden.to(dtype), None if pooled is None else pooled.to(dtype), pad.to(dtype),
                          tokens, chunk_counts)
