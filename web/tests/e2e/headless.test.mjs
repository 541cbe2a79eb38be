// Pairing a headless machine: on the machines screen (and the pairing
// screen) a user mints a one-time token, sees the exact command to run (with
// a copy button, at phone width too), and a real `tether worker` started
// with that token is hers at once and says who approved it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { DESKTOP, PHONE, launch, newPage, screenshotAll } from "../support/browser.mjs";
import { startServer } from "../support/server.mjs";
import { startWorker } from "../support/worker.mjs";
import { WAIT, assertNoPageErrors, signIn } from "./flows.mjs";

let server;
let browser;
const workers = [];

before(async () => {
  [server, browser] = await Promise.all([startServer(), launch()]);
});

after(async () => {
  for (const w of workers) await w.stop().catch(() => {});
  await browser?.close();
  await server?.stop();
});

test("a token minted on the machines screen pairs a headless worker to you", async () => {
  const secret = await server.addUser("ada");
  const { context, page } = await newPage(browser);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
  // The pairing screen offers it too.
  await signIn(page, server.url, secret, "/#/pair");
  await page.getByRole("region", { name: "Pair a headless machine" }).waitFor({ timeout: WAIT });
  await page.getByRole("link", { name: "Machines", exact: true }).click();

  const card = page.getByRole("region", { name: "Pair a headless machine" });
  await card.waitFor({ timeout: WAIT });
  await card.getByRole("button", { name: "Pair a headless machine" }).click();
  const code = card.locator(".headless-command code");
  await code.waitFor({ timeout: WAIT });
  const command = (await code.textContent()).trim();
  const origin = server.url.replace(/\/$/, "");
  const escaped = origin.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  assert.match(command, new RegExp(`^tether-worker --server ${escaped} --token tpt_[A-Za-z0-9_-]{43}$`));

  await card.getByRole("button", { name: "Copy the command" }).click();
  await card.getByText("Copied").waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command);
  await screenshotAll(page, "headless-pairing");

  // At phone width the whole command stays on screen: it wraps, nothing
  // scrolls sideways, and the copy button is within reach.
  await page.setViewportSize(PHONE);
  const box = await code.boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `the command fits: ${JSON.stringify(box)}`);
  const copy = await card.getByRole("button", { name: "Copy the command" }).boundingBox();
  assert.ok(copy && copy.x + copy.width <= PHONE.width, `the copy button fits: ${JSON.stringify(copy)}`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);

  // The worker, started with the token, is ada's at once.
  const token = command.split(" --token ")[1];
  const worker = await startWorker(server.url, { machine: "buildbox", workdir: "/srv/app", token });
  workers.push(worker);
  assert.equal(worker.approvedBy, "ada");
  assert.equal(worker.code, undefined, "no code to type");
  await page.setViewportSize(DESKTOP);
  const row = page.getByRole("listitem", { name: "Worker app" });
  await row.getByText(/^(Starting opencode…|Online · 1 model)$/).waitFor({ timeout: WAIT });
  await page.getByRole("region", { name: "Machine buildbox" }).waitFor();

  // Used once: a second machine with the same token is refused.
  await assert.rejects(
    startWorker(server.url, { machine: "other", workdir: "/srv/other", token }),
    /unknown, used or expired/,
  );

  assertNoPageErrors(page);
  await context.close();
});
