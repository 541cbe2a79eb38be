import { describe, expect, it } from "vitest";

import { contextMeter, contextTokens } from "../../src/lib/context";
import { NO_FILTER, filterSessions, isFiltered } from "../../src/lib/sessions";
import type { SessionView, Usage, WorkerView } from "../../src/protocol";

function session(id: string, title: string, worker: string, status: SessionView["status"]): SessionView {
  return {
    session_id: id,
    worker_id: worker,
    model: { provider_id: "fake", model_id: "fake-1" },
    title,
    status,
    message_count: 1,
    created_at: 1,
    updated_at: 1,
  } as SessionView;
}

function worker(id: string, name: string, machine: string): WorkerView {
  return {
    worker_id: id,
    machine,
    name,
    workdir: `/home/u/${name}`,
    status: "approved",
    online: true,
    last_seen: 1,
    models: [{ provider_id: "fake", model_id: "fake-1", name: "Fake One", context_limit: 1000 }],
    default_model: null,
    created_at: 1,
  } as WorkerView;
}

const workers = new Map([
  ["w1", worker("w1", "api", "laptop")],
  ["w2", worker("w2", "web", "desktop")],
]);
const list = [
  session("s1", "Fix the login bug", "w1", "ready"),
  session("s2", "Refactor routes", "w2", "busy"),
  session("s3", "Login page copy", "w2", "ended"),
  session("s4", "", "w1", "failed"),
];
const ids = (l: SessionView[]) => l.map((s) => s.session_id);

describe("session filter", () => {
  it("keeps everything without a filter", () => {
    expect(ids(filterSessions(list, NO_FILTER, workers))).toEqual(["s1", "s2", "s3", "s4"]);
    expect(isFiltered(NO_FILTER)).toBe(false);
  });

  it("matches every word, in any case, across title, worker, machine and model", () => {
    expect(ids(filterSessions(list, { ...NO_FILTER, query: "LOGIN" }, workers))).toEqual(["s1", "s3"]);
    expect(ids(filterSessions(list, { ...NO_FILTER, query: "login desktop" }, workers))).toEqual(["s3"]);
    expect(ids(filterSessions(list, { ...NO_FILTER, query: "untitled" }, workers))).toEqual(["s4"]);
    expect(ids(filterSessions(list, { ...NO_FILTER, query: "fake one" }, workers))).toHaveLength(4);
    expect(ids(filterSessions(list, { ...NO_FILTER, query: "nothing-like-this" }, workers))).toEqual([]);
  });

  it("filters by status and worker", () => {
    expect(ids(filterSessions(list, { ...NO_FILTER, status: "open" }, workers))).toEqual(["s1", "s2"]);
    expect(ids(filterSessions(list, { ...NO_FILTER, status: "closed" }, workers))).toEqual(["s3", "s4"]);
    expect(ids(filterSessions(list, { ...NO_FILTER, workerId: "w2", status: "open" }, workers))).toEqual(["s2"]);
    expect(isFiltered({ ...NO_FILTER, workerId: "w2" })).toBe(true);
  });
});

describe("context meter", () => {
  const step: Usage = { input: 500, output: 100, reasoning: 50, cache_read: 150, cache_write: 0, cost: 0 };

  it("counts what the model read and wrote at the latest step", () => {
    expect(contextTokens(step)).toBe(800);
    expect(contextMeter(step, 1000)).toEqual({ used: 800, limit: 1000, share: 0.8, level: "warn" });
    expect(contextMeter(step, 10_000)?.level).toBe("ok");
    expect(contextMeter(step, 820)?.level).toBe("full");
  });

  it("shows nothing without a step or a known limit", () => {
    expect(contextMeter(undefined, 1000)).toBeNull();
    expect(contextMeter(step, null)).toBeNull();
    expect(contextMeter(step, 0)).toBeNull();
  });
});
