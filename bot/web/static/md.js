// A small Markdown renderer that builds DOM nodes and never parses HTML: every piece of text from
// an answer, a question or a document becomes a text node, so markup in them shows as text and
// nothing in them runs. Supports headings, paragraphs, lists, block quotes, code, tables, emphasis,
// links (http, https and mailto only) and citation markers [n], which link to a cited source.
"use strict";
(function () {
  const MAX_DEPTH = 4;
  const FENCE = /^\s*(```|~~~)/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
  const INLINE = new RegExp(
    [
      "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1, 2: code
      "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3: strong
      "__(?=\\S)([\\s\\S]*?\\S)__", // 4: strong
      "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*", // 5: emphasis
      "\\[([^\\]\\n]+)\\]\\(([^()\\s]+)\\)", // 6, 7: link
      "\\[(\\d{1,3}(?:\\s*,\\s*\\d{1,3})*)\\]", // 8: citation markers
      "(https?:\\/\\/[^\\s<>()\"']+[^\\s<>()\"'.,;:!?])", // 9: bare address
    ].join("|"),
  );

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      if (["http:", "https:", "mailto:"].includes(parsed.protocol)) return parsed.href;
    } catch (_) {
      /* not an address: shown as text */
    }
    return null;
  }

  function link(href, label, options) {
    const a = el("a", "", label);
    a.href = href;
    if (new URL(href).origin !== window.location.origin) {
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
    }
    return a;
  }

  function inline(text, options, depth) {
    const out = [];
    let rest = text;
    while (rest) {
      const m = depth < MAX_DEPTH ? INLINE.exec(rest) : null;
      if (!m) {
        out.push(...lines(rest));
        break;
      }
      if (m.index > 0) out.push(...lines(rest.slice(0, m.index)));
      out.push(...token(m, options, depth));
      rest = rest.slice(m.index + m[0].length);
    }
    return out;
  }

  function lines(text) {
    const out = [];
    text.split("\n").forEach((line, i) => {
      if (i > 0) out.push(document.createElement("br"));
      if (line) out.push(document.createTextNode(line));
    });
    return out;
  }

  function wrap(tag, children) {
    const node = el(tag);
    node.append(...children);
    return node;
  }

  function token(m, options, depth) {
    if (m[2] !== undefined) return [el("code", "", m[2])];
    if (m[3] !== undefined || m[4] !== undefined) return [wrap("strong", inline(m[3] ?? m[4], options, depth + 1))];
    if (m[5] !== undefined) return [wrap("em", inline(m[5], options, depth + 1))];
    if (m[6] !== undefined) {
      const href = safeHref(m[7]);
      return href ? [link(href, m[6], options)] : [document.createTextNode(m[0])];
    }
    if (m[8] !== undefined) return citations(m[8], options);
    const href = safeHref(m[9]);
    return href ? [link(href, m[9], options)] : [document.createTextNode(m[9])];
  }

  function citations(list, options) {
    const numbers = list.split(",").map((n) => Number(n.trim()));
    const found = numbers.map((n) => (options.citation ? options.citation(n) : null));
    if (found.every((href) => !href)) return [document.createTextNode("[" + list + "]")];
    return numbers.map((n, i) => {
      const a = el("a", "cite", "[" + n + "]");
      if (found[i]) a.href = found[i];
      a.dataset.cite = String(n);
      return a;
    });
  }

  function splitRow(line) {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  function table(rows, options, depth) {
    const wrapper = el("div", "table-wrap");
    const t = el("table");
    const head = el("thead");
    const headRow = el("tr");
    const width = rows[0].length;
    for (const cell of rows[0]) headRow.append(wrap("th", inline(cell, options, depth)));
    head.append(headRow);
    const body = el("tbody");
    for (const cells of rows.slice(1)) {
      const tr = el("tr");
      for (let i = 0; i < width; i += 1) tr.append(wrap("td", inline(cells[i] ?? "", options, depth)));
      body.append(tr);
    }
    t.append(head, body);
    wrapper.append(t);
    return wrapper;
  }

  function startsBlock(line, next) {
    return (
      FENCE.test(line) || HEADING.test(line) || RULE.test(line) || BULLET.test(line) ||
      NUMBERED.test(line) || QUOTE.test(line) || (line.includes("|") && next !== undefined && TABLE_RULE.test(next))
    );
  }

  function blocks(text, options, depth) {
    const src = String(text).replace(/\r\n?/g, "\n").split("\n");
    const out = [];
    let i = 0;
    while (i < src.length) {
      const line = src[i];
      if (!line.trim()) {
        i += 1;
        continue;
      }
      let m;
      if (FENCE.test(line)) {
        const fence = line.trim().slice(0, 3);
        const code = [];
        i += 1;
        while (i < src.length && !src[i].trim().startsWith(fence)) code.push(src[i++]);
        i += 1;
        const pre = el("pre");
        pre.append(el("code", "", code.join("\n")));
        out.push(pre);
      } else if ((m = HEADING.exec(line))) {
        const level = Math.min(6, m[1].length + (options.headingOffset ?? 2));
        out.push(wrap("h" + level, inline(m[2], options, depth)));
        i += 1;
      } else if (RULE.test(line)) {
        out.push(el("hr"));
        i += 1;
      } else if (line.includes("|") && i + 1 < src.length && TABLE_RULE.test(src[i + 1]) && src[i + 1].includes("-")) {
        const rows = [splitRow(line)];
        i += 2;
        while (i < src.length && src[i].includes("|") && src[i].trim()) rows.push(splitRow(src[i++]));
        out.push(table(rows, options, depth));
      } else if (QUOTE.test(line)) {
        const quoted = [];
        while (i < src.length && (m = QUOTE.exec(src[i]))) {
          quoted.push(m[1]);
          i += 1;
        }
        const quote = el("blockquote");
        if (depth < MAX_DEPTH) quote.append(...blocks(quoted.join("\n"), options, depth + 1));
        else quote.append(...lines(quoted.join("\n")));
        out.push(quote);
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        const ordered = !BULLET.test(line);
        const pattern = ordered ? NUMBERED : BULLET;
        const list = el(ordered ? "ol" : "ul");
        if (ordered) list.start = Number(NUMBERED.exec(line)[1]);
        while (i < src.length && (m = pattern.exec(src[i]))) {
          const item = [ordered ? m[2] : m[1]];
          i += 1;
          while (i < src.length && src[i].trim() && /^\s{2,}/.test(src[i]) && !pattern.test(src[i])) {
            item.push(src[i++].trim());
          }
          list.append(wrap("li", inline(item.join("\n"), options, depth)));
        }
        out.push(list);
      } else {
        const para = [line];
        i += 1;
        while (i < src.length && src[i].trim() && !startsBlock(src[i], src[i + 1])) para.push(src[i++]);
        out.push(wrap("p", inline(para.join("\n"), options, depth)));
      }
    }
    return out;
  }

  /** The Markdown `text` as a DocumentFragment; `options.citation(n)` gives the link of source n. */
  function render(text, options) {
    const fragment = document.createDocumentFragment();
    fragment.append(...blocks(text || "", options || {}, 0));
    return fragment;
  }

  /** Markdown flattened to one line of plain text, for snippets: marks and table rules dropped. */
  function plain(text) {
    return String(text || "")
      .replace(/\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?/g, " ")
      .replace(/^\s*#{1,6}\s+/gm, "")
      .replace(/(\*\*|__|`)/g, "")
      .replace(/\s*\|\s*/g, " · ")
      .replace(/(\s*·\s*)+/g, " · ")
      .replace(/^\s*·\s*|\s*·\s*$/g, "")
      .replace(/\s+/g, " ")
      .trim();
  }

  window.KBMarkdown = { render, safeHref, plain };
})();
