"""Logit lens: read an emotion vector through the model's own final norm and unembedding.

The norm is the model's module itself, so its convention comes with it: Gemma 3's RMSNorm scales by
(1 + weight), Gemma 4's by weight, Llama's by weight (tests pin each). The norm divides out the
vector's length, so only its direction and the norm's per-dimension gain matter. Final-logit
softcapping (Gemma 4: cap * tanh(logits / cap), cap 30) is applied where the model has it, so a lens of
the last block's output equals the model's own logits; it is monotonic and never changes a ranking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..models.hooks import final_norm
from ..stories.prompts import leak_pattern

# Top tokens Anthropic (A, Claude) and rain1955 (R, Gemma-4-E4B, layer 28) report (../shared/METHOD.md).
PUBLISHED_LENS = {
    "happy": ("excited, excitement, exciting", "delighted, celebrates, joyful"),
    "desperate": ("desperate, urgent, bankrupt", "desperately, hopeless, desperate"),
    "afraid": ("panic, terror, paranoid", "Panic, and Korean/Chinese tokens for 'anxiety'"),
    "calm": ("relax, thought, enjoyed", "peaceful, calmness, leisurely"),
    "angry": ("anger, angry, rage", "angrily, angry, Angry"),
    "sad": ("grief, tears, lonely", "loneliness, sadness, triste"),
    "loving": ("loving, love, warmth", "nurturing, heartwarming, nourishing"),
    "guilty": ("guilt, conscience, shame", "plagued, betray, ashamed"),
}


def softcap(model: torch.nn.Module) -> float | None:
    """The model's final-logit softcap (None where it has none)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "final_logit_softcapping", None)


@torch.inference_mode()
def lens_logits(model: torch.nn.Module, vectors: torch.Tensor, chunk: int = 32768) -> torch.Tensor:
    """(E, V) logits of each vector after the model's final norm, unembedding and softcap (fp32 out)."""
    head = model.get_output_embeddings().weight
    norm = final_norm(model)
    hidden = norm(vectors.to(device=head.device, dtype=head.dtype)[:, None, :])[:, 0]
    logits = torch.cat([(hidden @ head[start: start + chunk].T).float().cpu() for start in range(0, head.shape[0], chunk)],
                       dim=1)
    cap = softcap(model)
    return torch.tanh(logits / cap) * cap if cap else logits


_WORD = re.compile(r"^[^\W\d_]{3,}$")
_WORD_START = ("\u2581", "\u0120")  # SentencePiece "▁" and byte-level BPE "Ġ" mark a token that starts a word


def token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id]).strip()


