// Signing in and out: the secret is checked, kept for the tab only
// (sessionStorage) unless the person asks to remember the device
// (localStorage), cleared from both on sign-out, and never goes into a URL.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { DESKTOP, PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { WAIT, assertNoPageErrors, signIn } from "./flows.mjs";

/** Where the page keeps the secret: `[sessionStorage, localStorage]`. */
function stored(page) {
  return page.evaluate(() => [sessionStorage.getItem("tether.secret"), localStorage.getItem("tether.secret")]);
}

const bed = testBed();

test("sign in with the secret, refuse a wrong one, sign out", async () => {
  const secret = await bed.server.addUser("ada", { admin: true });
  const { context, page } = await newPage(bed.browser);
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));

  await page.goto(bed.server.url);
  await page.getByRole("heading", { name: "Tether" }).waitFor({ timeout: WAIT });
  await screenshotAll(page, "sign-in");

  // "Remember this device" is unticked by default, explained, and fits a phone.
  const remember = page.getByRole("checkbox", { name: "Remember this device" });
  assert.equal(await remember.isChecked(), false);
  assert.equal(
    await page.locator("#remember-hint").textContent(),
    "Keep me signed in on this device. Leave unticked on a shared computer.",
  );
  await page.setViewportSize(PHONE);
  for (const el of [remember, page.getByText("Remember this device"), page.locator("#remember-hint")]) {
    const box = await el.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${el} overflows a phone's width`);
  }
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth), PHONE.width);
  await page.setViewportSize(DESKTOP);

  await page.getByLabel("Secret").fill("tsk_not-the-right-secret-at-all-000000000000");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not accepted" }).waitFor({ timeout: WAIT });

  await signIn(page, bed.server.url, secret);
  await page.getByRole("heading", { name: "Machines", exact: true }).waitFor();
  await page.getByText("No machines yet").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Sidebar" }).getByText("ada").count(), 1);
  // Unticked: kept for this tab only.
  assert.deepEqual(await stored(page), [secret, null]);

  // A reload signs in again from the stored secret.
  await page.reload();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  assert.deepEqual(await stored(page), [secret, null]);

  // Another tab does not have it.
  const other = await context.newPage();
  await other.goto(bed.server.url);
  await other.getByLabel("Secret").waitFor({ timeout: WAIT });
  await other.close();

  // The secret went in a header only; the websocket URL carries a one-use ticket.
  assert.ok(urls.every((u) => !u.includes(secret)), "the secret appeared in a URL");
  assert.ok(urls.some((u) => u.includes("/ws?v=1&ticket=")), "no websocket with a ticket");

  // The service worker (phone browsers show notifications only through
  // one) is served by the host and active, caching nothing.
  const sw = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return { script: registration.active?.scriptURL, scope: registration.scope };
  });
  assert.equal(sw.script, `${bed.server.url}/sw.js`);
  assert.equal(sw.scope, `${bed.server.url}/`);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Secret").waitFor();
  assert.deepEqual(await stored(page), [null, null]);
  assertNoPageErrors(page);
  await context.close();
});

test("remember this device keeps the secret in localStorage; sign out clears both", async () => {
  const secret = await bed.server.addUser("grace");
  const { context, page } = await newPage(bed.browser);

  await page.goto(bed.server.url);
  await page.getByLabel("Secret").fill(secret);
  await page.getByRole("checkbox", { name: "Remember this device" }).check();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  assert.deepEqual(await stored(page), [null, secret]);

  // A new tab of the same browser is signed in too.
  const other = await context.newPage();
  await other.goto(bed.server.url);
  await other.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  await other.close();

  // Signing out forgets it everywhere, also what this tab kept.
  await page.evaluate((s) => sessionStorage.setItem("tether.secret", s), secret);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Secret").waitFor();
  assert.deepEqual(await stored(page), [null, null]);
  await page.reload();
  await page.getByLabel("Secret").waitFor({ timeout: WAIT });

  // Signing in unticked makes the device forget a remembered secret.
  await page.evaluate((s) => localStorage.setItem("tether.secret", s), secret);
  await page.getByLabel("Secret").fill(secret);
  assert.equal(await page.getByRole("checkbox", { name: "Remember this device" }).isChecked(), false);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  assert.deepEqual(await stored(page), [secret, null]);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Secret").waitFor();
  assert.deepEqual(await stored(page), [null, null]);
  assertNoPageErrors(page);
  await context.close();
});

test("a secret an earlier version kept in localStorage still signs in", async () => {
  const secret = await bed.server.addUser("linus");
  const { context, page } = await newPage(bed.browser);
  await page.goto(bed.server.url);
  await page.getByLabel("Secret").waitFor({ timeout: WAIT });
  await page.evaluate((s) => localStorage.setItem("tether.secret", s), secret);
  await page.reload();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await page.getByRole("navigation", { name: "Sidebar" }).getByText("linus").count(), 1);
  assert.deepEqual(await stored(page), [null, secret]);
  assertNoPageErrors(page);
  await context.close();
});
