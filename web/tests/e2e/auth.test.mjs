// Signing in and out: the secret is checked, kept in localStorage only, and
// never goes into a URL.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, newPage, screenshotAll } from "../support/browser.mjs";
import { startServer } from "../support/server.mjs";
import { WAIT, assertNoPageErrors, signIn } from "./flows.mjs";

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("sign in with the secret, refuse a wrong one, sign out", async () => {
  const secret = await server.addUser("ada", { admin: true });
  const { context, page } = await newPage(browser);
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));

  await page.goto(server.url);
  await page.getByRole("heading", { name: "Tether" }).waitFor({ timeout: WAIT });
  await screenshotAll(page, "sign-in");

  await page.getByLabel("Secret").fill("tsk_not-the-right-secret-at-all-000000000000");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "not accepted" }).waitFor({ timeout: WAIT });

  await signIn(page, server.url, secret);
  await page.getByRole("heading", { name: "Machines", exact: true }).waitFor();
  await page.getByText("No machines yet").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Sidebar" }).getByText("ada").count(), 1);
  assert.equal(await page.evaluate(() => localStorage.getItem("tether.secret")), secret);

  // A reload signs in again from the stored secret.
  await page.reload();
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: WAIT });

  // The secret went in a header only; the websocket URL carries a one-use ticket.
  assert.ok(urls.every((u) => !u.includes(secret)), "the secret appeared in a URL");
  assert.ok(urls.some((u) => u.includes("/ws?v=1&ticket=")), "no websocket with a ticket");

  // The service worker (phone browsers show notifications only through
  // one) is served by the host and active, caching nothing.
  const sw = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return { script: registration.active?.scriptURL, scope: registration.scope };
  });
  assert.equal(sw.script, `${server.url}/sw.js`);
  assert.equal(sw.scope, `${server.url}/`);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Secret").waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("tether.secret")), null);
  assertNoPageErrors(page);
  await context.close();
});
