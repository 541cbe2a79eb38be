import { useEffect, useMemo, useRef } from "preact/hooks";

import { renderMarkdown } from "../lib/markdown";

const COPY_ICON =
  '<svg class="icon" width="14" height="14" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><rect x="9" y="9" width="13" height="13" rx="2"/><path d="M5 15H4a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2h9a2 2 0 0 1 2 2v1"/></svg>';

/** Sanitized markdown, with a copy button on each code block. */
export function Markdown({ text, class: cls }: { text: string; class?: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  const ref = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const root = ref.current;
    if (!root || !navigator.clipboard) return;
    for (const block of root.querySelectorAll<HTMLElement>(".code-block")) {
      if (block.querySelector(".copy-btn")) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy-btn";
      button.setAttribute("aria-label", "Copy code");
      button.innerHTML = COPY_ICON;
      button.addEventListener("click", () => {
        const code = block.querySelector("code")?.textContent ?? "";
        void navigator.clipboard.writeText(code).then(() => {
          button.classList.add("copied");
          setTimeout(() => button.classList.remove("copied"), 1200);
        });
      });
      block.appendChild(button);
    }
  }, [html]);

  return <div ref={ref} class={cls ? `md ${cls}` : "md"} dangerouslySetInnerHTML={{ __html: html }} />;
}
