"""Cited answers: rewrite a follow-up (`rewrite`), build the prompt (`prompting`), and run a backend
with checked citations and a fallback (`answering`). The backends themselves are in `rag.backends`."""
