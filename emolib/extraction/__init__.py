"""Stage 4, from texts to vectors: residual-stream means per text in a resumable activation store
(`extract`), emotion vectors with their metadata and arithmetic (`vectors`), vectors in and out of other
tools (`interop`: llama.cpp control vectors, steering-vectors), and the stage calls (`stages`:
corpus -> saved vectors; what an analysis chapter starts from)."""
