import { signal, type Signal } from "@preact/signals";
import { useEffect } from "preact/hooks";

import type { SessionView } from "../protocol";
import { href } from "../app/route";
import { conn, loadSessions, machinesLoaded, newSessionDialog, now, revokeWorker, sessions, sessionsLoaded, workers } from "../app/store";
import { absoluteTime, relativeTime } from "../lib/format";
import { NO_FILTER, filterSessions, isFiltered, type SessionFilter, type StatusFilter } from "../lib/sessions";
import { EmptyState, PresencePill, SessionStatusPill, TopBar, WorkerDetail, modelLabel, workerState } from "./common";
import { IconBan, IconChat, IconChevron, IconPlus, IconSearch } from "./icons";

/** The filters of the two lists, kept while the app is open. */
const allFilter = signal<SessionFilter>(NO_FILTER);
const workerFilter = signal<SessionFilter>(NO_FILTER);

/** Search, status and (across workers) worker: narrows a session list. */
function FilterBar({ filter, byWorker }: { filter: Signal<SessionFilter>; byWorker: boolean }) {
  const f = filter.value;
  const set = (change: Partial<SessionFilter>) => (filter.value = { ...f, ...change });
  const ws = [...workers.value.values()].filter((w) => w.status === "approved");
  return (
    <div class="session-filter" role="search">
      <label class="session-search">
        <IconSearch size={16} />
        <input
          type="search"
          aria-label="Search sessions"
          placeholder="Search title, worker, model"
          value={f.query}
          maxLength={200}
          onInput={(e) => set({ query: (e.target as HTMLInputElement).value })}
        />
      </label>
      <select
        aria-label="Status"
        value={f.status}
        onChange={(e) => set({ status: (e.target as HTMLSelectElement).value as StatusFilter })}
      >
        <option value="all">All</option>
        <option value="open">Open</option>
        <option value="closed">Ended</option>
      </select>
      {byWorker && ws.length > 1 ? (
        <select aria-label="Worker" value={f.workerId} onChange={(e) => set({ workerId: (e.target as HTMLSelectElement).value })}>
          <option value="">All workers</option>
          {ws.map((w) => (
            <option key={w.worker_id} value={w.worker_id}>
              {w.name} · {w.machine}
            </option>
          ))}
        </select>
      ) : null}
    </div>
  );
}

/** A filtered list, or why it is empty. */
function FilteredRows({ list, filter, showWorker }: { list: SessionView[]; filter: Signal<SessionFilter>; showWorker: boolean }) {
  const shown = filterSessions(list, filter.value, workers.value);
  if (shown.length > 0) {
    return (
      <>
        {isFiltered(filter.value) ? (
          <p class="muted small filter-count" role="status">
            {shown.length} of {list.length} sessions
          </p>
        ) : null}
        <SessionRows list={shown} showWorker={showWorker} />
      </>
    );
  }
  return (
    <EmptyState icon={<IconSearch size={26} />} title="No sessions match">
      <button type="button" class="btn btn-secondary" onClick={() => (filter.value = NO_FILTER)}>
        Clear the filter
      </button>
    </EmptyState>
  );
}

function SessionRows({ list, showWorker }: { list: SessionView[]; showWorker: boolean }) {
  const ws = workers.value;
  return (
    <ul class="session-list" aria-label="Sessions">
      {list.map((s) => {
        const w = ws.get(s.worker_id);
        return (
          <li key={s.session_id}>
            <a class="session-row" href={href({ name: "session", sessionId: s.session_id })}>
              <span class="session-row-main">
                <span class="session-row-title">{s.title || "Untitled session"}</span>
                <span class="session-row-meta">
                  <span class="chip">{modelLabel(w, s.model.provider_id, s.model.model_id)}</span>
                  {showWorker && w ? <span class="muted">{w.name} · {w.machine}</span> : null}
                  <span class="muted">
                    {s.message_count} {s.message_count === 1 ? "message" : "messages"}
                  </span>
                </span>
              </span>
              <span class="session-row-side">
                <SessionStatusPill status={s.status} />
                <time class="muted small" dateTime={new Date(s.updated_at).toISOString()} title={absoluteTime(s.updated_at)}>
                  {relativeTime(s.updated_at, now.value)}
                </time>
              </span>
              <IconChevron size={16} class="row-chevron" />
            </a>
          </li>
        );
      })}
    </ul>
  );
}

