// Pairing a headless machine: on the machines screen (and the pairing
// screen) a user mints a one-time token, sees the exact command to run (with
// a copy button, at phone width too), and a real `tether worker` started
// with that token is hers at once and says who approved it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { DESKTOP, PHONE, newPage, screenshotAll } from "../support/browser.mjs";
import { WAIT, assertNoPageErrors, fitsWidth, signIn } from "./flows.mjs";

const bed = testBed();

test("a token minted on the machines screen pairs a headless worker to you", async () => {
  const secret = await bed.server.addUser("ada");
  const { context, page } = await newPage(bed.browser);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: bed.server.url });
  // The pairing screen offers it too.
  await signIn(page, bed.server.url, secret, "/#/pair");
  await page.getByRole("region", { name: "Pair a headless machine" }).waitFor({ timeout: WAIT });
  await page.getByRole("link", { name: "Machines", exact: true }).click();

  const card = page.getByRole("region", { name: "Pair a headless machine" });
  await card.waitFor({ timeout: WAIT });
  await card.getByRole("button", { name: "Pair a headless machine" }).click();
  const code = card.locator(".headless-command code");
  await code.waitFor({ timeout: WAIT });
  const command = (await code.textContent()).trim();
  const origin = bed.server.url.replace(/\/$/, "");
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
  await fitsWidth(page);

  // The worker, started with the token, is ada's at once.
  const token = command.split(" --token ")[1];
  const worker = await bed.startWorker({ machine: "buildbox", workdir: "/srv/app", token });
  assert.equal(worker.approvedBy, "ada");
  assert.equal(worker.code, undefined, "no code to type");
  await page.setViewportSize(DESKTOP);
  const row = page.getByRole("listitem", { name: "Worker app" });
  await row.getByText(/^(Starting opencode…|Online · 1 model)$/).waitFor({ timeout: WAIT });
  await page.getByRole("region", { name: "Machine buildbox" }).waitFor();

  // Used once: a second machine with the same token is refused.
  await assert.rejects(
    bed.startWorker({ machine: "other", workdir: "/srv/other", token }),
    /unknown, used or expired/,
  );

  assertNoPageErrors(page);
  await context.close();
});
