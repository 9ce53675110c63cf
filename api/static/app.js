/* The chat page: a conversation with the archive. Each question streams its answer from POST
 * /v1/ask, sending the earlier turns as `history` so a follow-up ("what did he say next?") is
 * searched with what it refers to; every [n] opens the cited passage, in context.
 *
 * The thread is kept in this tab's sessionStorage (so a reload keeps it) and goes nowhere but this
 * server. Text from the server (answers, and corpus passages that hold URLs and stray markup)
 * reaches the page only through textContent and text nodes, never innerHTML, so it always shows
 * literally. Plain script, no framework and no build step: the page must work offline from this
 * origin alone.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("ask-form");
  const input = $("question");
  const askButton = $("ask-button");
  const stopButton = $("stop-button");
  const thread = $("thread");
  const welcome = $("welcome");
  const newConversation = $("new-conversation");
  const turnTemplate = $("turn-template");
  const dialog = $("passage");
  const toggle = $("passage-toggle");
  const context = $("passage-context");

  // "[3]" or "[1, 2]": one or more citation numbers in brackets.
  const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  const THREAD_STORE = "rag.thread";
  const MAX_TURNS = 50; // kept in sessionStorage; older turns drop off the top
  const MAX_HISTORY = 20; // what /v1/ask accepts
  const EXAMPLE = input.placeholder;

  let turns = []; // the conversation: [{id, question, history, state, text, response, error}]
  let inFlight = null; // {controller, turn} of the answer being streamed
  let shown = null; // the citation shown in the passage panel
  let opener = null; // what opened the panel; it gets focus back on close
  let focusOnClose = null; // what to focus instead, once the panel's close event has run
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

  /** The full citation of a passage, as copied: title, date, where, source file and offsets. */
  function citationText(c) {
    return `“${c.title}”, ${formatDate(c.date)}, ${describeWhere(c)}. `
      + `Source: ${c.source}, characters ${c.start}–${c.end}.`;
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

  // ---- the thread, kept in sessionStorage ---------------------------------------------------

  function save() {
    try {
      sessionStorage.setItem(THREAD_STORE, JSON.stringify(turns.slice(-MAX_TURNS)));
    } catch (_) {
      // storage full or refused (private mode): the thread still works, it just won't survive a reload
    }
  }

  function restore() {
    let stored = [];
    try {
      stored = JSON.parse(sessionStorage.getItem(THREAD_STORE) || "[]");
    } catch (_) {
      stored = [];
    }
    if (!Array.isArray(stored)) stored = [];
    for (const turn of stored) {
      if (!turn || typeof turn.question !== "string") continue;
      if (turn.state === "pending") turn.state = "interrupted"; // the page went away mid-answer
      turns.push(turn);
      renderTurn(addTurnView(turn), turn);
    }
    updateChrome();
  }

  /** The `history` for a new question: each earlier turn as the query it was searched with (a
   * follow-up already made standalone, so a chain of follow-ups keeps its subject), else as asked. */
  function historyFor() {
    return turns
      .map((t) => (t.response && t.response.query) || t.question)
      .filter((q) => q && q.trim())
      .slice(-MAX_HISTORY);
  }

  function updateChrome() {
    const busy = inFlight !== null;
    askButton.hidden = busy;
    stopButton.hidden = !busy;
    newConversation.hidden = turns.length === 0;
    welcome.hidden = turns.length > 0;
    $("question-label").textContent = turns.length ? "Ask a follow-up or a new question" : "Your question";
    input.placeholder = turns.length ? "e.g. Who replaced him?" : EXAMPLE;
  }

  // ---- one turn of the conversation ---------------------------------------------------------

  function addTurnView(turn) {
    if (!turn.id) turn.id = `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const item = turnTemplate.content.firstElementChild.cloneNode(true);
    item.id = `turn-${turn.id}`;
    const q = (selector) => item.querySelector(selector);
    const view = {
      item,
      question: q(".question"),
      searched: q(".searched"),
      searchedQuery: q(".searched-query"),
      status: q(".status"),
      live: q(".live"),
      verdict: q(".verdict"),
      answer: q(".answer"),
      warnings: q(".warnings"),
      error: q(".error"),
      sources: q(".sources"),
      sourcesHeading: q(".sources-heading"),
      sourceList: q(".source-list"),
    };
    const headingId = `${item.id}-sources-heading`;
    view.sourcesHeading.id = headingId;
    view.sources.setAttribute("aria-labelledby", headingId);
    view.question.textContent = turn.question;
    thread.append(item);
    return view;
  }

  function citeLink(c, turn) {
    const link = make("a", "cite", `[${c.n}]`);
    link.href = `#turn-${turn.id}-source-${c.n}`;
    link.dataset.n = String(c.n);
    link.dataset.id = c.id;
    link.setAttribute("aria-label", `Source ${c.n}: ${c.citation.title}, ${describeWhere(c.citation)}`);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      openPassage(c, turn, link);
    });
    return link;
  }

  /** Render an answer into `container`; with `byN`, each known [n] becomes a link to its passage. */
  function renderAnswer(container, text, byN, turn) {
    container.replaceChildren();
    let last = 0;
    for (const m of text.matchAll(MARKER)) {
      const numbers = m[1].split(",").map((s) => Number(s.trim()));
      if (!byN || !numbers.every((n) => byN.has(n))) continue; // unknown markers stay plain text
      container.append(document.createTextNode(text.slice(last, m.index)));
      for (const n of numbers) container.append(citeLink(byN.get(n), turn));
      last = m.index + m[0].length;
    }
    container.append(document.createTextNode(text.slice(last)));
  }

  function renderSources(view, list, abstained, turn) {
    view.sourceList.replaceChildren();
    view.sourcesHeading.textContent = abstained ? "Closest passages (they do not answer it)" : "Sources";
    for (const c of list) {
      const item = make("li", "source");
      item.id = `turn-${turn.id}-source-${c.n}`;
      const button = make("button", "source-open");
      button.type = "button";
      button.dataset.id = c.id;
      button.append(make("span", "source-n", `[${c.n}]`), " ", make("span", "source-title", c.citation.title));
      button.addEventListener("click", () => openPassage(c, turn, button));
      const meta = make("span", "meta", `${formatDate(c.citation.date)} · ${describeWhere(c.citation)}`);
      item.append(button, meta);
      // The answer already quotes or retells its sources; the closest passages of an abstention are
      // shown in part, so the reader can judge them without opening each one.
      if (abstained) item.append(make("p", "snippet corpus", c.text));
      view.sourceList.append(item);
    }
    view.sources.hidden = list.length === 0;
  }

  function setVerdict(view, kind, text) {
    view.verdict.className = `verdict ${kind}`;
    view.verdict.textContent = text;
    view.verdict.hidden = !text;
  }

  /** Draw a turn from its data: used while it streams, when it ends, and after a reload. */
  function renderTurn(view, turn) {
    view.item.dataset.state = turn.state;
    const response = turn.response;
    const abstained = Boolean(response && response.abstained);
    const support = (response && response.support && response.support.level) || null;
    view.item.classList.toggle("abstained", abstained);
    view.item.classList.toggle("weak", support === "weak");
    const query = response && response.query;
    view.searched.hidden = !query || query.trim() === turn.question.trim();
    view.searchedQuery.textContent = query || "";

    view.status.hidden = true;
    view.status.textContent = "";
    if (turn.state === "stopped" || turn.state === "interrupted") {
      view.status.hidden = false;
      const kept = turn.text ? " The answer so far is kept below." : "";
      view.status.textContent = turn.state === "stopped"
        ? `Stopped.${kept}`
        : `Interrupted: the page was reloaded before the answer finished.${kept}`;
    }

    if (abstained) {
      setVerdict(view, "not-found", "The archive does not appear to answer this question.");
    } else if (support === "weak") {
      setVerdict(view, "weak-support",
        "Weakly supported: the passages cited only loosely match the question. Check them before relying on this answer.");
    } else {
      setVerdict(view, "", "");
    }

    if (response) {
      const list = Array.isArray(response.citations) ? response.citations : [];
      // An abstention says so in the verdict; its fixed sentence would only repeat it.
      renderAnswer(view.answer, abstained ? "" : response.answer || "", new Map(list.map((c) => [c.n, c])), turn);
      view.warnings.replaceChildren(...(response.warnings || []).map((w) => make("li", "", w)));
      renderSources(view, list, abstained, turn);
    } else {
      view.answer.replaceChildren(document.createTextNode(turn.text || ""));
      view.warnings.replaceChildren();
      view.sources.hidden = true;
    }
    view.warnings.hidden = view.warnings.childElementCount === 0;
    view.error.hidden = !turn.error;
    view.error.textContent = turn.error || "";
  }

  /** While busy, screen readers hold back the live region (verdict and answer) and read it whole
   * once the answer is complete, instead of word by word as it streams. */
  function setBusy(view, busy) {
    view.live.setAttribute("aria-busy", String(busy));
    view.item.setAttribute("aria-busy", String(busy));
  }

  async function ask(question) {
    if (inFlight) return; // one answer at a time: Stop (or Esc) ends the current one
    const turn = { question, history: historyFor(), state: "pending", text: "", response: null, error: null };
    turns.push(turn);
    const view = addTurnView(turn);
    const controller = new AbortController();
    inFlight = { controller, turn };
    updateChrome();
    save();
    renderTurn(view, turn);
    view.status.hidden = false;
    view.status.textContent = "Searching the archive…";
    setBusy(view, true);
    view.item.scrollIntoView({ block: "start" });
    try {
      const response = await apiFetch("/v1/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ question, history: turn.history, stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      let final = null;
      if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
        final = await response.json(); // a server that answered in one piece
      } else {
        for await (const { event, data } of readEvents(response.body)) {
          if (event === "delta") {
            if (view.status.textContent !== "Writing the answer…") view.status.textContent = "Writing the answer…";
            const piece = JSON.parse(data).text || "";
            turn.text += piece;
            view.answer.append(document.createTextNode(piece));
          } else if (event === "done") {
            final = JSON.parse(data);
          } else if (event === "error") {
            const body = JSON.parse(data);
            throw new Error((body.error && body.error.message) || body.message || "The answer failed.");
          }
        }
      }
      if (!final) throw new Error("The answer stopped before it was complete. Please ask again.");
      turn.response = final;
      turn.state = "done";
    } catch (err) {
      if (err.name === "AbortError") {
        turn.state = "stopped";
      } else {
        turn.state = "error";
        turn.error = err.message || String(err);
      }
    } finally {
      if (inFlight && inFlight.turn === turn) inFlight = null;
      // A turn cleared away by New conversation is no longer in the thread: nothing to draw.
      if (turns.includes(turn)) {
        renderTurn(view, turn);
        setBusy(view, false);
        save();
      }
      updateChrome();
      focusBox();
    }
  }

  /** Focus the question box, unless a dialog is open (it keeps focus, and gives it back on close).
   * Esc may close the passage panel and, a moment later, stop an answer: the panel's close event
   * (which refocuses what opened it) can then still be on its way, so it is told to focus the box. */
  function focusBox() {
    if (dialog.open || keyDialog.open) return;
    if (shown) focusOnClose = input;
    else input.focus();
  }

  function stop() {
    if (inFlight) inFlight.controller.abort();
  }

  function clearConversation() {
    stop();
    inFlight = null; // its turn is gone: a new question may start at once
    turns = [];
    thread.replaceChildren();
    sessionStorage.removeItem(THREAD_STORE);
    updateChrome();
    focusBox();
  }

  function submit() {
    const question = input.value.trim();
    if (!question) {
      input.value = "";
      input.reportValidity();
      return;
    }
    if (inFlight) return;
    input.value = "";
    ask(question);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    // Enter asks; Shift+Enter is a new line; an IME composing text keeps its own Enter.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    event.preventDefault();
    submit();
  });
  stopButton.addEventListener("click", stop);
  newConversation.addEventListener("click", clearConversation);
  for (const example of document.querySelectorAll(".example")) {
    example.addEventListener("click", () => {
      input.value = example.textContent;
      submit();
    });
  }
  document.addEventListener("keydown", (event) => {
    // Esc stops a streaming answer, unless a dialog is open: then it closes the dialog, as usual.
    if (event.key !== "Escape" || dialog.open || keyDialog.open || !inFlight) return;
    event.preventDefault();
    stop();
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

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  /** [start, end] ranges of `passage` that the answer quotes before citing it as [n]: the text
   * before each marker naming n, found word for word (whitespace may differ). A model's own
   * wording is not found, and then nothing is highlighted but the passage itself. */
  function quotedRanges(passage, answer, n) {
    const ranges = [];
    let last = 0;
    for (const m of (answer || "").matchAll(MARKER)) {
      const segment = answer.slice(last, m.index);
      last = m.index + m[0].length;
      const numbers = m[1].split(",").map((s) => Number(s.trim()));
      if (!numbers.includes(n)) continue;
      const words = segment.trim().split(/\s+/).filter(Boolean);
      if (words.length < 3) continue;
      const found = new RegExp(words.map(escapeRegExp).join("\\s+")).exec(passage);
      if (found) ranges.push([found.index, found.index + found[0].length]);
    }
    ranges.sort((a, b) => a[0] - b[0]);
    return ranges.filter((r, i) => i === 0 || r[0] >= ranges[i - 1][1]); // no overlaps
  }

  /** Append `text` to `parent`, with each of `ranges` in a <mark class="quote">. */
  function appendQuoted(parent, text, ranges) {
    let last = 0;
    for (const [start, end] of ranges) {
      parent.append(document.createTextNode(text.slice(last, start)), make("mark", "quote", text.slice(start, end)));
      last = end;
    }
    parent.append(document.createTextNode(text.slice(last)));
  }

  /** `whole` in `container` as text, with the passage `part` in a <mark class="span"> (its quoted
   * sentences marked inside it); returns that mark, or null when `part` is not in `whole`. */
  function renderSpan(container, whole, part, ranges) {
    container.replaceChildren();
    const at = part ? whole.indexOf(part) : -1;
    if (at < 0) {
      container.append(document.createTextNode(whole));
      return null;
    }
    const mark = make("mark", "span");
    appendQuoted(mark, part, ranges);
    container.append(document.createTextNode(whole.slice(0, at)), mark,
      document.createTextNode(whole.slice(at + part.length)));
    return mark;
  }

  function setExpanded(expanded) {
    const noun = shown ? shown.c.citation.kind : "post";
    toggle.setAttribute("aria-expanded", String(expanded));
    toggle.textContent = `${expanded ? "Hide" : "Show"} full ${noun}`;
    context.hidden = !expanded;
  }

  async function showContext(open) {
    const note = $("passage-context-status");
    const parentSection = $("passage-parent");
    note.hidden = false;
    note.textContent = "Loading…";
    $("passage-node-heading").textContent = "";
    $("passage-node-text").replaceChildren();
    parentSection.hidden = true;
    try {
      const p = await fetchPassage(open.c.id);
      if (shown !== open) return; // the panel moved on while this loaded
      const node = p.context.node;
      $("passage-node-heading").textContent = `The whole ${describeWhere(node)}, the cited passage highlighted`;
      const mark = renderSpan($("passage-node-text"), node.text, p.text, open.ranges);
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
      if (shown === open) note.textContent = `Could not load the full ${open.c.citation.kind}: ${err.message}`;
    }
  }

  function openPassage(c, turn, from) {
    const answer = turn && turn.response && !turn.response.abstained ? turn.response.answer : "";
    const ranges = quotedRanges(c.text, answer, c.n);
    shown = { c, ranges };
    opener = from || document.activeElement;
    const cit = c.citation;
    $("passage-title").textContent = cit.title;
    const time = $("passage-date");
    time.textContent = formatDate(cit.date);
    if (cit.date) time.dateTime = cit.date;
    else time.removeAttribute("datetime");
    $("passage-where").textContent = describeWhere(cit);
    const quote = $("passage-text");
    quote.replaceChildren();
    appendQuoted(quote, c.text, ranges);
    $("passage-quote-note").hidden = ranges.length === 0;
    $("passage-citation").textContent = citationText(cit);
    $("passage-copied").textContent = "";
    setExpanded(false);
    if (!dialog.open) dialog.showModal();
    $("passage-close").focus();
  }

  async function copyCitation() {
    const text = $("passage-citation").textContent;
    const note = $("passage-copied");
    try {
      await navigator.clipboard.writeText(text);
      note.textContent = "Copied";
    } catch (_) {
      // no clipboard access (a page served over plain http from another machine): select the
      // citation so the reader can copy it with the keyboard
      const range = document.createRange();
      range.selectNodeContents($("passage-citation"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      note.textContent = "Selected: press Ctrl+C (⌘C) to copy";
    }
  }

  $("passage-copy").addEventListener("click", copyCitation);
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
    const target = focusOnClose || (opener && opener.isConnected ? opener : input);
    shown = null;
    opener = null;
    focusOnClose = null;
    target.focus();
  });

  restore();
  if (turns.length) thread.lastElementChild.scrollIntoView({ block: "end" });
})();