export function WorkerPage({ workerId }: { workerId: string }) {
  const w = workers.value.get(workerId);
  const list = sessions.value.filter((s) => s.worker_id === workerId);
  const open = conn.value.status === "open";
  const blocked = w ? workerState(w, now.value).cannotStart : null;

  useEffect(() => {
    if (open) void loadSessions(workerId);
  }, [workerId, open]);
  useEffect(() => {
    workerFilter.value = NO_FILTER;
  }, [workerId]);

  if (!w && machinesLoaded.value) {
    return (
      <div class="screen">
        <TopBar title="Worker" />
        <div class="page">
          <EmptyState title="Worker not found">
            <p>It may have been revoked, or it belongs to someone else.</p>
            <a class="btn btn-secondary" href="#/">
              Back to machines
            </a>
          </EmptyState>
        </div>
      </div>
    );
  }

  return (
    <div class="screen">
      <TopBar
        title={w ? w.name : "Worker"}
        subtitle={w ? `${w.machine} · ${w.workdir}` : undefined}
        actions={
          w && w.status === "approved" ? (
            <button
              type="button"
              class="btn btn-primary"
              disabled={blocked !== null}
              title={blocked ?? undefined}
              onClick={() => (newSessionDialog.value = { workerId })}
            >
              <IconPlus size={16} /> <span class="hide-narrow">New session</span>
              <span class="show-narrow">New</span>
            </button>
          ) : null
        }
      />
      <div class="page">
        {w ? (
          <section class="card worker-card" aria-label="Worker details">
            <div class="worker-card-row">
              <PresencePill w={w} />
              {w.status === "approved" ? (
                <button
                  type="button"
                  class="btn btn-small btn-ghost btn-danger-text push-right"
                  onClick={() => void revokeWorker(w)}
                >
                  <IconBan size={14} /> Revoke
                </button>
              ) : null}
            </div>
            <WorkerDetail w={w} />
            {w.models.length ? (
              <div class="model-chips">
                {w.models.map((m) => (
                  <span class="chip" key={`${m.provider_id}/${m.model_id}`} title={`${m.provider_id}/${m.model_id}`}>
                    {m.name || m.model_id}
                    {w.default_model?.provider_id === m.provider_id && w.default_model?.model_id === m.model_id
                      ? " · default"
                      : ""}
                  </span>
                ))}
              </div>
            ) : null}
          </section>
        ) : null}

        <h2 class="section-heading">Sessions</h2>
        {list.length === 0 ? (
          <EmptyState icon={<IconChat size={26} />} title="No sessions yet">
            <p>Start one to chat with the agent in {w ? <code>{w.workdir}</code> : "this worker's directory"}.</p>
          </EmptyState>
        ) : (
          <>
            <FilterBar filter={workerFilter} byWorker={false} />
            <FilteredRows list={list} filter={workerFilter} showWorker={false} />
          </>
        )}
      </div>
    </div>
  );
}

export function SessionsPage() {
  const list = sessions.value;
  return (
    <div class="screen">
      <TopBar
        title="Sessions"
        subtitle="Every session, newest first"
        actions={
          <button type="button" class="btn btn-primary" onClick={() => (newSessionDialog.value = {})}>
            <IconPlus size={16} /> <span class="hide-narrow">New session</span>
            <span class="show-narrow">New</span>
          </button>
        }
      />
      <div class="page">
        {list.length === 0 ? (
          <EmptyState icon={<IconChat size={26} />} title={sessionsLoaded.value ? "No sessions yet" : "Loading…"} />
        ) : (
          <>
            <FilterBar filter={allFilter} byWorker={true} />
            <FilteredRows list={list} filter={allFilter} showWorker={true} />
          </>
        )}
      </div>
    </div>
  );
}
