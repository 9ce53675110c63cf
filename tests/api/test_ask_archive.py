"""Questions about the archive itself over a real uvicorn server: answered from the posts' metadata
(title, date, comment counts) with a citation to the post, and the same metadata given to an LLM."""

from __future__ import annotations

import re

import httpx
import openai

from tests.conftest import LiveServer
from tests.scripted import ScriptedBackend, scripted_fixture  # noqa: F401


def post_named(client: httpx.Client, title: str) -> dict[str, object]:
    return next(d for d in client.get("/v1/documents").json()["documents"] if d["title"] == title)


def test_ask_when_a_post_was_published_cites_the_post(client: httpx.Client) -> None:
    data = client.post("/v1/ask", json={"question": "When was End of an Era published?"}).json()
    assert data["answer"] == "“End of an Era” was published on 4 December 2020. [1]"
    assert not data["abstained"] and len(data["citations"]) == 1
    cited = data["citations"][0]["citation"]
    era = post_named(client, "End of an Era")
    assert (cited["document_id"], cited["title"], cited["date"], cited["kind"]) == (
        era["id"],
        "End of an Era",
        "2020-12-04",
        "post",
    )
    passage = client.get(f"/v1/passages/{data['citations'][0]['id']}").json()
    assert passage["citation"]["document_id"] == era["id"]


def test_ask_follow_up_counts_the_comments_of_the_previous_turns_post(client: httpx.Client) -> None:
    body = {
        "question": "How many comments does it have?",
        "history": ["When was A Probation Manifesto published?"],
    }
    data = client.post("/v1/ask", json=body).json()
    manifesto = post_named(client, "A Probation Manifesto")
    comments, replies = manifesto["comments"], manifesto["replies"]
    assert (
        data["answer"]
        == f"“A Probation Manifesto” has {comments} comments and {replies} replies to them. [1]"
    )
    assert data["citations"][0]["citation"]["title"] == "A Probation Manifesto"


def test_chat_which_post_discusses_a_topic_names_and_cites_it(server: LiveServer) -> None:
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    completion = oai.chat.completions.create(
        model="archive", messages=[{"role": "user", "content": "Which post discusses pay progression?"}]
    )
    content = completion.choices[0].message.content or ""
    citations = (completion.model_extra or {})["citations"]
    titles = re.findall(r"“([^”]+)”", content)
    assert titles and titles == [c["citation"]["title"] for c in citations]
    assert "pay progression" in content.lower() and "A Probation Manifesto" in titles


def test_ask_gives_an_llm_backend_the_posts_metadata_in_passage_headers(
    client: httpx.Client, scripted: type[ScriptedBackend]
) -> None:
    scripted.enqueue("It has several comments [1].")
    body = {"question": "How many comments does End of an Era have?", "backend": "scripted"}
    data = client.post("/v1/ask", json=body).json()
    assert data["answer"] == "It has several comments [1]."
    era = post_named(client, "End of an Era")
    prompt, passages = scripted.history[-1]
    user = prompt.messages[1]["content"]
    counts = f'comments="{era["comments"]}" replies="{era["replies"]}"'
    header = f'title="End of an Era" date="2020-12-04" where="post" {counts}>'
    assert header in user.split("\n", 2)[1]  # the first passage is the post's opening
    assert passages[0].chunk.document_id == era["id"]
    assert len(re.findall(r'<passage n="\d+" [^>]* comments="\d+" replies="\d+">', user)) == len(passages)
