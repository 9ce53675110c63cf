"""Cited answers: rewrite a follow-up (`rewrite`), build the prompt (`prompting`), run a backend
with checked citations and a fallback (`answering`), and say how well the cited passages support
the answer (`support`). The backends themselves are in `rag.backends`."""
