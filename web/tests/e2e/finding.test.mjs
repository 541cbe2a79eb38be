// Finding a session and seeing how full its context is: with a real worker
// on real opencode, three sessions (one ended) are narrowed by words of the
// title, by status and back; the composer shows the context the model used
// at its latest step against the model's limit, at desktop and phone widths.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { DESKTOP, PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL } from "../support/worker.mjs";
import { WAIT, approveByLink, assertNoPageErrors, fitsWidth, send, signIn, startSession, waitComplete } from "./flows.mjs";

let worker;

const bed = testBed();

async function rowTitles(page) {
  return page.getByRole("list", { name: "Sessions", exact: true }).locator(".session-row-title").allTextContents();
}

test("the session list narrows by words and status; the composer shows the context used", async () => {
  const secret = await bed.server.addUser("ada");
  worker = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app" });
  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code, "app");
  await worker.ready();

  // The context meter: none before the first step, then the latest step's
  // figures against the model's 128k limit.
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Fix the login bug" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });
  const meter = page.getByRole("meter", { name: "Context used" });
  assert.equal(await meter.count(), 0, "no meter before the model has said anything");
  await send(page, "[tokens 20] hello");
  await waitComplete(page, 1, 60_000);
  await meter.waitFor({ timeout: WAIT });
  assert.match((await meter.getAttribute("aria-valuetext")) ?? "", /^\d+% of 128k tokens$/);
  const used = Number(await meter.getAttribute("aria-valuenow"));
  assert.ok(used > 20 && used < 128_000, `tokens in context: ${used}`);
  assert.equal(await meter.getAttribute("data-level"), "ok");
  await page.setViewportSize(PHONE);
  assert.ok(await meter.isVisible(), "the meter shows at phone width");
  await fitsWidth(page);
  await screenshotAll(page, "context-meter");
  await page.setViewportSize(DESKTOP);

  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Refactor the routes" });
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Login page copy" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });
  await page.getByRole("button", { name: "End session" }).click();
  await page.getByRole("dialog", { name: "End this session?" }).getByRole("button", { name: "End session" }).click();
  await page.waitForURL(new RegExp(`#/w/${worker.workerId}$`), { timeout: WAIT });
  await page.getByRole("list", { name: "Sessions", exact: true }).getByRole("link", { name: /Login page copy/ }).getByText("Ended").waitFor({ timeout: WAIT });

  // Every session, then narrowed.
  await page.goto(`${bed.server.url}/#/sessions`);
  await page.getByRole("list", { name: "Sessions", exact: true }).waitFor({ timeout: WAIT });
  assert.equal((await rowTitles(page)).length, 3);
  const search = page.getByRole("searchbox", { name: "Search sessions" });
  await search.fill("LOGIN");
  await page.getByRole("status").getByText("2 of 3 sessions").waitFor({ timeout: WAIT });
  assert.deepEqual((await rowTitles(page)).sort(), ["Fix the login bug", "Login page copy"]);
  await page.getByRole("combobox", { name: "Status" }).selectOption("closed");
  assert.deepEqual(await rowTitles(page), ["Login page copy"]);
  await page.getByRole("combobox", { name: "Status" }).selectOption("open");
  assert.deepEqual(await rowTitles(page), ["Fix the login bug"]);
  await search.fill("laptop routes");
  assert.deepEqual(await rowTitles(page), ["Refactor the routes"], "words match the worker's machine and the title");
  await search.fill("nothing like this");
  await page.getByText("No sessions match").waitFor({ timeout: WAIT });
  await page.setViewportSize(PHONE);
  await fitsWidth(page);
  await screenshotAll(page, "sessions-no-match");
  await page.getByRole("button", { name: "Clear the filter" }).click();
  assert.equal(await search.inputValue(), "");
  assert.equal((await rowTitles(page)).length, 3);
  await fitsWidth(page);
  await screenshotAll(page, "sessions-filter");

  // The worker's own list has the same bar, without the worker choice.
  await page.goto(`${bed.server.url}/#/w/${encodeURIComponent(worker.workerId)}`);
  await page.getByRole("list", { name: "Sessions", exact: true }).waitFor({ timeout: WAIT });
  await page.getByRole("searchbox", { name: "Search sessions" }).fill("routes");
  assert.deepEqual(await rowTitles(page), ["Refactor the routes"]);
  assert.equal(await page.getByRole("combobox", { name: "Worker" }).count(), 0);

  assertNoPageErrors(page);
  await context.close();
});