def _marks_word_starts(tokenizer: Any) -> bool:
    """Whether the vocabulary marks word-initial tokens (word-level vocabularies do not need to)."""
    if not hasattr(tokenizer, "_emolib_marks"):
        sample = tokenizer.convert_ids_to_tokens(list(range(0, len(tokenizer), max(1, len(tokenizer) // 2000))))
        tokenizer._emolib_marks = any(str(t).startswith(_WORD_START) for t in sample)
    return tokenizer._emolib_marks


def is_word(tokenizer: Any, token_id: int) -> bool:
    """A whole word of 3+ letters in any script: word-initial where the vocabulary marks that."""
    if not _WORD.match(token_text(tokenizer, token_id)):
        return False
    return not _marks_word_starts(tokenizer) or str(tokenizer.convert_ids_to_tokens(token_id)).startswith(_WORD_START)


def top_tokens(logits: torch.Tensor, tokenizer: Any, k: int = 10, bottom: bool = False, words_only: bool = True,
               pool: int = 400) -> list[list[tuple[str, float]]]:
    """Per row, the k highest (or lowest) tokens; `words_only` keeps whole words of 3+ letters (any
    script: Gemma's lens surfaces multilingual words), dropping word pieces and punctuation."""
    values, indices = (-logits if bottom else logits).topk(min(pool, logits.shape[1]), dim=1)
    out = []
    for row_values, row_indices in zip(values.tolist(), indices.tolist()):
        picked = []
        for value, index in zip(row_values, row_indices):
            text = token_text(tokenizer, index)
            if words_only and not is_word(tokenizer, index):
                continue
            if text not in [t for t, _ in picked]:
                picked.append((text, -value if bottom else value))
            if len(picked) == k:
                break
        out.append(picked)
    return out


def lens_table(model: torch.nn.Module, tokenizer: Any, vectors: torch.Tensor, emotions: Sequence[str], k: int = 8,
               words_only: bool = True) -> pd.DataFrame:
    """A table emotion -> top and bottom tokens."""
    logits = lens_logits(model, vectors)
    top = top_tokens(logits, tokenizer, k, words_only=words_only)
    bottom = top_tokens(logits, tokenizer, k, bottom=True, words_only=words_only)
    return pd.DataFrame({"top tokens": [", ".join(t for t, _ in row) for row in top],
                         "bottom tokens": [", ".join(t for t, _ in row) for row in bottom]},
                        index=pd.Index(list(emotions), name="emotion"))


def lens_hits(logits: torch.Tensor, tokenizer: Any, emotions: Sequence[str], k: int = 20) -> pd.Series:
    """Whether each emotion's own word (or a form of it) is among its vector's top-k lens words —
    a simple, checkable summary of how readable the vectors are through the unembedding."""

    tops = top_tokens(logits, tokenizer, k)
    return pd.Series([any(leak_pattern(e).fullmatch(t.lower()) for t, _ in row) for e, row in zip(emotions, tops)],
                     index=pd.Index(list(emotions), name="emotion"))


def chance_self_named(model: torch.nn.Module, tokenizer: Any, vectors: torch.Tensor, emotions: Sequence[str],
                      observed: int, k: int = 20, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """The self-naming count's chance baseline: each emotion's vector replaced by a random direction of the same
    norm (isotropic Gaussian, seeded), the count of emotions whose own word is then among the top-k lens words,
    over `draws` draws. A vocabulary full of emotion words, or a lens that favours them whatever the direction,
    shows up here rather than as a finding. p: the share of draws reaching `observed` (with the observed
    count itself counted, so never 0)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = vectors.float().cpu()
    norms = vectors.norm(dim=-1, keepdim=True)
    counts = []
    for _ in range(draws):
        noise = torch.randn(vectors.shape, generator=generator)
        counts.append(int(lens_hits(lens_logits(model, noise / noise.norm(dim=-1, keepdim=True) * norms), tokenizer,
                                    emotions, k).sum()))
    values = torch.tensor(counts, dtype=torch.float64)
    return {"mean": float(values.mean()), "q95": float(values.quantile(0.95)), "max": float(values.max()),
            "draws": draws, "p": float((1 + (values >= observed).sum()) / (draws + 1))}


def naming_matrix(logits: torch.Tensor, tokenizer: Any, emotions: Sequence[str], k: int = 20) -> np.ndarray:
    """(E, E) booleans: [v, e] when emotion e's own word (or a form of it) is among the top-k lens words of vector v.
    Its diagonal is `lens_hits`."""
    tops = top_tokens(logits, tokenizer, k)
    patterns = [leak_pattern(e) for e in emotions]
    return np.array([[any(pattern.fullmatch(t.lower()) for t, _ in row) for pattern in patterns] for row in tops])


def label_permutation_null(matrix: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Does emotion e's vector rank e's own words above where the *other* emotions' vectors rank them? The observed
    self-naming count (the diagonal of `naming_matrix`) against the count when the vectors are handed to the
    emotions in a random order (`n_perm` permutations): a lens that surfaces emotion words for any emotion vector
    (say, every vector naming "happy") fills the null as much as the diagonal. p floors at 1 / (n_perm + 1)."""
    rng = np.random.default_rng(seed)
    n = len(matrix)
    observed = int(np.trace(matrix))
    columns = np.arange(n)
    null = np.array([int(matrix[rng.permutation(n), columns].sum()) for _ in range(n_perm)])
    return {"observed": observed, "mean": float(null.mean()), "q95": float(np.quantile(null, 0.95)),
            "max": int(null.max()), "permutations": n_perm, "p": float((1 + (null >= observed).sum()) / (n_perm + 1))}
