// The worker the browser tests talk to. Today: the scripted worker. The
// tests use only what this module exports (pairing code, id, models, the
// prompt-driven behaviours, going offline and back), so switching to the
// real worker (tether-worker against a fake opencode) means implementing
// `startWorker` for it here.
//
// Behaviours the tests ask for, by what they type:
//   anything            a full answer: reasoning, markdown with a code block,
//                       a tool call with output, a file edit, usage
//   "...permission..."  a bash tool call that waits for a permission answer
//   "...slow..."        a long answer streamed over a few seconds
//   "...question..."    a question with options

import { SCRIPTED_DEFAULT, SCRIPTED_MODELS, startScriptedWorker } from "./scripted-worker.mjs";

export const MODELS = SCRIPTED_MODELS;
export const DEFAULT_MODEL = SCRIPTED_DEFAULT;

/** The expected text of the full answer once rendered (for exact-once checks). */
export const FULL_ANSWER_MARKERS = ["hangs", "fn shutdown", "src/server.rs"];
/** Lines of the slow answer. */
export const SLOW_LINES = 40;

/**
 * Starts a worker that has asked to pair with the host at `baseUrl`.
 * Returns { code, workerId, machine, workdir, models, goOffline(), goOnline(), stop() }.
 */
export async function startWorker(baseUrl, opts = {}) {
  const w = await startScriptedWorker({ baseUrl, ...opts });
  return {
    code: w.code,
    workerId: w.workerId,
    machine: w.machine,
    workdir: w.workdir,
    models: w.models,
    raw: w,
    goOffline: () => w.disconnect(),
    goOnline: () => w.connect(),
    stop: () => w.stop(),
  };
}
