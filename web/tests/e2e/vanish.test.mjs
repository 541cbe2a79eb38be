// The worker dies for good in the middle of an answer (SIGKILL, opencode with
// it): the answer says its worker is offline; Stop ends it at once; left
// alone, the host ends it once the worker's lease is over; and a message
// sent meanwhile waits for the worker and is answered when it is back.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { newPage, screenshotAll } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL } from "../support/worker.mjs";
import { WAIT, answer, approveByLink, assertNoPageErrors, send, signIn, startSession, turn, waitComplete } from "./flows.mjs";

let worker;

// A two-second lease, so the test need not wait minutes.
const bed = testBed({ extraArgs: ["--worker-lease-secs", "2"] });

test("a worker that vanishes mid-answer: Stop ends it at once, the lease ends it otherwise", async () => {
  const secret = await bed.server.addUser("vera");
  worker = await bed.startWorker();
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code);
  await worker.ready();
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Vanishing" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });

  // A slow answer (800 words, 50 ms apart), and the worker dies in it.
  await send(page, "[tokens 800] [delay 50]");
  await answer(page, 1).getByText(/\bw10\b/).waitFor({ timeout: 30_000 });
  await worker.goOffline();
  const note = answer(page, 1).locator('[data-state="worker-offline"]');
  await note.waitFor({ timeout: WAIT });
  assert.match((await note.textContent()) ?? "", /The worker is offline/);
  await screenshotAll(page, "answer-worker-offline");

  // Nobody can stop it on the worker: Stop ends it here, keeping what came.
  await page.getByRole("button", { name: "Abort answer" }).click();
  await answer(page, 1).getByText("Stopped").waitFor({ timeout: WAIT });
  assert.match((await answer(page, 1).textContent()) ?? "", /\bw10\b/, "what had come is kept");
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: WAIT });

  // Back, then gone again mid-answer; this time nobody stops it.
  await worker.goOnline();
  await send(page, "[tokens 800] [delay 50]");
  await answer(page, 2).getByText(/\bw10\b/).waitFor({ timeout: 30_000 });
  await worker.goOffline();
  await answer(page, 2).locator('[data-state="worker-offline"]').waitFor({ timeout: WAIT });
  // Past the lease, the next look at the session ends the answer.
  await page.waitForTimeout(2_500);
  await page.reload();
  const failed = answer(page, 2).getByRole("alert");
  await failed.waitFor({ timeout: WAIT });
  assert.match((await failed.textContent()) ?? "", /The answer failed: the worker went away/);
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: WAIT });

  // A message sent now waits for the worker, and is answered once it is back.
  await send(page, "Are you back?");
  await turn(page, 3).getByText("Queued · the worker is offline").waitFor({ timeout: WAIT });
  await worker.goOnline();
  await waitComplete(page, 3, 60_000);

  // A message too long for the protocol is stopped before it is sent, in
  // words, and stays in the composer.
  const box = page.getByLabel("Message", { exact: true });
  await box.fill("x".repeat(40 * 1024));
  const refusal = page.locator(".composer-error");
  await refusal.waitFor({ timeout: WAIT });
  assert.match((await refusal.textContent()) ?? "", /This message is 40 KB; a message can be at most 30 KB/);
  assert.equal(await page.getByRole("button", { name: "Send message" }).isDisabled(), true);
  await box.press("Enter");
  assert.equal(await page.getByRole("article").count(), 3, "nothing was sent");
  assert.equal((await box.inputValue()).length, 40 * 1024, "the text is kept");
  await box.fill("short again");
  assert.equal(await refusal.count(), 0);

  assertNoPageErrors(page);
  await context.close();
});
