// The sources view: each section's stored text (escaped by the server) rendered as Markdown by the
// same escaping renderer as the chat, then the cited section brought into view.
"use strict";
(function () {
  for (const block of document.querySelectorAll(".md")) {
    block.replaceChildren(window.KBMarkdown.render(block.textContent, { headingOffset: 2 }));
  }
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (target) {
    target.classList.add("cited");
    target.scrollIntoView({ block: "start" });
  }
  document.body.dataset.ready = "true";
})();
