"""Stage 1, the text: the 171 emotions and 100 topics, the writer's prompts and the keep rule (`prompts`), the
balanced design, its one-call writing and the selection every analysed model reads (`design`), and the
resumable corpus store with its writing loops (`corpus`). No model is needed to read a corpus."""
