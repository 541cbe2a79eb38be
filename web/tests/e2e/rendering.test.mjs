// What the agent (real worker and opencode, fake LLM) writes is rendered,
// never run; a long history is read back
// over several pages; keyboard, theme and the phone drawer work.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { PHONE, newPage, screenshot } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL, numberedText } from "../support/worker.mjs";
import { WAIT, answer, approveByLink, assertNoPageErrors, send, signIn, startSession, waitComplete } from "./flows.mjs";

let worker;

const bed = testBed();

test("markup from the agent is sanitized; a long history pages back in", async () => {
  const secret = await bed.server.addUser("ada");
  worker = await bed.startWorker();
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code);
  await worker.ready();
  const sessionId = await startSession(page, { model: FAKE_MODEL_LABEL, title: "Rendering" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });

  // Markup an agent might echo from a web page (the fake model echoes what
  // it is sent): none of it may run. Shift+Enter is a new line, Enter sends.
  const evil =
    "Safe **bold**, a [good link](https://example.com/docs) and a [bad link](javascript:window.__xss=1).\n\n" +
    '<img src="x" onerror="window.__xss=2">\n\n' +
    "<script>window.__xss=3</script>\n\n" +
    '<a href="#" onclick="window.__xss=4">click me</a>\n\n' +
    '<iframe src="https://example.com"></iframe>\n\n' +
    "A remote image: ![the logo](https://example.com/logo.png) and " +
    '<video poster="https://example.com/poster.png" src="https://example.com/v.mp4"></video>' +
    '<p style="background:url(https://example.com/bg.png)">styled</p>\n\nThe end.';
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(evil);
  await box.press("Shift+Enter");
  await box.pressSequentially("please");
  assert.equal(await box.inputValue(), `${evil}\nplease`);
  await box.press("Enter");
  assert.equal(await box.inputValue(), "");
  await waitComplete(page, 1);
  const a1 = answer(page, 1);
  await a1.locator("strong", { hasText: "bold" }).waitFor();
  await a1.getByText("The end.").waitFor();
  const good = a1.getByRole("link", { name: "good link" });
  assert.equal(await good.getAttribute("target"), "_blank");
  assert.match((await good.getAttribute("rel")) ?? "", /noopener/);
  // The javascript: link keeps its text and loses its target.
  await a1.getByText("bad link").waitFor();
  assert.equal(await a1.locator('[href^="javascript"]').count(), 0);
  assert.equal(await a1.locator("script, iframe, [onerror], [onclick]").count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  // Remote images are links to them, never images; no other element or
  // attribute that loads a URL survives.
  const logo = a1.getByRole("link", { name: /the logo/ });
  assert.equal(await logo.getAttribute("href"), "https://example.com/logo.png");
  assert.equal(await logo.getAttribute("target"), "_blank");
  assert.equal(await logo.getAttribute("rel"), "noopener noreferrer nofollow");
  assert.equal(await a1.locator("img, video, audio, source, picture, [srcset], [poster], [style]").count(), 0);

  // Tool output (300 rows, about 24 KB: opencode itself cuts a command's
  // output at 30,000 characters, so no bigger) and a long answer (5,000
  // words, about 29 KB, kept as chunks and as the final text): live, then
  // again after a reload, which reads the history (over 96 KB) in several
  // pages.
  const pages = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => {
      if (typeof f.payload === "string" && /"action":"session_(watch|history)"/.test(f.payload)) pages.push(f.payload);
    });
  });
  await send(page, `[bash seq -f 'row %04g: ${"x".repeat(68)}' 1 300]`);
  await answer(page, 2).getByRole("group", { name: "Permission request" }).getByRole("button", { name: "Allow once" }).click({ timeout: 30_000 });
  await waitComplete(page, 2, 30_000);
  const rows = async () => {
    const out = answer(page, 2).getByLabel("Output of bash");
    const text = (await out.textContent()) ?? "";
    return [...text.matchAll(/^row (\d{4}):/gm)].map((m) => Number(m[1]));
  };
  const expected = Array.from({ length: 300 }, (_, i) => i + 1);
  assert.deepEqual(await rows(), expected);
  await answer(page, 2).getByText("Ran it. row 0001:").waitFor();
  const long = numberedText(5000);
  const longText = async () => (await answer(page, 3).locator(".answer-text").first().textContent())?.trim();
  await send(page, "[tokens 5000] [delay 1]");
  await waitComplete(page, 3, 60_000);
  assert.equal(await longText(), long);

  // The model fails once: while opencode waits to try again the answer says
  // so, then it streams as usual and the notice says what happened.
  await send(page, "[error 500 1] [retry-after 1500] [tokens 3] flaky");
  await answer(page, 4).getByRole("status").filter({ hasText: "trying again, attempt 1" }).waitFor({ timeout: 20_000 });
  await waitComplete(page, 4, 30_000);
  await answer(page, 4).getByText("failed once along the way").waitFor();
  await answer(page, 4).getByText("w0 w1 w2").waitFor();

  await page.reload();
  await waitComplete(page, 3, 20_000);
  // The later pages follow the first one (which already says complete).
  for (let i = 0; i < 100 && (await longText()) !== long; i++) await page.waitForTimeout(100);
  assert.equal(await longText(), long);
  const tool = answer(page, 2).getByRole("group", { name: "Tool bash" });
  if ((await tool.getAttribute("open")) == null) await tool.locator("summary").click();
  assert.deepEqual(await rows(), expected);
  assert.ok(
    pages.filter((p) => p.includes('"action":"session_history"')).length >= 1,
    "the history came in more than one page",
  );
  await answer(page, 1).getByText("The end.").waitFor();
  assert.equal(await page.evaluate(() => window.__xss), undefined);

  // The theme toggle sticks across reloads.
  const before = await page.evaluate(() => document.documentElement.dataset.theme);
  await page.getByRole("button", { name: /Switch to (dark|light) theme/ }).click();
  await page.waitForFunction((b) => document.documentElement.dataset.theme !== b, before);
  const chosen = await page.evaluate(() => document.documentElement.dataset.theme);
  await page.reload();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), chosen);

  // On a phone the sidebar is a drawer.
  await page.setViewportSize(PHONE);
  const nav = page.getByRole("navigation", { name: "Sidebar" });
  await page.getByRole("button", { name: "Open menu" }).click();
  await nav.getByRole("link", { name: /Rendering/ }).waitFor();
  await page.waitForTimeout(300);
  await screenshot(page, "drawer");
  await nav.getByRole("button", { name: "Close menu" }).click();
  await page.waitForURL(new RegExp(`#/s/${sessionId}$`));
  await page.waitForTimeout(300);
  await screenshot(page, "chat-phone");

  // Chrome reports a (blocked) CSP violation when DOMPurify parses markup
  // with inline handlers in its inert document: expected with this input,
  // and it shows the CSP would stop such a handler even past the sanitizer.
  page.errors = page.errors.filter((e) => !/Executing inline event handler violates/.test(e));
  assertNoPageErrors(page);
  await context.close();
});
