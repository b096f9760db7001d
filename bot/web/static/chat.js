// The web chat: conversations in the sidebar, answers streamed as they are written, cited sources
// that open the cited section, feedback, and the push inbox. Text from the server is only ever put
// into the page as text nodes or through KBMarkdown (md.js), which builds nodes and parses no HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("ask"), input = $("question"), send = $("send"), log = $("log");
  const list = $("conversations"), title = $("title"), status = $("status");
  let current = null; // the id of the conversation on screen, null for a new one

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** The message of a failed response: its JSON `error`, else its text, else its status. */
  async function failure(response) {
    const raw = await response.text().catch(() => "");
    try {
      const body = JSON.parse(raw);
      if (body && typeof body.error === "string") return body.error;
    } catch (_) {
      /* not JSON: below */
    }
    const text = raw.trim();
    return text && text.length < 300 ? text : `the server answered ${response.status} ${response.statusText}`.trim();
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
    const response = await fetch(path, init);
    if (!response.ok) throw new Error(await failure(response));
    return response.json();
  }

  function post(path, body) {
    return api(path, { method: "POST", body: JSON.stringify(body) });
  }

  function duration(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return null;
    return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
  }

  function citationLinks(reply) {
    const byNumber = new Map();
    for (const c of reply.citations || []) {
      if (typeof c.href === "string" && c.href.startsWith("/sources/")) byNumber.set(c.number, c.href);
    }
    return (n) => byNumber.get(n) || null;
  }

  function markdown(node, text, reply) {
    const options = { citation: reply ? citationLinks(reply) : null };
    node.replaceChildren(window.KBMarkdown.render(text, options));
  }

  /** A question and its answer slot; `show(reply)` fills the answer. */
  function turn(question) {
    const box = el("article", "turn");
    box.append(el("div", "q", question));
    const answer = el("div", "a md pending", "Searching…");
    answer.dataset.drafts = "0";
    box.append(answer);
    log.append(box);
    box.scrollIntoView({ block: "end" });
    return {
      box,
      answer,
      draft(text) {
        answer.classList.remove("pending");
        answer.classList.add("streaming");
        answer.dataset.drafts = String(Number(answer.dataset.drafts) + 1);
        markdown(answer, text + " …", null);
      },
      fail(message) {
        answer.className = "a error";
        answer.textContent = message;
        answer.dataset.state = "error";
      },
      show(reply) {
        if (reply.error) return this.fail(reply.error);
        answer.className = "a md" + (reply.abstained || reply.refused || reply.ok === false ? " abstained" : "");
        answer.dataset.state = "done";
        markdown(answer, reply.text || "", reply);
        box.append(...details(reply));
      },
    };
  }

  function details(reply) {
    const parts = [];
    if ((reply.notices || []).length) {
      const notices = el("ul", "notices");
      for (const n of reply.notices) notices.append(el("li", "", n));
      parts.push(notices);
    }
    if ((reply.citations || []).length) {
      const sources = el("ol", "sources");
      for (const c of reply.citations) {
        const item = el("li");
        item.value = c.number;
        const name = c.href && c.href.startsWith("/sources/") ? el("a", "source-link", c.title) : el("strong", "", c.title);
        if (name.tagName === "A") name.href = c.href;
        item.append(name);
        if (c.section) item.append(el("span", "meta", " · " + c.section));
        if (c.snippet) item.append(el("div", "snippet", window.KBMarkdown.plain(c.snippet)));
        sources.append(item);
      }
      parts.push(sources);
    }
    const meta = [];
    if (typeof reply.confidence === "number") meta.push(`confidence ${reply.confidence.toFixed(2)}`);
    if (reply.model) meta.push(reply.model);
    const took = duration((reply.latency_ms || {}).total) || duration(reply.elapsed_ms);
    if (took) meta.push(took);
    if (meta.length) parts.push(el("div", "meta latency", meta.join(" · ")));
    const rate = feedback(reply);
    if (rate) parts.push(rate);
    return parts;
  }

  function feedback(reply) {
    const buttons = (reply.buttons || []).filter((b) => b.action === "feedback_up" || b.action === "feedback_down");
    if (!buttons.length) return null;
    const row = el("div", "rate");
    for (const b of buttons) {
      const button = el("button", "rate-button", b.action === "feedback_up" ? "👍 Helpful" : "👎 Not helpful");
      button.type = "button";
      button.addEventListener("click", async () => {
        for (const other of row.querySelectorAll("button")) other.disabled = true;
        try {
          const sent = await post("/api/feedback", { question_id: Number(b.value), helpful: b.action === "feedback_up" });
          row.append(el("span", "meta thanks", sent.text || "Thanks!"));
        } catch (err) {
          row.append(el("span", "error", err.message));
        }
      });
      row.append(button);
    }
    return row;
  }

  async function ask(question) {
    const t = turn(question);
    send.disabled = true;
    try {
      const body = { question };
      if (current !== null) body.conversation_id = current;
      const response = await fetch("/api/ask/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) return t.fail(await failure(response));
      let reply = null;
      await readLines(response, (line) => {
        if (line.conversation) opened(line.conversation);
        else if (typeof line.draft === "string") t.draft(line.draft);
        else if (line.reply) reply = line.reply;
        else if (line.error) reply = { error: line.error };
      });
      t.show(reply || { error: "The answer did not arrive; please ask again." });
      loadConversations();
    } catch (err) {
      t.fail("The server could not be reached: " + err.message);
    } finally {
      send.disabled = false;
      input.value = "";
      input.focus();
    }
  }

  // Newline-delimited JSON, one object a line, handed to `each` as soon as the line is complete.
  async function readLines(response, each) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line) each(JSON.parse(line));
      }
    }
    if (buffer.trim()) each(JSON.parse(buffer));
  }

  function opened(conversation) {
    current = conversation.id;
    title.textContent = conversation.title || "Conversation";
    if (location.hash !== `#c${current}`) history.replaceState(null, "", `#c${current}`);
  }

  async function loadConversations() {
    try {
      const { conversations } = await api("/api/conversations");
      list.replaceChildren(...conversations.map(entry));
      list.dataset.loaded = "true";
    } catch (err) {
      list.replaceChildren(el("li", "error", err.message));
    }
  }

  function entry(c) {
    const item = el("li", c.id === current ? "active" : "");
    const open = el("a", "conversation", c.title || "Untitled");
    open.href = `#c${c.id}`;
    open.dataset.id = String(c.id);
    open.addEventListener("click", (event) => {
      event.preventDefault();
      showConversation(c.id);
      document.body.classList.remove("nav-open");
    });
    const remove = el("button", "delete", "×");
    remove.type = "button";
    remove.title = "Delete this conversation";
    remove.setAttribute("aria-label", "Delete conversation: " + (c.title || "Untitled"));
    remove.addEventListener("click", async () => {
      try {
        await api(`/api/conversations/${c.id}`, { method: "DELETE", body: "{}" });
        if (c.id === current) newChat();
        loadConversations();
      } catch (err) {
        status.textContent = err.message;
      }
    });
    item.append(open, remove);
    return item;
  }

  async function showConversation(id) {
    try {
      const found = await api(`/api/conversations/${id}`);
      log.replaceChildren();
      opened(found);
      for (const t of found.turns) turn(t.question).show(t.reply);
      log.dataset.conversation = String(id);
      for (const item of list.children) item.classList.toggle("active", item.firstChild && item.firstChild.dataset.id === String(id));
    } catch (err) {
      status.textContent = err.message;
      newChat();
    }
  }

  function newChat() {
    current = null;
    log.replaceChildren();
    title.textContent = "New conversation";
    history.replaceState(null, "", location.pathname);
    for (const item of list.children) item.classList.remove("active");
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (question && !send.disabled) ask(question);
  });
  $("new-chat").addEventListener("click", () => {
    newChat();
    document.body.classList.remove("nav-open");
  });
  $("menu").addEventListener("click", () => document.body.classList.toggle("nav-open"));

  async function start() {
    try {
      const me = await api("/api/me");
      $("user").textContent = me.user;
      $("admin-link").hidden = !me.admin;
    } catch (err) {
      status.textContent = err.message;
    }
    await loadConversations();
    const wanted = /^#c(\d+)$/.exec(location.hash);
    if (wanted) await showConversation(Number(wanted[1]));
    document.body.dataset.ready = "true";
  }
  start();
  window.KBChat = { loadConversations };
})();
