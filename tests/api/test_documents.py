"""GET /v1/documents and /v1/documents/{id} on the live server: the post list and whole posts."""

from __future__ import annotations

import httpx
import pytest

from rag.ingest.corpus import clean_text
from rag.ingest.index import Index


def test_documents_lists_every_post_with_counts(client: httpx.Client, index: Index) -> None:
    listed = client.get("/v1/documents").raise_for_status().json()["documents"]
    assert [d["id"] for d in listed] == sorted(index.documents)
    for d in listed:
        doc = index.documents[d["id"]]
        assert (d["title"], d["date"], d["source"]) == (doc.title, doc.date, doc.source)
        assert (d["comments"], d["replies"]) == (len(doc.comments), len(doc.replies))
        assert d["comments"] + d["replies"] == len(doc.nodes) - 1


@pytest.mark.parametrize("position", range(5))
def test_document_returns_body_and_comment_tree_located_in_the_raw_file(
    client: httpx.Client, index: Index, position: int
) -> None:
    doc_id = sorted(index.documents)[position]
    doc = index.documents[doc_id]
    body = client.get(f"/v1/documents/{doc_id}").raise_for_status().json()
    assert (body["id"], body["title"], body["source"]) == (doc.id, doc.title, doc.source)

    nodes = [("post", None, None, body["body"])]
    for c in body["comments"]:
        nodes.append(("comment", c["number"], None, c))
        nodes += [("reply", c["number"], r["number"], r) for r in c["replies"]]
    assert [(n.kind, n.comment, n.reply) for n in doc.nodes] == [(k, c, r) for k, c, r, _ in nodes]
    assert [c["number"] for c in body["comments"]] == list(range(1, len(body["comments"]) + 1))

    chunk_ids = set()
    for kind, comment, reply, node in nodes:
        assert clean_text(doc.raw[node["start"] : node["end"]]) == node["text"]
        for pid in node["passage_ids"]:
            chunk = index.chunk(pid)
            assert (chunk.document_id, chunk.kind, chunk.comment, chunk.reply) == (
                doc_id,
                kind,
                comment,
                reply,
            )
            chunk_ids.add(pid)
    assert chunk_ids == {c.id for c in index.chunks if c.document_id == doc_id}


def test_document_passage_ids_resolve_with_passages_endpoint(client: httpx.Client, index: Index) -> None:
    doc_id = sorted(index.documents)[0]
    body = client.get(f"/v1/documents/{doc_id}").json()
    pid = body["comments"][0]["passage_ids"][0]
    passage = client.get(f"/v1/passages/{pid}").raise_for_status().json()
    assert passage["citation"]["kind"] == "comment" and passage["citation"]["comment"] == 1


def test_document_unknown_id_is_404_naming_known_ids(client: httpx.Client, index: Index) -> None:
    response = client.get("/v1/documents/999_nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "999_nope" in error["message"] and sorted(index.documents)[0] in error["message"]
