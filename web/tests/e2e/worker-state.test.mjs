// What a worker's opencode is doing shows from the moment the worker is
// approved: a real `tether worker` whose opencode takes a while to start (its
// `--opencode` is a script that sleeps first, as a slow machine's first start
// does) shows "Starting opencode…", and New session is not offered until
// opencode is ready with its models, on the machines screen, the worker's
// screen and in the New session dialog, at desktop and phone widths. Then
// the title opencode makes for a session the user left untitled shows in the
// session header, the sidebar and the session list.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { DESKTOP, PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL, numberedText } from "../support/worker.mjs";
import { WAIT, answer, approveByLink, assertNoPageErrors, fitsWidth, send, signIn, startSession, waitComplete } from "./flows.mjs";

let worker;

const bed = testBed();

test("a starting worker says so and offers no session until its opencode is ready; opencode's title shows", async () => {
  const secret = await bed.server.addUser("ada");
  // Long enough to look at every screen while opencode starts.
  worker = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app", opencodeStartDelayMs: 15_000 });
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code, "app");

  // Machines, at both widths: the worker is starting its opencode, and its
  // New session button is disabled, saying why.
  await page.getByRole("link", { name: "Machines", exact: true }).click();
  const row = page.getByRole("listitem", { name: "Worker app" });
  await row.getByText("Starting opencode…", { exact: true }).waitFor({ timeout: WAIT });
  const newOnRow = row.getByRole("button", { name: "New session on app" });
  assert.equal(await newOnRow.isDisabled(), true, "no session on a worker whose opencode is starting");
  assert.equal(await newOnRow.getAttribute("title"), "opencode is starting on this worker");
  await page.setViewportSize(PHONE);
  await row.getByText("Starting opencode…", { exact: true }).waitFor();
  assert.equal(await newOnRow.isDisabled(), true);
  await fitsWidth(page);
  await screenshotAll(page, "worker-starting");
  await page.setViewportSize(DESKTOP);

  // The worker's own screen says the same.
  await row.getByRole("link", { name: "Sessions of app" }).click();
  const details = page.getByRole("region", { name: "Worker details" });
  await details.getByText("Starting opencode…", { exact: true }).waitFor({ timeout: WAIT });
  const newOnPage = page.locator(".topbar").getByRole("button", { name: "New session" });
  assert.equal(await newOnPage.isDisabled(), true);

  // The sidebar's New session opens the dialog, which says why it cannot
  // start one on this worker.
  await page.getByRole("navigation", { name: "Sidebar" }).getByRole("button", { name: "New session" }).click();
  const dialog = page.getByRole("dialog", { name: "New session" });
  await dialog.waitFor({ timeout: WAIT });
  await dialog.getByRole("status").getByText("opencode is starting on this worker.").waitFor();
  assert.equal(await dialog.getByRole("button", { name: "Start session" }).isDisabled(), true);

  // opencode comes up: the dialog offers the session with its model.
  await worker.ready();
  await dialog.getByLabel("Model").locator("option", { hasText: FAKE_MODEL_LABEL }).waitFor({ state: "attached", timeout: WAIT });
  await dialog.getByRole("button", { name: "Start session" }).waitFor({ state: "visible" });
  await page.waitForFunction(() => {
    const b = [...document.querySelectorAll("dialog[open] button[type=submit]")][0];
    return b && !b.disabled;
  }, null, { timeout: WAIT });
  assert.equal(await dialog.getByRole("status").count(), 0, "nothing stands in the way");
  await dialog.getByRole("button", { name: "Cancel" }).click();
  await details.getByText("Online · 1 model", { exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await newOnPage.isDisabled(), false);
  await page.getByRole("link", { name: "Machines", exact: true }).click();
  await row.getByText("Online · 1 model", { exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await newOnRow.isDisabled(), false);
  await screenshotAll(page, "worker-ready");

  // A session without a title: opencode names it after the first message
  // (the fake model's title is that message's first line).
  const sessionId = await startSession(page, { model: FAKE_MODEL_LABEL });
  const header = page.locator(".topbar");
  await header.getByRole("heading", { name: "Untitled session" }).waitFor({ timeout: WAIT });
  await send(page, "Fix the flaky parser test [tokens 4]");
  await waitComplete(page, 1, 30_000);
  assert.equal((await answer(page, 1).locator(".answer-text").first().textContent())?.trim(), numberedText(4));
  await header.getByRole("heading", { name: "Fix the flaky parser test" }).waitFor({ timeout: 30_000 });
  const sidebarLink = page
    .getByRole("list", { name: "Recent sessions" })
    .getByRole("link", { name: /Fix the flaky parser test/ });
  await sidebarLink.waitFor({ timeout: WAIT });
  assert.equal(await page.title(), "Fix the flaky parser test · Tether");

  // The session list, and both at phone width.
  await page.goto(`${bed.server.url}/#/sessions`);
  const listed = page.getByRole("list", { name: "Sessions", exact: true }).getByRole("link", { name: /Fix the flaky parser test/ });
  await listed.waitFor({ timeout: WAIT });
  await page.setViewportSize(PHONE);
  await listed.waitFor();
  await fitsWidth(page);
  await screenshotAll(page, "sessions-titled");
  await page.goto(`${bed.server.url}/#/s/${sessionId}`);
  await header.getByRole("heading", { name: "Fix the flaky parser test" }).waitFor({ timeout: WAIT });
  const box = await header.getByRole("heading").boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `the title fits: ${JSON.stringify(box)}`);
  await fitsWidth(page);

  assertNoPageErrors(page);
  await context.close();
});
