// The websocket drops in the middle of an answer from the real worker and
// opencode (fake LLM): the UI says so,
// reconnects by itself with a new ticket, re-watches the session from its
// cursor, and shows the whole answer exactly once. Also: the heartbeat.

import assert from "node:assert/strict";
import { test } from "node:test";

import { testBed } from "../support/bed.mjs";
import { newPage } from "../support/browser.mjs";
import { FAKE_MODEL_LABEL, numberedText } from "../support/worker.mjs";
import { WAIT, answer, approveByLink, assertNoPageErrors, send, signIn, startSession, waitComplete } from "./flows.mjs";

let worker;

// A short heartbeat so the test sees several pings.
const bed = testBed({ extraArgs: ["--heartbeat-secs", "0.4"] });

test("an answer survives a dropped connection: no gap, no duplicate", async () => {
  const secret = await bed.server.addUser("ada");
  worker = await bed.startWorker();
  const { context, page } = await newPage(bed.browser);
  const pings = [];
  const watches = [];
  page.on("websocket", (ws) =>
    ws.on("framesent", (f) => {
      if (typeof f.payload !== "string") return;
      const frame = JSON.parse(f.payload);
      if (frame.action === "ping") pings.push(Date.now());
      if (frame.action === "session_watch") watches.push(frame);
    }),
  );
  let tickets = 0;
  page.on("request", (r) => {
    if (r.url().endsWith("/api/ticket")) tickets++;
  });
  await signIn(page, bed.server.url, secret);
  await approveByLink(page, bed.server.url, worker.code);
  await worker.ready();
  await startSession(page, { model: FAKE_MODEL_LABEL, title: "Slow story" });
  await page.locator(".topbar").getByText("Ready").waitFor({ timeout: 30_000 });

  // The client pings on the heartbeat the host asked for.
  await page.waitForTimeout(1300);
  assert.ok(pings.length >= 2, `expected pings every 0.4 s, saw ${pings.length}`);

  // 800 words, 10 ms apart: still streaming after the outage below.
  await send(page, "[tokens 800] [delay 10]");
  await answer(page, 1).getByText(/\bw40\b/).waitFor({ timeout: 30_000 });

  // Drop the socket, and keep the host unreachable for a moment while the
  // worker goes on answering.
  const ticketsBefore = tickets;
  await page.route("**/api/ticket", (route) => route.abort());
  await page.evaluate(() => window.__sockets[window.__sockets.length - 1].close());
  const banner = page.getByRole("status", { name: "Connection status" });
  await banner.getByText("Connection lost.").waitFor({ timeout: WAIT });
  await banner.getByText(/Reconnecting/).waitFor();
  await page.getByRole("img", { name: "Not connected" }).waitFor();
  await page.waitForTimeout(1500);
  await page.unroute("**/api/ticket");

  // Back by itself (backoff), with a fresh ticket.
  await page.getByRole("img", { name: "Connected", exact: true }).waitFor({ timeout: 20_000 });
  assert.equal(await banner.count(), 0);
  assert.equal(await answer(page, 1).getByLabel("Answer complete").count(), 0, "the answer was still streaming");
  await waitComplete(page, 1, 30_000);
  assert.ok(tickets >= ticketsBefore + 2, "a new ticket for each attempt");
  // The re-watch resumed from the cursor: this message, past the chunks it had.
  const rewatch = watches[watches.length - 1];
  assert.equal(rewatch.after?.message, 0);
  assert.ok(rewatch.after.seq >= 4, `resumed at seq ${rewatch.after?.seq}`);

  // Every word once, in order.
  const text = (await answer(page, 1).locator(".answer-text").first().textContent())?.trim();
  assert.equal(text, numberedText(800), "every word once, in order");
  assert.equal(await answer(page, 1).locator(".gap").count(), 0);

  assertNoPageErrors(page);
  await context.close();
});
