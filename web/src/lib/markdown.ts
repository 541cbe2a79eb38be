// Markdown to safe HTML: marked renders, highlight.js colours code blocks,
// DOMPurify removes anything that could run or load a remote URL (the agent's
// text is not trusted: it may quote web pages or files).

import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import diff from "highlight.js/lib/languages/diff";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import shell from "highlight.js/lib/languages/shell";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import ini from "highlight.js/lib/languages/ini";
import { Marked, type Tokens } from "marked";

const languages = {
  bash,
  c,
  cpp,
  css,
  diff,
  go,
  java,
  javascript,
  json,
  markdown,
  python,
  rust,
  shell,
  sql,
  typescript,
  xml,
  yaml,
  ini,
};
for (const [name, lang] of Object.entries(languages)) hljs.registerLanguage(name, lang);
hljs.registerAliases(["sh", "zsh", "console"], { languageName: "bash" });
hljs.registerAliases(["toml"], { languageName: "ini" });
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["rs"], { languageName: "rust" });
hljs.registerAliases(["ts", "tsx"], { languageName: "typescript" });
hljs.registerAliases(["js", "jsx", "mjs"], { languageName: "javascript" });
hljs.registerAliases(["py"], { languageName: "python" });

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Code highlighted as HTML (escaped text when the language is unknown). */
export function highlight(code: string, lang?: string): { html: string; language?: string } {
  const name = (lang ?? "").trim().split(/\s+/)[0]?.toLowerCase();
  if (name && hljs.getLanguage(name)) {
    const result = hljs.highlight(code, { language: name, ignoreIllegals: true });
    return { html: result.value, language: hljs.getLanguage(name)?.name ?? name };
  }
  return { html: escapeHtml(code), language: name || undefined };
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    code({ text, lang }: Tokens.Code): string {
      const { html, language } = highlight(text, lang);
      const label = language ? `<span class="code-lang">${escapeHtml(language)}</span>` : "";
      return `<div class="code-block">${label}<pre><code class="hljs">${html}</code></pre></div>`;
    },
  },
});

// Nothing the agent writes may make the browser fetch a URL on its own: a
// remote image would tell whoever serves it that (and when) the answer was
// read, and could carry data out in its URL. So an image becomes a link to
// it (the person may open it), unless it is a `data:image/…` URL, which
// loads nothing. Every other element or attribute that loads something is
// removed: media, frames, objects, `srcset`, `poster`, `background`, inline
// CSS (`url()`), and SVG/MathML (off by the html profile). Also removed:
// attributes that would let the agent's HTML act on the app's own elements
// (`id`, popover and command targets).
const FORBID_TAGS = [
  // Could run or restyle, or submit somewhere.
  "style",
  "form",
  "input",
  "button",
  "textarea",
  "select",
  // Load a URL on their own.
  "picture",
  "source",
  "video",
  "audio",
  "track",
  "iframe",
  "frame",
  "frameset",
  "object",
  "embed",
  "link",
  "meta",
  "base",
  "svg",
  "math",
];
const FORBID_ATTR = [
  "style",
  "srcset",
  "sizes",
  "poster",
  "background",
  "lowsrc",
  "dynsrc",
  "ping",
  "action",
  "formaction",
  "xlink:href",
  "id",
  "popover",
  "popovertarget",
  "popovertargetaction",
  "command",
  "commandfor",
];

/** Image URLs that stay images: inline data, which loads nothing. */
const INLINE_IMAGE = /^data:image\//i;

/** The `<a>` (or plain text, when the URL is not one to follow) an image becomes. */
function imageAsLink(img: Element): Node {
  const doc = img.ownerDocument;
  const src = (img.getAttribute("src") ?? "").trim();
  const alt = (img.getAttribute("alt") ?? "").trim();
  const title = (img.getAttribute("title") ?? "").trim();
  // DOMPurify has already checked `src` against the URLs it allows (no
  // `javascript:`), so what is left, bar `data:`, is fit for a link.
  const href = src && !/^data:/i.test(src) ? src : "";
  const text = alt || title || href || "image";
  if (!href) return doc.createTextNode(text);
  const a = doc.createElement("a");
  a.setAttribute("href", href);
  a.setAttribute("target", "_blank");
  a.setAttribute("rel", "noopener noreferrer nofollow");
  a.setAttribute("class", "md-image-link");
  a.setAttribute("title", title ? `${title} (${href})` : href);
  a.textContent = text;
  return a;
}

let hooked = false;
function purifier(): typeof DOMPurify {
  if (!hooked) {
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      // Links open in a new tab and tell the target nothing about us.
      if (node.tagName === "A" && node.getAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
      // Images load only inline data; any other becomes a link to it.
      if (node.tagName === "IMG") {
        const src = (node.getAttribute("src") ?? "").trim();
        if (INLINE_IMAGE.test(src)) {
          for (const attr of [...node.attributes]) {
            if (!["src", "alt", "title", "width", "height"].includes(attr.name)) node.removeAttribute(attr.name);
          }
        } else if (node.parentElement?.closest("a")) {
          // Already in a link (a badge): its text, as links do not nest.
          const text = (node.getAttribute("alt") ?? "").trim() || (node.getAttribute("title") ?? "").trim();
          node.replaceWith(node.ownerDocument.createTextNode(text || "image"));
        } else {
          node.replaceWith(imageAsLink(node));
        }
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

/** Markdown (or HTML in it) to sanitized HTML that loads nothing remote. */
export function renderMarkdown(src: string): string {
  const html = marked.parse(src, { async: false });
  return purifier().sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS,
    FORBID_ATTR,
  });
}
