/* The chat page: ask a question, stream the answer from POST /v1/ask, link each [n] to its passage.
 *
 * Text from the server (answers, and corpus passages that hold URLs and stray markup) reaches the
 * page only through textContent and createTextNode, never innerHTML, so it always shows literally.
 * Plain script, no framework and no build step: the page must work offline from this origin alone.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const input = $("question");
  const result = $("result");
  const status = $("status");
  const answer = $("answer");
  const warnings = $("warnings");
  const error = $("error");
  const sourcesSection = $("sources-section");
  const sourcesHeading = $("sources-heading");
  const sources = $("sources");
  const dialog = $("passage");
  const toggle = $("passage-toggle");
  const context = $("passage-context");

  // "[3]" or "[1, 2]": one or more citation numbers in brackets.
  const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

  let inFlight = null; // AbortController of the question being answered
  let shown = null; // the citation shown in the passage panel
  let opener = null; // what opened the panel; it gets focus back on close
  const passages = new Map(); // passage id -> Promise of GET /v1/passages/{id}

  // ---- small helpers ------------------------------------------------------------------------

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatDate(value) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(value || "");
    if (!m) return value || "undated";
    const date = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
    return date.toLocaleDateString("en-GB", { day: "numeric", month: "long", year: "numeric", timeZone: "UTC" });
  }

  /** "post", "comment 4" or "reply 2 to comment 4". */
  function describeWhere(c) {
    if (c.kind === "reply") return `reply ${c.reply} to comment ${c.comment}`;
    if (c.kind === "comment") return `comment ${c.comment}`;
    return "post";
  }

  /** Put `whole` in `container` as text, with the first occurrence of `part` in a <mark>. */
  function renderMarked(container, whole, part) {
    container.replaceChildren();
    const at = part ? whole.indexOf(part) : -1;
    if (at < 0) {
      container.append(document.createTextNode(whole));
      return null;
    }
    const mark = make("mark", "", part);
    container.append(document.createTextNode(whole.slice(0, at)), mark,
      document.createTextNode(whole.slice(at + part.length)));
    return mark;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return `${body.error.message} (${response.status})`;
    } catch (_) {
      // not JSON: fall through to the status line
    }
    return `The server answered ${response.status} ${response.statusText}`.trim();
  }

  // ---- API keys: asked for when the server answers 401, kept in this tab's sessionStorage ------

  const KEY_STORE = "rag.apiKey";
  const keyDialog = $("key");

  function withKey(init) {
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key) return init || {};
    const headers = { ...((init && init.headers) || {}), Authorization: `Bearer ${key}` };
    return { ...(init || {}), headers };
  }

  /** Show the key dialog; resolves true once a key is stored, false if the reader cancels. */
  function askForKey(reason) {
    $("key-reason").textContent = reason;
    $("key-input").value = "";
    return new Promise((resolve) => {
      const done = (stored) => {
        keyDialog.removeEventListener("close", onClose);
        resolve(stored);
      };
      const onClose = () => {
        const key = keyDialog.returnValue === "use" ? $("key-input").value.trim() : "";
        if (key) sessionStorage.setItem(KEY_STORE, key);
        done(Boolean(key));
      };
      keyDialog.addEventListener("close", onClose);
      keyDialog.returnValue = "";
      keyDialog.showModal();
    });
  }

  $("key-submit").value = "use";
  $("key-cancel").addEventListener("click", () => keyDialog.close(""));

  /** fetch() with the stored key; on a 401, ask for a key and try again (until cancelled). */
  async function apiFetch(url, init) {
    for (;;) {
      const response = await fetch(url, withKey(init));
      if (response.status !== 401) return response;
      const hadKey = sessionStorage.getItem(KEY_STORE) !== null;
      sessionStorage.removeItem(KEY_STORE);
      const reason = hadKey
        ? "The server did not accept that key. Enter another one."
        : "This server answers only requests that carry an API key.";
      if (!(await askForKey(reason))) return response;
    }
  }

  // ---- server-sent events over fetch (EventSource cannot POST) -------------------------------

  function parseEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // blank, or a comment such as a keep-alive ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return data.length ? { event, data: data.join("\n") } : null;
  }

  async function* readEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let carry = ""; // a trailing "\r" that may be the first half of a "\r\n" split across chunks
    try {
      for (;;) {
        const { value, done } = await reader.read();
        let text = carry + decoder.decode(value || new Uint8Array(), { stream: !done });
        carry = "";
        if (!done && text.endsWith("\r")) {
          carry = "\r";
          text = text.slice(0, -1);
        }
        buffer += text.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event) yield event;
        }
        if (done) {
          const event = parseEvent(buffer);
          if (event) yield event;
          return;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  // ---- the answer ---------------------------------------------------------------------------

  function citeLink(c) {
    const link = make("a", "cite", `[${c.n}]`);
    link.href = `#source-${c.n}`;
    link.dataset.n = String(c.n);
    link.dataset.id = c.id;
    link.setAttribute("aria-label", `Source ${c.n}: ${c.citation.title}, ${describeWhere(c.citation)}`);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      openPassage(c, link);
    });
    return link;
  }

  /** Render an answer into `container`; with `byN`, each known [n] becomes a link to its passage. */
  function renderAnswer(container, text, byN) {
    container.replaceChildren();
    let last = 0;
    for (const m of text.matchAll(MARKER)) {
      const numbers = m[1].split(",").map((s) => Number(s.trim()));
      if (!byN || !numbers.every((n) => byN.has(n))) continue; // unknown markers stay plain text
      container.append(document.createTextNode(text.slice(last, m.index)));
      for (const n of numbers) container.append(citeLink(byN.get(n)));
      last = m.index + m[0].length;
    }
    container.append(document.createTextNode(text.slice(last)));
  }

  function renderSources(list, abstained) {
    sources.replaceChildren();
    sourcesHeading.textContent = abstained ? "Nearest passages (they do not answer it)" : "Sources";
    for (const c of list) {
      const item = make("li", "source");
      item.id = `source-${c.n}`;
      const button = make("button", "source-open");
      button.type = "button";
      button.dataset.id = c.id;
      button.append(make("span", "source-n", `[${c.n}]`), " ", make("span", "source-title", c.citation.title));
      button.addEventListener("click", () => openPassage(c, button));
      const meta = make("span", "meta", `${formatDate(c.citation.date)} · ${describeWhere(c.citation)}`);
      item.append(button, meta, make("p", "snippet corpus", c.text));
      sources.append(item);
    }
    sourcesSection.hidden = list.length === 0;
  }

  function showFinal(response) {
    const list = Array.isArray(response.citations) ? response.citations : [];
    const byN = new Map(list.map((c) => [c.n, c]));
    renderAnswer(answer, response.answer || "", byN);
    result.classList.toggle("abstained", Boolean(response.abstained));
    status.textContent = response.abstained ? "Not answered by the archive" : "";
    status.hidden = !response.abstained;
    warnings.replaceChildren(...(response.warnings || []).map((w) => make("li", "", w)));
    warnings.hidden = warnings.childElementCount === 0;
    renderSources(list, Boolean(response.abstained));
  }

  function resetResult() {
    result.hidden = false;
    result.classList.remove("abstained");
    answer.replaceChildren();
    warnings.replaceChildren();
    warnings.hidden = true;
    error.hidden = true;
    error.textContent = "";
    sources.replaceChildren();
    sourcesSection.hidden = true;
  }

  async function ask(question) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    resetResult();
    status.hidden = false;
    status.textContent = "Searching the archive…";
    answer.setAttribute("aria-busy", "true");
    result.setAttribute("aria-busy", "true");
    try {
      const response = await apiFetch("/v1/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ question, stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
        showFinal(await response.json()); // a server that answered in one piece
        return;
      }
      let final = null;
      for await (const { event, data } of readEvents(response.body)) {
        if (event === "delta") {
          if (status.textContent !== "Writing the answer…") status.textContent = "Writing the answer…";
          answer.append(document.createTextNode(JSON.parse(data).text || ""));
        } else if (event === "done") {
          final = JSON.parse(data);
        } else if (event === "error") {
          const body = JSON.parse(data);
          throw new Error((body.error && body.error.message) || body.message || "The answer failed.");
        }
      }
      if (!final) throw new Error("The answer stopped before it was complete. Please ask again.");
      showFinal(final);
    } catch (err) {
      if (err.name === "AbortError") return;
      status.hidden = true;
      error.textContent = err.message || String(err);
      error.hidden = false;
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        answer.setAttribute("aria-busy", "false");
        result.setAttribute("aria-busy", "false");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question) {
      input.value = "";
      input.reportValidity();
      return;
    }
    ask(question);
  });

  // ---- the passage panel --------------------------------------------------------------------

  function fetchPassage(id) {
    if (!passages.has(id)) {
      const request = apiFetch(`/v1/passages/${encodeURIComponent(id)}`).then(async (response) => {
        if (!response.ok) throw new Error(await errorMessage(response));
        return response.json();
      });
      request.catch(() => passages.delete(id)); // let a later click retry
      passages.set(id, request);
    }
    return passages.get(id);
  }

  function setExpanded(expanded) {
    const noun = shown ? shown.citation.kind : "post";
    toggle.setAttribute("aria-expanded", String(expanded));
    toggle.textContent = `${expanded ? "Hide" : "Show"} full ${noun}`;
    context.hidden = !expanded;
  }

  async function showContext(c) {
    const note = $("passage-context-status");
    const parentSection = $("passage-parent");
    note.hidden = false;
    note.textContent = "Loading…";
    $("passage-node-heading").textContent = "";
    $("passage-node-text").replaceChildren();
    parentSection.hidden = true;
    try {
      const p = await fetchPassage(c.id);
      if (shown !== c) return; // the panel moved on while this loaded
      const node = p.context.node;
      const where = describeWhere(node);
      $("passage-node-heading").textContent = `The whole ${where}`;
      const mark = renderMarked($("passage-node-text"), node.text, p.text);
      const parent = p.context.parent;
      if (parent) {
        $("passage-parent-heading").textContent = `It replies to ${describeWhere(parent)}`;
        $("passage-parent-text").textContent = parent.text;
        parentSection.hidden = false;
      }
      note.hidden = true;
      note.textContent = "";
      if (mark) mark.scrollIntoView({ block: "start" });
    } catch (err) {
      if (shown === c) note.textContent = `Could not load the full ${c.citation.kind}: ${err.message}`;
    }
  }

  function openPassage(c, from) {
    shown = c;
    opener = from || document.activeElement;
    const cit = c.citation;
    $("passage-title").textContent = cit.title;
    const time = $("passage-date");
    time.textContent = formatDate(cit.date);
    if (cit.date) time.dateTime = cit.date;
    else time.removeAttribute("datetime");
    $("passage-where").textContent = describeWhere(cit);
    $("passage-text").textContent = c.text;
    setExpanded(false);
    if (!dialog.open) dialog.showModal();
    $("passage-close").focus();
  }

  toggle.addEventListener("click", () => {
    const expand = toggle.getAttribute("aria-expanded") !== "true";
    setExpanded(expand);
    if (expand && shown) showContext(shown);
  });
  $("passage-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return; // a click inside the panel
    const r = dialog.getBoundingClientRect();
    const inside = event.clientX >= r.left && event.clientX <= r.right
      && event.clientY >= r.top && event.clientY <= r.bottom;
    if (!inside) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    shown = null;
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });
})();
