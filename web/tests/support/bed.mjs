// What every browser test file sets up: one `tether serve` and one Chromium,
// started before its tests and stopped after them, together with every
// worker the tests start through the bed.

import { after, before } from "node:test";

import { launch } from "./browser.mjs";
import { startServer } from "./server.mjs";
import { startWorker } from "./worker.mjs";

/**
 * Registers the file's `before` and `after` hooks; returns the bed, whose
 * `server` and `browser` are set once `before` has run.
 */
export function testBed(serverOptions = {}) {
  const workers = [];
  const bed = {
    server: undefined,
    browser: undefined,
    /** `startWorker` against this bed's server; stopped after the tests. */
    async startWorker(options) {
      const w = await startWorker(bed.server.url, options);
      workers.push(w);
      return w;
    },
  };
  before(async () => {
    [bed.server, bed.browser] = await Promise.all([startServer(serverOptions), launch()]);
  });
  after(async () => {
    for (const w of workers) await w.stop().catch(() => {});
    await bed.browser?.close();
    await bed.server?.stop();
  });
  return bed;
}
