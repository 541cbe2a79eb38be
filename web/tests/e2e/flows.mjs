// What a person does in the UI, step by step, for the browser tests.

import assert from "node:assert/strict";

export const WAIT = 10_000;

export async function signIn(page, url, secret, path = "/") {
  await page.goto(url + path);
  await page.getByLabel("Secret").fill(secret);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Sidebar" }).waitFor({ timeout: WAIT });
  // Connected once the sidebar's dot says so.
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
}

/** Opens the pairing link a worker shows and approves it. */
export async function approveByLink(page, url, code, name) {
  await page.goto(`${url}/#/pair/${code}`);
  const card = page.getByRole("region", { name: "Worker to approve" });
  await card.waitFor({ timeout: WAIT });
  if (name) await card.getByLabel("Worker name").fill(name);
  await card.getByRole("button", { name: "Approve" }).click();
  await page.getByText("is paired.").waitFor({ timeout: WAIT });
}

/** New session dialog: worker, model (by visible label), title. */
export async function startSession(page, { model, title } = {}) {
  await page.getByRole("button", { name: "New session" }).first().click();
  const dialog = page.getByRole("dialog", { name: "New session" });
  await dialog.waitFor({ timeout: WAIT });
  if (model) {
    // The worker offers its models once its opencode is up.
    await dialog.getByLabel("Model").locator("option", { hasText: model }).first().waitFor({ state: "attached", timeout: 60_000 });
    await dialog.getByLabel("Model").selectOption({ label: model });
  }
  if (title) await dialog.getByLabel("Title").fill(title);
  await dialog.getByRole("button", { name: "Start session" }).click();
  await page.getByLabel("Message", { exact: true }).waitFor({ timeout: WAIT });
  await page.waitForURL(/#\/s\//, { timeout: WAIT });
  return decodeURIComponent(page.url().split("#/s/")[1]);
}

export async function send(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

export function turn(page, n) {
  return page.getByRole("article", { name: `Message ${n}`, exact: true });
}

export function answer(page, n) {
  return page.getByRole("region", { name: `Answer ${n}`, exact: true });
}

/** Waits until answer `n` says it is complete. */
export async function waitComplete(page, n, timeout = 20_000) {
  await answer(page, n).getByLabel("Answer complete").waitFor({ timeout });
}

/** Polls a locator's text until `done()`; returns every distinct text seen, in order. */
export async function watchText(locator, done, { every = 40, timeout = 20_000 } = {}) {
  const seen = [];
  const start = Date.now();
  for (;;) {
    const text = (await locator.textContent({ timeout: 1000 }).catch(() => null)) ?? "";
    if (seen[seen.length - 1] !== text) seen.push(text);
    if (await done()) {
      const last = (await locator.textContent()) ?? "";
      if (seen[seen.length - 1] !== last) seen.push(last);
      return seen;
    }
    if (Date.now() - start > timeout) throw new Error(`timed out; texts seen: ${JSON.stringify(seen.slice(-3))}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** No sideways scrolling on the page. */
export async function fitsWidth(page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);
}

export function assertNoPageErrors(page) {
  assert.deepEqual(page.errors, [], `errors in the page:\n${page.errors.join("\n")}`);
}
