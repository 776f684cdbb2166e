"""Random-weight models and a word-level tokenizer, so tests and CI need no downloads.

The tokenizer knows the emotion words, the topic words and common story words, so a tiny model
"writing" stories produces word salad that exercises the same code paths as a real writer: the story
marker, the leak filter (it sometimes says the emotion word), and the length rule.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch

from ..stories.prompts import load_emotions, load_topics
from .profiles import ModelProfile

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|im_start|>", "<|im_end|>"]
COMMON = """
the a an and but or so of to in on at for with from by as is was were be been it he she they we i you
her his their my our your me him them this that there here then when while after before because
not no never very just still again only all some one two three day night room door hand hands face
eyes voice heart breath chest feet window street home house kitchen table phone letter car train
walked looked said asked turned held stood sat waited opened closed smiled laughed cried whispered
shouted ran stopped felt thought knew wanted tried could would should might did had has have do
new story person ai help question answer thank thanks please yes okay can how what why where who
friend mother father sister brother child children man woman people moment time morning evening
slowly quickly quietly suddenly finally little long old small big warm cold dark light rain sun
""".split()
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    words: dict[str, None] = dict.fromkeys([*SPECIALS, "\n"])
    text = " ".join([*COMMON, *load_emotions(), *load_topics()])
    for token in re.findall(r"\w+|[^\w\s]", text.lower()):
        words.setdefault(token)
    # Sentence-final words ("home.") are never produced by encoding (punctuation is split off) but a
    # tiny model can generate them, so its "stories" have sentences, like a real writer's.
    for word in COMMON[:60]:
        words.setdefault(word + ".")
    return tuple(words)


def tiny_tokenizer():
    """A deterministic word-level fast tokenizer with ChatML-style special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Whitespace()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<eos>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


# What the real checkpoints set, and where that comes from. E4B: google/gemma-4-E4B(-it) config.json as
# quoted by public ports (num_hidden_layers 42, hidden 2560, 8 heads / 2 KV heads, head_dim 256,
# global_head_dim 512 on full-attention layers, full attention at every 6th layer (5, 11, ... 41),
# sliding_window 512, final_logit_softcapping 30.0, hidden_size_per_layer_input 256, num_kv_shared_layers 18:
# layers 24..41 reuse the keys and values of the last earlier layer of their type; attention_k_eq_v false;
# audio and vision towers). 31B: google/gemma-4-31B-it config.json text_config as quoted by public ports
# (60 layers, hidden 5376, 32 heads, sliding layers head_dim 256 with 16 KV heads, full-attention layers
# head_dim 512 with 4 KV heads (num_global_key_value_heads), attention_k_eq_v true: keys double as values,
# final_logit_softcapping 30.0, sliding_window 1024, no per-layer inputs, no KV sharing, no MoE; vision
# tower, audio_config null). transformers' Gemma4TextConfig / modeling_gemma4.py implement each option.
# The toy versions keep every option at toy sizes: 6 layers with full attention every 3rd layer.
REAL_STRUCTURE = {
    "tiny-e4b": dict(num_kv_shared_layers=3, hidden_size_per_layer_input=16, global_head_dim=64,
                     final_logit_softcapping=30.0, attention_k_eq_v=False, num_attention_heads=2, num_key_value_heads=1),
    "tiny-31b": dict(num_kv_shared_layers=0, hidden_size_per_layer_input=0, global_head_dim=64, num_global_key_value_heads=1,
                     final_logit_softcapping=30.0, attention_k_eq_v=True, num_attention_heads=4, num_key_value_heads=2),
}


def tiny_model(profile: ModelProfile, vocab_size: int) -> torch.nn.Module:
    """Build the profile's random model; weights depend only on the profile (seeded, RNG untouched)."""
    import transformers as tf

    vocab_size = -(-vocab_size // 8) * 8
    ids = dict(pad_token_id=0, eos_token_id=5, bos_token_id=2)
    layer_types = ["sliding_attention"] * (profile.n_layers - 1) + ["full_attention"]
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=profile.n_layers,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if profile.family == "gemma3":
            text = tf.Gemma3TextConfig(**common, sliding_window=16, layer_types=layer_types)
            if profile.name.endswith("-mm"):
                vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=2, image_size=28, patch_size=14)
                config = tf.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
                return tf.Gemma3ForConditionalGeneration(config)
            return tf.Gemma3ForCausalLM(text)
        if profile.name in REAL_STRUCTURE:
            structure = REAL_STRUCTURE[profile.name]
            types = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(profile.n_layers)]
            text = tf.Gemma4TextConfig(**{**common, **structure}, sliding_window=16, layer_types=types,
                                       vocab_size_per_layer_input=vocab_size)
            return tf.Gemma4ForConditionalGeneration(tf.Gemma4Config(text_config=text, vision_config=None, audio_config=None))
        if profile.family == "gemma4":
            text = tf.Gemma4TextConfig(**common, sliding_window=16, global_head_dim=32, hidden_size_per_layer_input=16,
                                       vocab_size_per_layer_input=vocab_size, layer_types=layer_types)
            if profile.name.endswith("-mm"):
                config = tf.Gemma4Config(text_config=text, vision_config=None, audio_config=None)
                return tf.Gemma4ForConditionalGeneration(config)
            return tf.Gemma4ForCausalLM(text)
        return tf.LlamaForCausalLM(tf.LlamaConfig(**{**common, "head_dim": 32}, tie_word_embeddings=True))
