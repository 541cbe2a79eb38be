// A whole session: start it with a chosen model, watch answers stream in,
// answer a permission request and a question (with notifications while the
// tab is hidden), abort, queue while the worker is offline, end, and read
// the history again after a reload. And a second user sees none of it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, newPage, screenshotAll } from "../support/browser.mjs";
import { startServer } from "../support/server.mjs";
import { DEFAULT_MODEL, startWorker } from "../support/worker.mjs";
import {
  WAIT,
  answer,
  approveByLink,
  assertNoPageErrors,
  send,
  signIn,
  startSession,
  turn,
  waitComplete,
  watchText,
} from "./flows.mjs";

let server;
let browser;
let worker;
let firstSession;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});

after(async () => {
  await worker?.stop().catch(() => {});
  await browser?.close();
  await server?.stop();
});

test("a session from start to end, and its history after a reload", async () => {
  const secret = await server.addUser("ada", { admin: true });
  worker = await startWorker(server.url, { machine: "laptop", workdir: "/home/ada/src/app" });
  const { context, page } = await newPage(browser);
  await signIn(page, server.url, secret);
  await approveByLink(page, server.url, worker.code, "app");

  // New session: the worker's default model is preselected; pick another.
  await page.getByRole("button", { name: "New session" }).first().click();
  const dialog = page.getByRole("dialog", { name: "New session" });
  await dialog.waitFor({ timeout: WAIT });
  assert.equal(await dialog.getByLabel("Worker").inputValue(), worker.workerId);
  assert.equal(
    await dialog.getByLabel("Model").inputValue(),
    `${DEFAULT_MODEL.provider_id}/${DEFAULT_MODEL.model_id}`,
  );
  await dialog.getByLabel("Title").fill("Fix the flaky test");
  await screenshotAll(page, "new-session");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  const sessionId = await startSession(page, { model: "GPT-5 (openai)", title: "Fix the flaky test" });
  assert.match(sessionId, /^ses_[0-9a-f-]{36}$/);
  firstSession = sessionId;
  await page.getByRole("heading", { name: "Fix the flaky test" }).waitFor();
  await page.locator(".topbar").getByText("GPT-5").waitFor();
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: WAIT });

  // 1. The message shows at once; the answer streams in.
  await send(page, "Why does `cargo test` hang?");
  await turn(page, 1).getByText("Why does `cargo test` hang?").waitFor({ timeout: 2000 });
  const states = await watchText(answer(page, 1), async () =>
    (await answer(page, 1).getByLabel("Answer complete").count()) > 0,
  );
  const partial = states.filter((s) => s.trim().length > 0).slice(0, -1);
  assert.ok(partial.length >= 4, `expected several intermediate states, saw ${partial.length}`);
  const a1 = answer(page, 1);
  await a1.locator("strong", { hasText: "hangs" }).waitFor(); // markdown rendered
  await a1.locator(".code-block .hljs-keyword", { hasText: "fn" }).first().waitFor(); // highlighted code
  const reasoning = a1.locator("details.reasoning");
  assert.equal(await reasoning.getAttribute("open"), null, "reasoning starts collapsed");
  await reasoning.locator("summary").click();
  await reasoning.getByText("never closes its socket").waitFor();
  const grep = a1.getByRole("group", { name: "Tool grep" });
  await grep.locator("summary").getByText("TcpListener::bind in src").waitFor();
  const edit = a1.getByRole("group", { name: "Edit of src/server.rs" });
  await edit.getByText("+2").waitFor();
  await edit.locator(".dl-add").first().waitFor();
  await a1.getByLabel("Usage").getByText("1.2k in").waitFor();
  await a1.getByLabel("Usage").getByText("$0.0042").waitFor();
  await screenshotAll(page, "chat-answer", {
    prepare: (p) => a1.locator(".code-block").scrollIntoViewIfNeeded(),
  });
  // No text doubled by overlapping history and live events.
  const text1 = await a1.locator(".answer-text").first().textContent();
  assert.equal(text1.split("hangs").length - 1, 1);

  // 2. A permission request while the tab is hidden: a notification, a count
  // in the title; then Allow once and the tool's output.
  await page.evaluate(() => window.__setHidden(true));
  await send(page, "Please run the tests (permission needed)");
  const perm = answer(page, 2).getByRole("group", { name: "Permission request" });
  await perm.waitFor({ timeout: WAIT });
  await perm.getByText("cargo test --workspace").waitFor();
  await page.waitForFunction(() => window.__notifications.some((n) => n.title === "Permission needed"), null, {
    timeout: WAIT,
  });
  const note = (await page.evaluate(() => window.__notifications)).find((n) => n.title === "Permission needed");
  assert.match(note.body, /Fix the flaky test/);
  assert.match(await page.title(), /^\(1\) /);
  await screenshotAll(page, "chat-permission");
  await page.evaluate(() => window.__setHidden(false));
  assert.doesNotMatch(await page.title(), /^\(\d+\)/);
  await perm.getByRole("button", { name: "Allow once" }).click();
  const bash = answer(page, 2).getByRole("group", { name: "Tool bash" });
  await bash.getByLabel("Output of bash").getByText("12 passed").waitFor({ timeout: WAIT });
  await waitComplete(page, 2);
  await perm.getByText("Allowed once").waitFor();
  await bash.getByText("Done").waitFor();

  // 3. Abort a long answer with Esc.
  await send(page, "Tell me a slow story");
  await answer(page, 3).getByText("Line 3 of the slow answer.").waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Abort answer" }).waitFor();
  await page.keyboard.press("Escape");
  await answer(page, 3).getByText("Stopped").waitFor({ timeout: WAIT });
  assert.equal(await answer(page, 3).getByText("Line 40 of the slow answer.").count(), 0);
  assert.equal(await page.getByRole("button", { name: "Abort answer" }).count(), 0);

  // 4. Worker offline: the message is queued, then sent when it is back.
  await worker.goOffline();
  await page.locator(".topbar a", { hasText: "app · laptop" }).locator(".presence-dot:not(.on)").waitFor({ timeout: WAIT });
  await send(page, "Are you there?");
  await turn(page, 4).getByText("Queued · the worker is offline").waitFor({ timeout: WAIT });
  await worker.goOnline();
  await waitComplete(page, 4);

  // 5. A question, answered by picking an option; the finished answer
  // notifies too while the tab is hidden.
  await page.evaluate(() => window.__setHidden(true));
  await send(page, "Ask me a question first");
  const q = answer(page, 5).getByRole("group", { name: "Question from the agent" });
  await q.getByText("Which colour should the button be?").waitFor({ timeout: WAIT });
  await page.waitForFunction(() => window.__notifications.some((n) => n.title === "The agent has a question"), null, {
    timeout: WAIT,
  });
  await q.getByRole("button", { name: /^Blue/ }).click();
  assert.equal(await q.getByRole("button", { name: /^Blue/ }).getAttribute("aria-pressed"), "true");
  await q.getByRole("button", { name: "Send answer" }).click();
  await waitComplete(page, 5);
  await q.getByText("Answered").waitFor();
  await page.waitForFunction(() => window.__notifications.some((n) => n.title === "Answer ready"), null, {
    timeout: WAIT,
  });
  await page.evaluate(() => window.__setHidden(false));

  // End the session: confirmed, back to the worker's list, marked ended.
  await page.getByRole("button", { name: "End session" }).click();
  await page.getByRole("dialog", { name: "End this session?" }).getByRole("button", { name: "End session" }).click();
  await page.waitForURL(new RegExp(`#/w/${worker.workerId}$`), { timeout: WAIT });
  const row = page.getByRole("list", { name: "Sessions" }).getByRole("link", { name: /Fix the flaky test/ });
  await row.getByText("Ended").waitFor({ timeout: WAIT });
  await row.getByText("5 messages").waitFor();
  await screenshotAll(page, "session-list");

  // Reload the session: the whole history is there, once.
  await page.goto(`${server.url}/#/s/${sessionId}`);
  await page.reload();
  await waitComplete(page, 1);
  assert.equal(await page.getByRole("article").count(), 5);
  const again = (await answer(page, 1).locator(".answer-text").first().textContent()) ?? "";
  assert.equal(again, text1);
  await answer(page, 2).getByText("Allowed once").waitFor();
  await answer(page, 2).getByRole("group", { name: "Tool bash" }).locator("summary").click();
  await answer(page, 2).getByLabel("Output of bash").getByText("12 passed").waitFor();
  await answer(page, 3).getByText("Stopped").waitFor();
  await waitComplete(page, 4);
  await answer(page, 5).getByRole("button", { name: /^Blue/, pressed: true }).waitFor();
  await page.getByText("This session has ended.").waitFor();
  assert.equal(await page.getByLabel("Message", { exact: true }).count(), 0);

  assertNoPageErrors(page);
  await context.close();
});

test("a second user cannot open the first user's session", async () => {
  assert.ok(firstSession, "the first test made a session");
  const secret = await server.addUser("bob");
  const { context, page } = await newPage(browser);
  await signIn(page, server.url, secret, `/#/s/${firstSession}`);
  await page.getByRole("heading", { name: "Session not found", exact: true }).first().waitFor({ timeout: WAIT });
  await page.getByText("There is no session at this address, or it is not yours.").waitFor();
  // Nothing of the first user's shows anywhere.
  await page.getByRole("list", { name: "Recent sessions" }).getByText("No sessions yet").waitFor({ timeout: WAIT });
  await page.getByRole("link", { name: "Machines", exact: true }).click();
  await page.getByText("No machines yet").waitFor({ timeout: WAIT });
  assertNoPageErrors(page);
  await context.close();
});
