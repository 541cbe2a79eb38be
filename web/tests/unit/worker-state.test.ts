// @vitest-environment jsdom
//
// A worker as its owner reads it: presence first, then what its opencode
// does (installing, starting, down with why, ready with its models), and
// whether a session can start on it, and if not, why.

import { describe, expect, it } from "vitest";

import type { AgentState, WorkerView } from "../../src/protocol";
import { workerState } from "../../src/ui/common";

const NOW = 1_764_000_000_000;
const MODEL = { provider_id: "fake", model_id: "fake-model", name: "Fake Model" };

function worker(over: Partial<WorkerView> = {}): WorkerView {
  return {
    worker_id: "wkr_1",
    machine: "laptop",
    name: "app",
    workdir: "/src/app",
    status: "approved",
    online: true,
    last_seen: NOW - 1000,
    models: [MODEL],
    default_model: null,
    created_at: NOW - 60_000,
    ...over,
  };
}

function agent(state: AgentState, reason?: string): Pick<WorkerView, "agent"> {
  return { agent: { state, reason, at: NOW } };
}

describe("workerState", () => {
  it("says what opencode does while it is not ready, and offers no session", () => {
    expect(workerState(worker({ models: [], ...agent("installing") }), NOW)).toMatchObject({
      label: "Installing opencode…",
      tone: "warn",
      cannotStart: "opencode is being installed on this worker",
    });
    expect(workerState(worker({ models: [], ...agent("starting") }), NOW)).toMatchObject({
      label: "Starting opencode…",
      cannotStart: "opencode is starting on this worker",
    });
    const down = workerState(worker(agent("down", "killed by signal 9; restarting it")), NOW);
    expect(down).toMatchObject({
      label: "opencode is down",
      tone: "failed",
      detail: "opencode is down: killed by signal 9; restarting it",
      cannotStart: "opencode is down: killed by signal 9; restarting it",
    });
  });

  it("counts the models of a ready worker, and offers a session only with one", () => {
    expect(workerState(worker(agent("ready")), NOW)).toEqual({ label: "Online · 1 model", tone: "online", cannotStart: null });
    const three = [MODEL, { ...MODEL, model_id: "b" }, { ...MODEL, model_id: "c" }];
    expect(workerState(worker({ models: three, ...agent("ready") }), NOW).label).toBe("Online · 3 models");
    const none = workerState(worker({ models: [], ...agent("ready") }), NOW);
    expect(none.label).toBe("Online · no models");
    expect(none.cannotStart).toMatch(/^This worker offers no model/);
    // A worker that says nothing of its agent is judged by its models.
    expect(workerState(worker(), NOW).cannotStart).toBeNull();
    expect(workerState(worker({ models: [] }), NOW).cannotStart).toMatch(/no model/);
  });

  it("puts presence and pairing before the agent's state", () => {
    const offline = workerState(worker({ online: false, ...agent("ready") }), NOW);
    expect(offline.label).toMatch(/^Offline · seen /);
    expect(offline.cannotStart).toBe("The worker is offline");
    expect(workerState(worker({ status: "pending", ...agent("ready") }), NOW).label).toBe("Waiting for approval");
    expect(workerState(worker({ status: "revoked" }), NOW).cannotStart).toBe("The worker was revoked");
  });
});
