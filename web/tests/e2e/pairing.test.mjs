// Pairing real `tether worker` processes: an admin sees pending workers; a pairing link shows the machine
// and directory; approve and reject; live presence; revoke with confirmation.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { newPage, screenshotAll } from "../support/browser.mjs";
import { WAIT, assertNoPageErrors, signIn } from "./flows.mjs";

const bed = testBed();

test("approve by link, reject, see presence live, revoke", async () => {
  const secret = await bed.server.addUser("ada", { admin: true });
  const laptop = await bed.startWorker({ machine: "laptop", workdir: "/home/ada/src/app" });
  const other = await bed.startWorker({ machine: "desktop", workdir: "/srv/unknown" });

  const { context, page } = await newPage(bed.browser);
  await signIn(page, bed.server.url, secret);

  // An admin sees both pending pairings on the machines page.
  const pending = page.getByRole("region", { name: "Pending pairings" });
  await pending.waitFor({ timeout: WAIT });
  await pending.getByText(laptop.code).waitFor();
  await pending.getByText(other.code).waitFor();

  // The link a worker shows: machine and directory, then Approve.
  await page.goto(`${bed.server.url}/#/pair/${laptop.code}`);
  const card = page.getByRole("region", { name: "Worker to approve" });
  await card.waitFor({ timeout: WAIT });
  await card.getByText("laptop", { exact: true }).waitFor();
  await card.getByText(laptop.workdir).waitFor();
  await screenshotAll(page, "pairing");
  await card.getByLabel("Worker name").fill("app");
  await card.getByRole("button", { name: "Approve" }).click();
  await page.getByText("app on laptop is paired.").waitFor({ timeout: WAIT });

  // Typing a code works too; this one is rejected.
  await page.goto(`${bed.server.url}/#/pair`);
  await page.getByLabel("Pairing code").fill(other.code.toLowerCase().replace("-", " "));
  await page.getByRole("button", { name: "Look up" }).click();
  await page.getByRole("region", { name: "Worker to approve" }).getByText(other.workdir).waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Reject" }).click();
  await page.getByText("Rejected").waitFor({ timeout: WAIT });

  // An unknown code says so.
  await page.getByLabel("Pairing code").fill("ZZZZ-ZZZZ");
  await page.getByRole("button", { name: "Look up" }).click();
  await page.getByRole("alert").filter({ hasText: "No worker is waiting" }).waitFor({ timeout: WAIT });

  // Machines: the approved worker is online, starting its opencode or
  // already with the one model its opencode offers.
  await page.getByRole("link", { name: "Machines", exact: true }).click();
  const row = page.getByRole("listitem", { name: "Worker app" });
  await row.getByText(/^(Starting opencode…|Online · 1 model)$/).waitFor({ timeout: WAIT });
  await laptop.ready();
  await row.getByText("Online · 1 model", { exact: true }).waitFor({ timeout: WAIT });
  assert.equal(await page.getByRole("region", { name: "Pending pairings" }).count(), 0);
  await screenshotAll(page, "machines");

  // Presence is live: the worker process is killed and started again.
  await laptop.goOffline();
  await row.getByText(/Offline · seen/).waitFor({ timeout: WAIT });
  await laptop.goOnline();
  await row.getByText("Online · 1 model", { exact: true }).waitFor({ timeout: 60_000 });

  // Revoke asks first; cancelling keeps the worker.
  await page.getByRole("button", { name: "Revoke app" }).click();
  const confirm = page.getByRole("dialog", { name: "Revoke app?" });
  await confirm.waitFor();
  await confirm.getByRole("button", { name: "Cancel" }).click();
  await row.getByText("Online · 1 model", { exact: true }).waitFor();
  await page.getByRole("button", { name: "Revoke app" }).click();
  await page.getByRole("dialog", { name: "Revoke app?" }).getByRole("button", { name: "Revoke" }).click();
  await row.getByText("Revoked").waitFor({ timeout: WAIT });
  // Its connection was closed and its credential no longer works: started
  // again, the worker says so and exits.
  await assert.rejects(laptop.goOnline(), /revoked|HTTP 403|refused/);

  assertNoPageErrors(page);
  await context.close();
});
