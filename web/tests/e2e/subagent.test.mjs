// A subagent at phone width, against a real `tether worker` running real
// opencode on the scripted fake LLM: the agent hands the work to a
// subagent whose bash call asks permission; the prompt shows in the answer
// (saying which subagent asks), Allow once lets the command run, and the
// subagent's card ends completed with its call done.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL } from "../support/worker.mjs";
import { WAIT, answer, approveByLink, assertNoPageErrors, send, signIn, startSession, waitComplete } from "./flows.mjs";

let worker;

const bed = testBed();

test("a subagent's permission prompt and its card, on a phone", async () => {
  const secret = await bed.server.addUser("ada", { admin: true });
  worker = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app" });
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code, "app");
  await worker.ready();
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Delegate" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });
  await page.setViewportSize(PHONE);

  await send(page, '[subagent "Say hello" [bash echo subagent-was-here]]');
  const a = answer(page, 1);
  const card = a.getByRole("group", { name: "Subagent general" });
  await card.waitFor({ timeout: 30_000 });
  await card.getByText("Say hello").waitFor();
  const perm = a.getByRole("group", { name: "Permission request" });
  await perm.waitFor({ timeout: 30_000 });
  await perm.getByText("Asked by the subagent general").waitFor({ timeout: WAIT });
  await perm.getByText("echo subagent-was-here").first().waitFor();
  // The prompt's buttons fit the phone's width.
  for (const name of ["Allow once", "Always allow", "Deny"]) {
    const box = await perm.getByRole("button", { name }).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${name} is on screen: ${JSON.stringify(box)}`);
  }
  await screenshotAll(page, "subagent-permission", { prepare: () => perm.scrollIntoViewIfNeeded() });

  await perm.getByRole("button", { name: "Allow once" }).click();
  await waitComplete(page, 1, 60_000);
  await perm.getByText("Allowed once").waitFor();
  assert.equal(await card.getAttribute("data-status"), "completed");
  if ((await card.getAttribute("open")) == null) await card.locator("summary").click();
  const call = card.getByRole("list", { name: "Subagent tool calls" }).getByRole("listitem");
  assert.equal(await call.count(), 1);
  await call.getByText("echo subagent-was-here").waitFor();
  await call.getByText("Done").waitFor();
  await a.getByText("The subagent said: Ran it. subagent-was-here").waitFor();
  const cardBox = await card.boundingBox();
  assert.ok(cardBox && cardBox.x + cardBox.width <= PHONE.width, "the card fits the phone's width");
  await screenshotAll(page, "subagent-card", { prepare: () => card.scrollIntoViewIfNeeded() });

  assertNoPageErrors(page);
  await context.close();
});
