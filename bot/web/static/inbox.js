// The push inbox of the web chat: digests and notices for this user, each document with Open (its
// stored text here, the click recorded) and Dismiss ("not for me", recorded; it leaves the list).
"use strict";
(function () {
  const panel = document.getElementById("inbox");
  const toggle = document.getElementById("inbox-toggle");
  const badge = document.getElementById("inbox-count");
  const messages = document.getElementById("inbox-messages");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function call(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
    return data;
  }

  // Push's own tracking link (/push/open or /push/dismiss on this server), when the message has
  // one: asked for too, so that push learns from the click as it does from a chat platform.
  function track(url) {
    if (!url) return Promise.resolve();
    try {
      const parsed = new URL(url, location.href);
      if (parsed.origin !== location.origin || !parsed.pathname.startsWith("/push/")) return Promise.resolve();
      return fetch(parsed.pathname + parsed.search, { redirect: "manual" }).catch(() => undefined);
    } catch (_) {
      return Promise.resolve();
    }
  }

  function item(message, doc) {
    const row = el("li", "inbox-item");
    row.dataset.document = doc.document_id;
    const open = el("a", "inbox-open", doc.title || doc.document_id);
    open.href = "/sources/" + encodeURIComponent(doc.document_id);
    open.addEventListener("click", async (event) => {
      event.preventDefault();
      try {
        await Promise.all([call(`/api/push/inbox/${message.id}/open`, { document_id: doc.document_id }), track(doc.url)]);
      } finally {
        location.href = open.href;
      }
    });
    const dismiss = el("button", "inbox-dismiss", "Dismiss");
    dismiss.type = "button";
    dismiss.title = "Not for me: fewer documents like this one";
    dismiss.addEventListener("click", async () => {
      dismiss.disabled = true;
      try {
        await Promise.all([call(`/api/push/inbox/${message.id}/dismiss`, { document_id: doc.document_id }), track(doc.dismiss_url)]);
        row.remove();
      } catch (err) {
        dismiss.disabled = false;
        row.append(el("span", "error", err.message));
      }
    });
    row.append(open, dismiss);
    if (doc.note) row.append(el("div", "meta", doc.note));
    return row;
  }

  function render(data) {
    const shown = data.messages
      .map((m) => ({ m, items: (m.items || []).filter((i) => !i.dismissed) }))
      .filter(({ items }) => items.length);
    if (!shown.length) {
      messages.replaceChildren(el("p", "meta", "Nothing new for you. Subscribe to a topic with “subscribe <topic>”."));
      return;
    }
    messages.replaceChildren(...shown.map(({ m, items }) => {
      const box = el("section", "inbox-message" + (m.read ? "" : " unread"));
      box.append(el("h3", "", m.title), el("time", "meta", new Date(m.created_at).toLocaleString()));
      const ul = el("ul");
      ul.append(...items.map((doc) => item(m, doc)));
      box.append(ul);
      if (m.footer) {
        const footer = el("div", "meta md");
        footer.append(window.KBMarkdown.render(m.footer));
        box.append(footer);
      }
      return box;
    }));
  }

  async function refresh() {
    try {
      const data = await call("/api/push/inbox");
      badge.textContent = data.unread ? String(data.unread) : "";
      badge.hidden = !data.unread;
      render(data);
      panel.dataset.loaded = "true";
    } catch (err) {
      messages.replaceChildren(el("p", "error", err.message));
    }
  }

  toggle.addEventListener("click", async () => {
    const opening = panel.hidden;
    panel.hidden = !opening;
    toggle.setAttribute("aria-expanded", String(opening));
    document.body.classList.remove("nav-open");
    if (opening) {
      await refresh();
      if (!badge.hidden) {
        await call("/api/push/inbox/read", {}).catch(() => undefined);
        badge.hidden = true;
      }
    }
  });
  document.getElementById("inbox-close").addEventListener("click", () => {
    panel.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
  });
  refresh();
})();
