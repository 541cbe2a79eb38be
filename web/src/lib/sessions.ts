// Finding a session in a long list: by words of its title, worker or model,
// by status, and by worker.

import type { SessionStatus, SessionView, WorkerView } from "../protocol";

export type StatusFilter = "all" | "open" | "closed";

export interface SessionFilter {
  /** Words that must all appear in the title, the worker's name or machine, or the model. */
  query: string;
  status: StatusFilter;
  /** Only this worker's sessions; empty for all. */
  workerId: string;
}

export const NO_FILTER: SessionFilter = { query: "", status: "all", workerId: "" };

const OPEN: ReadonlySet<SessionStatus> = new Set(["starting", "ready", "busy"]);

export function isFiltered(f: SessionFilter): boolean {
  return f.query.trim() !== "" || f.status !== "all" || f.workerId !== "";
}

/** The sessions the filter keeps, in the order given. */
export function filterSessions(list: SessionView[], f: SessionFilter, workers: Map<string, WorkerView>): SessionView[] {
  const words = f.query.toLowerCase().split(/\s+/).filter(Boolean);
  return list.filter((s) => {
    if (f.workerId && s.worker_id !== f.workerId) return false;
    if (f.status === "open" && !OPEN.has(s.status)) return false;
    if (f.status === "closed" && OPEN.has(s.status)) return false;
    if (words.length === 0) return true;
    const w = workers.get(s.worker_id);
    const model = w?.models.find((m) => m.provider_id === s.model.provider_id && m.model_id === s.model.model_id);
    const haystack = [s.title || "Untitled session", w?.name, w?.machine, s.model.model_id, model?.name]
      .filter(Boolean)
      .join("\n")
      .toLowerCase();
    return words.every((word) => haystack.includes(word));
  });
}
