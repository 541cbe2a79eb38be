// @vitest-environment jsdom
//
// Markdown from the agent is sanitized once, in renderMarkdown: nothing in
// the HTML it produces may make the browser fetch a URL on its own.

import { describe, expect, it } from "vitest";

import { renderMarkdown } from "../../src/lib/markdown";

/** The rendered HTML, parsed (inert: a template's content loads nothing). */
function render(src: string): DocumentFragment {
  const t = document.createElement("template");
  t.innerHTML = renderMarkdown(src);
  return t.content;
}

/** Every place in `root` that would load a URL without a click; empty when none. */
function loaders(root: DocumentFragment): string[] {
  const found: string[] = [];
  for (const el of root.querySelectorAll("*")) {
    const tag = el.tagName.toLowerCase();
    if (["picture", "source", "video", "audio", "track", "iframe", "frame", "object", "embed", "link", "meta", "base", "svg", "image", "math", "style", "input", "form"].includes(tag)) {
      found.push(`<${tag}>`);
    }
    for (const attr of ["srcset", "poster", "background", "style", "data", "xlink:href", "ping", "action", "formaction", "lowsrc", "dynsrc"]) {
      if (el.hasAttribute(attr)) found.push(`<${tag} ${attr}>`);
    }
    if (el.hasAttribute("src") && !(tag === "img" && /^data:image\//i.test(el.getAttribute("src")!))) {
      found.push(`<${tag} src=${el.getAttribute("src")}>`);
    }
    if (tag === "img" && el.attributes.length && [...el.attributes].some((a) => !["src", "alt", "title", "width", "height"].includes(a.name))) {
      found.push(`<img ${[...el.attributes].map((a) => a.name).join(" ")}>`);
    }
  }
  return found;
}

function expectLink(root: DocumentFragment, href: string, text: string): void {
  const links = [...root.querySelectorAll("a")].filter((a) => a.getAttribute("href") === href);
  expect(links).toHaveLength(1);
  const [a] = links;
  expect(a.textContent).toBe(text);
  expect(a.getAttribute("target")).toBe("_blank");
  expect(a.getAttribute("rel")).toBe("noopener noreferrer nofollow");
}

describe("remote images become links", () => {
  it("markdown image, with its alt text", () => {
    const root = render("Look: ![the logo](https://example.com/logo.png) here");
    expect(root.querySelectorAll("img")).toHaveLength(0);
    expectLink(root, "https://example.com/logo.png", "the logo");
    expect(root.textContent?.trim()).toBe("Look: the logo here");
    expect(loaders(root)).toEqual([]);
  });

  it("markdown image without alt text: the URL is the text", () => {
    const root = render("![](http://example.com/pixel.gif?user=ada)");
    expect(root.querySelectorAll("img")).toHaveLength(0);
    expectLink(root, "http://example.com/pixel.gif?user=ada", "http://example.com/pixel.gif?user=ada");
    expect(loaders(root)).toEqual([]);
  });

  it("markdown image inside a link, a reference image and a protocol-relative one", () => {
    const root = render(
      "[![badge](https://img.example.com/b.svg)](https://example.com)\n\n![ref][r]\n\n![pr](//example.com/x.png)\n\n[r]: https://example.com/ref.png",
    );
    expect(root.querySelectorAll("img")).toHaveLength(0);
    // A linked image (a badge) keeps its link and shows its alt text.
    expectLink(root, "https://example.com", "badge");
    expectLink(root, "https://example.com/ref.png", "ref");
    expectLink(root, "//example.com/x.png", "pr");
    expect(loaders(root)).toEqual([]);
  });

  it("raw <img> tags, whatever their attributes", () => {
    const root = render(
      [
        '<img src="https://example.com/a.png" alt="A">',
        '<img src="https://example.com/b.png" srcset="https://example.com/b2.png 2x" loading="lazy">',
        '<IMG SRC="HTTPS://EXAMPLE.COM/C.PNG" ALT="C">',
        '<p>inline <img src=https://example.com/d.png alt="D" onerror="alert(1)"> text</p>',
        '<img srcset="https://example.com/e.png 1x" alt="E">',
        '<img src="javascript:alert(1)" alt="F">',
      ].join("\n\n"),
    );
    expect(root.querySelectorAll("img")).toHaveLength(0);
    expectLink(root, "https://example.com/a.png", "A");
    expectLink(root, "https://example.com/b.png", "https://example.com/b.png");
    expectLink(root, "HTTPS://EXAMPLE.COM/C.PNG", "C");
    expectLink(root, "https://example.com/d.png", "D");
    // No src left to link to: the alt text only.
    expect(root.textContent).toContain("E");
    expect(root.textContent).toContain("F");
    expect(root.querySelector("[onerror]")).toBeNull();
    expect(root.querySelector('[href^="javascript"]')).toBeNull();
    expect(loaders(root)).toEqual([]);
  });

  it("relative image URLs become links too", () => {
    const root = render('![rel](images/x.png)\n\n<img src="/api/x">');
    expect(root.querySelectorAll("img")).toHaveLength(0);
    expectLink(root, "images/x.png", "rel");
    expectLink(root, "/api/x", "/api/x");
    expect(loaders(root)).toEqual([]);
  });

  it("inside tables, lists, quotes, details and templates", () => {
    const root = render(
      [
        "| a | b |\n|---|---|\n| ![t](https://example.com/t.png) | x |",
        "- ![l](https://example.com/l.png)",
        "> ![q](https://example.com/q.png)",
        '<details><summary>more</summary><img src="https://example.com/s.png" alt="s"></details>',
        '<template><img src="https://example.com/tpl.png"></template>',
      ].join("\n\n"),
    );
    expect(root.querySelectorAll("img")).toHaveLength(0);
    for (const name of ["t", "l", "q", "s"]) expectLink(root, `https://example.com/${name}.png`, name);
    expect(renderMarkdown('<template><img src="https://example.com/tpl.png"></template>')).not.toContain("<img");
    expect(loaders(root)).toEqual([]);
  });

  it("an image that is a data: URL stays an image, stripped to its plain attributes", () => {
    const png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    const root = render(`![dot](${png})\n\n<img src="${png}" srcset="https://example.com/x.png 2x" usemap="#m" alt="raw">`);
    const imgs = root.querySelectorAll("img");
    expect(imgs).toHaveLength(2);
    for (const img of imgs) expect(img.getAttribute("src")).toBe(png);
    expect(imgs[0].getAttribute("alt")).toBe("dot");
    expect(imgs[1].getAttribute("alt")).toBe("raw");
    expect(loaders(root)).toEqual([]);
  });

  it("a data: URL that is not an image, or a blob: one, leaves only the text", () => {
    const root = render('<img src="data:text/html,<script>alert(1)</script>" alt="html">\n\n<img src="blob:https://example.com/uuid" alt="blob">');
    expect(root.querySelectorAll("img")).toHaveLength(0);
    expect(root.querySelectorAll("a")).toHaveLength(0);
    expect(root.textContent).toContain("html");
    expect(root.textContent).toContain("blob");
    expect(loaders(root)).toEqual([]);
  });
});

describe("nothing else loads a remote URL", () => {
  const cases: [string, string][] = [
    ["picture and source", '<picture><source srcset="https://example.com/p.webp" type="image/webp"><img src="https://example.com/p.png" alt="pic"></picture>'],
    ["video with poster and sources", '<video poster="https://example.com/poster.png" src="https://example.com/v.mp4" autoplay><source src="https://example.com/v.webm"><track src="https://example.com/t.vtt">fallback</video>'],
    ["audio", '<audio src="https://example.com/a.mp3" autoplay controls></audio>'],
    ["iframe", '<iframe src="https://example.com"></iframe>'],
    ["object and embed", '<object data="https://example.com/x.swf"></object><embed src="https://example.com/e.swf">'],
    ["style attribute with url()", '<p style="background-image: url(https://example.com/bg.png)">styled</p>'],
    ["style element", "<style>body { background: url(https://example.com/bg.png) }</style>"],
    ["background attribute", '<table background="https://example.com/bg.png"><tr><td background="https://example.com/td.png">x</td></tr></table>'],
    ["svg image", '<svg><image href="https://example.com/s.png"></image><use xlink:href="https://example.com/u.svg#x"></use></svg>'],
    ["math", '<math><mi xlink:href="https://example.com/m">x</mi></math>'],
    ["link, meta and base", '<link rel="stylesheet" href="https://example.com/s.css"><meta http-equiv="refresh" content="0;url=https://example.com"><base href="https://example.com/">'],
    ["input image and form", '<form action="https://example.com"><input type="image" src="https://example.com/i.png"></form>'],
    ["noscript", '<noscript><img src="https://example.com/n.png"></noscript>'],
    ["markup in alt text", '<img src="https://example.com/a.png" alt="<img src=https://example.com/b.png>">'],
    ["a ping", '<a href="https://example.com" ping="https://example.com/track">x</a>'],
  ];
  for (const [name, html] of cases) {
    it(name, () => {
      const root = render(html);
      expect(loaders(root)).toEqual([]);
      expect(root.querySelectorAll("img")).toHaveLength(0);
    });
  }

  it("the picture's fallback image becomes a link like any other", () => {
    expectLink(render(cases[0][1]), "https://example.com/p.png", "pic");
  });

  it("attributes that reach the app's own elements are removed", () => {
    const root = render('<p id="signin-help" popover>x</p><a href="#" popovertarget="menu" commandfor="dialog" command="show-modal">y</a>');
    expect(root.querySelector("[id], [popover], [popovertarget], [commandfor], [command]")).toBeNull();
  });
});

describe("ordinary markdown still renders", () => {
  it("links open in a new tab without a referrer; code blocks are highlighted", () => {
    const root = render("[docs](https://example.com/docs) and **bold**\n\n```rust\nfn main() {}\n```");
    expectLink(root, "https://example.com/docs", "docs");
    expect(root.querySelector("strong")?.textContent).toBe("bold");
    expect(root.querySelector(".code-block .code-lang")?.textContent).toBe("Rust");
    expect(root.querySelector("code.hljs .hljs-keyword")?.textContent).toBe("fn");
  });

  it("scripts and event handlers are gone", () => {
    const html = renderMarkdown('<script>alert(1)</script><a href="javascript:alert(1)" onclick="alert(2)">x</a>');
    expect(html).not.toMatch(/script|javascript|onclick/i);
  });
});
