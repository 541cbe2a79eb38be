// Choosing the model for the next message: with a real worker whose
// opencode offers two fake models, the composer's model select switches to
// the other one, the message sent is marked with it, and after a reload the
// choice is still there; at phone width the row fits.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL } from "../support/worker.mjs";
import { WAIT, approveByLink, assertNoPageErrors, fitsWidth, send, signIn, startSession, turn, waitComplete } from "./flows.mjs";

const bed = testBed();

const OTHER = { "other-model": { name: "Other Model", tool_call: true, limit: { context: 64000, output: 4096 } } };

test("a message goes to the model chosen in the composer, and the choice stays", async () => {
  const secret = await bed.server.addUser("ada");
  const worker = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app", extraModels: OTHER });
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code, "app");
  await worker.ready();
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Two models" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });
  await page.setViewportSize(PHONE);

  const select = page.getByRole("combobox", { name: "Model for the next message" });
  await select.waitFor({ timeout: WAIT });
  assert.equal(await select.locator("option:checked").textContent(), "Fake Model (session)", "the session's model first");

  // A message with the session's model has no mark.
  await send(page, "[tokens 3] first");
  await waitComplete(page, 1, 60_000);
  assert.equal(await turn(page, 1).locator(".msg-chip").count(), 0);

  await select.selectOption({ label: "Other Model" });
  await send(page, "[tokens 3] second");
  await waitComplete(page, 2, 60_000);
  await turn(page, 2).locator(".msg-chip").getByText("Other Model").waitFor({ timeout: WAIT });
  await fitsWidth(page);
  await screenshotAll(page, "model-choice");

  await page.reload();
  await turn(page, 2).locator(".msg-chip").getByText("Other Model").waitFor({ timeout: WAIT });
  await select.waitFor({ timeout: WAIT });
  assert.equal(await select.locator("option:checked").textContent(), "Other Model", "the choice is kept");
  await fitsWidth(page);

  // Back to the session's model: the next message has no mark.
  await select.selectOption({ label: "Fake Model (session)" });
  await send(page, "[tokens 3] third");
  await waitComplete(page, 3, 60_000);
  assert.equal(await turn(page, 3).locator(".msg-chip").count(), 0);
  assertNoPageErrors(page);
  await context.close();
});
