// A whole session against a real `tether worker` running real opencode on
// the scripted fake LLM: start it with a chosen model, watch answers stream
// in, answer a permission request and a question (with notifications while
// the tab is hidden), abort, queue while the worker process is down, end,
// and read the history again after a reload. And a second user sees none of
// it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { newPage, screenshotAll } from "../support/browser.mjs";
import { DEFAULT_MODEL, FAKE_MODEL_LABEL, numberedText } from "../support/worker.mjs";
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

let worker;
let firstSession;

const bed = testBed();

test("a session from start to end, and its history after a reload", async () => {
  const secret = await bed.server.addUser("ada", { admin: true });
  worker = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app" });
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code, "app");
  await worker.ready();

  // New session: the worker's default model (its opencode.json's) is
  // preselected; pick it by its label.
  await page.getByRole("button", { name: "New session" }).first().click();
  const dialog = page.getByRole("dialog", { name: "New session" });
  await dialog.waitFor({ timeout: WAIT });
  assert.equal(await dialog.getByLabel("Worker").inputValue(), worker.workerId);
  await dialog.getByLabel("Model").locator("option", { hasText: FAKE_MODEL_LABEL }).waitFor({ state: "attached", timeout: WAIT });
  assert.equal(
    await dialog.getByLabel("Model").inputValue(),
    `${DEFAULT_MODEL.provider_id}/${DEFAULT_MODEL.model_id}`,
  );
  await dialog.getByLabel("Title").fill("Fix the flaky test");
  await screenshotAll(page, "new-session");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  const sessionId = await startSession(page, { model: FAKE_MODEL_LABEL, title: "Fix the flaky test" });
  assert.match(sessionId, /^ses_[0-9a-f-]{36}$/);
  firstSession = sessionId;
  await page.getByRole("heading", { name: "Fix the flaky test" }).waitFor();
  await page.locator(".topbar").getByText("Fake Model").waitFor();
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });

  // 1. The message shows at once; the answer streams in (300 words, 10 ms
  // apart), after collapsed reasoning, and completes with its usage.
  const ask1 = "[think] [tokens 300] [delay 10] Why does the test hang?";
  await send(page, ask1);
  await turn(page, 1).getByText(ask1).waitFor({ timeout: 2000 });
  const states = await watchText(answer(page, 1), async () =>
    (await answer(page, 1).getByLabel("Answer complete").count()) > 0,
  );
  const partial = states.filter((s) => s.trim().length > 0).slice(0, -1);
  assert.ok(partial.length >= 4, `expected several intermediate states, saw ${partial.length}`);
  const a1 = answer(page, 1);
  const text1 = (await a1.locator(".answer-text").first().textContent())?.trim();
  // Every word once, in order: no text doubled by overlapping history and live events.
  assert.equal(text1, numberedText(300));
  const reasoning = a1.locator("details.reasoning");
  assert.equal(await reasoning.getAttribute("open"), null, "reasoning starts collapsed");
  await reasoning.locator("summary").click();
  await reasoning.getByText("Let me think about this step by step.").waitFor();
  await a1.getByLabel("Usage").getByText(/\d(\.\d)?k? in/).waitFor();

  // 2. Markdown with a code block (the fake model echoes what it is sent).
  const FENCE = "```";
  // (The echo drops indentation, so the code has none.)
  await send(page, `The test **hangs** when the server never closes its socket:\n\n${FENCE}rust\nfn shutdown(server: Server) { drop(server) }\nlet listener = TcpListener::bind("127.0.0.1:0")?;\n${FENCE}\n\nSee \`src/bed.server.rs\`.`);
  await waitComplete(page, 2);
  const a2 = answer(page, 2);
  await a2.locator("strong", { hasText: "hangs" }).waitFor(); // markdown rendered
  await a2.locator(".code-block .hljs-keyword", { hasText: "fn" }).first().waitFor(); // highlighted code
  await a2.locator("code", { hasText: "src/bed.server.rs" }).first().waitFor();
  await screenshotAll(page, "chat-answer", {
    prepare: () => a2.locator(".code-block").scrollIntoViewIfNeeded(),
  });

  // 3. A permission request while the tab is hidden: a notification, a count
  // in the title; then Allow once, the command runs and its output shows.
  await page.evaluate(() => window.__setHidden(true));
  await send(page, "[bash echo hello-from-tool] Please run it");
  const perm = answer(page, 3).getByRole("group", { name: "Permission request" });
  await perm.waitFor({ timeout: 30_000 });
  await perm.getByText("echo hello-from-tool").first().waitFor();
  await page.waitForFunction(() => window.__notifications.some((n) => n.title === "Permission needed"), null, {
    timeout: WAIT,
  });
  const note = (await page.evaluate(() => window.__notifications)).find((n) => n.title === "Permission needed");
  assert.match(note.body, /Fix the flaky test/);
  assert.match(await page.title(), /^\(1\) /);
  await screenshotAll(page, "chat-permission");
  await page.evaluate(() => window.__setHidden(false));
  assert.doesNotMatch(await page.title(), /^\(\d+\)/);
  // Its tool call waits for the user, and says so rather than "Running".
  const bash = answer(page, 3).getByRole("group", { name: "Tool bash" });
  await bash.locator(".tool-status").getByText("Needs approval").waitFor({ timeout: WAIT });
  await perm.getByRole("button", { name: "Allow once" }).click();
  await waitComplete(page, 3);
  await perm.getByText("Allowed once").waitFor();
  await bash.getByText("Done").waitFor();
  if ((await bash.getAttribute("open")) == null) await bash.locator("summary").click();
  await bash.getByLabel("Output of bash").getByText("hello-from-tool").waitFor({ timeout: WAIT });
  await answer(page, 3).getByText("Ran it. hello-from-tool").waitFor();

  // 4. A file the agent writes shows as an edit.
  await send(page, "[write notes.txt hello]");
  await waitComplete(page, 4);
  const edit = answer(page, 4).getByRole("group", { name: /^Edit of .*notes\.txt$/ });
  await edit.waitFor();
  await edit.locator(".dl-add").first().waitFor();
  await answer(page, 4).getByText(/Wrote .*notes\.txt\./).waitFor();

  // 5. Abort a long answer with Esc.
  await send(page, "[tokens 3000] [delay 10]");
  await answer(page, 5).getByText(/\bw20\b/).waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Abort answer" }).waitFor();
  await page.keyboard.press("Escape");
  await answer(page, 5).getByText("Stopped").waitFor({ timeout: WAIT });
  assert.equal(await answer(page, 5).getByText(/\bw2999\b/).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Abort answer" }).count(), 0);

  // 6. The worker process is killed: the message is queued, then sent when
  // the worker is started again.
  await worker.goOffline();
  await page.locator(".topbar a", { hasText: "app · laptop" }).locator(".presence-dot:not(.on)").waitFor({ timeout: WAIT });
  await send(page, "[tokens 30] Are you there?");
  await turn(page, 6).getByText("Queued · the worker is offline").waitFor({ timeout: WAIT });
  await worker.goOnline();
  await waitComplete(page, 6, 60_000);
  assert.equal((await answer(page, 6).locator(".answer-text").first().textContent())?.trim(), numberedText(30));

  // 7. A question, answered by picking an option; the finished answer
  // notifies too while the tab is hidden.
  await page.evaluate(() => window.__setHidden(true));
  await send(page, "[question]");
  const q = answer(page, 7).getByRole("group", { name: "Question from the agent" });
  await q.getByText("Which color do you prefer?").waitFor({ timeout: 30_000 });
  await page.waitForFunction(() => window.__notifications.some((n) => n.title === "The agent has a question"), null, {
    timeout: WAIT,
  });
  await q.getByRole("button", { name: /^Blue/ }).click();
  assert.equal(await q.getByRole("button", { name: /^Blue/ }).getAttribute("aria-pressed"), "true");
  await q.getByRole("button", { name: "Send answer" }).click();
  await waitComplete(page, 7);
  await q.getByText("Answered").waitFor();
  await answer(page, 7).getByText("You chose Blue.").waitFor();
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
  await row.getByText("7 messages").waitFor();
  await screenshotAll(page, "session-list");

  // Reload the session: the whole history is there, once.
  await page.goto(`${bed.server.url}/#/s/${sessionId}`);
  await page.reload();
  await waitComplete(page, 1);
  assert.equal(await page.getByRole("article").count(), 7);
  const again = (await answer(page, 1).locator(".answer-text").first().textContent())?.trim();
  assert.equal(again, text1);
  await answer(page, 2).locator("strong", { hasText: "hangs" }).waitFor();
  await answer(page, 3).getByText("Allowed once").waitFor();
  const bashAgain = answer(page, 3).getByRole("group", { name: "Tool bash" });
  if ((await bashAgain.getAttribute("open")) == null) await bashAgain.locator("summary").click();
  await answer(page, 3).getByLabel("Output of bash").getByText("hello-from-tool").waitFor();
  await answer(page, 4).getByRole("group", { name: /^Edit of .*notes\.txt$/ }).waitFor();
  await answer(page, 5).getByText("Stopped").waitFor();
  await waitComplete(page, 6);
  await answer(page, 7).getByRole("button", { name: /^Blue/, pressed: true }).waitFor();
  await page.getByText("This session has ended.").waitFor();
  assert.equal(await page.getByLabel("Message", { exact: true }).count(), 0);

  assertNoPageErrors(page);
  await context.close();
});

test("a second user cannot open the first user's session", async () => {
  assert.ok(firstSession, "the first test made a session");
  const secret = await bed.server.addUser("bob");
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret, `/#/s/${firstSession}`);
  await page.getByRole("heading", { name: "Session not found", exact: true }).first().waitFor({ timeout: WAIT });
  await page.getByText("There is no session at this address, or it is not yours.").waitFor();
  // Nothing of the first user's shows anywhere.
  await page.getByRole("list", { name: "Recent sessions" }).getByText("No sessions yet").waitFor({ timeout: WAIT });
  await page.getByRole("link", { name: "Machines", exact: true }).click();
  await page.getByText("No machines yet").waitFor({ timeout: WAIT });
  assertNoPageErrors(page);
  await context.close();
});
