// Pieces every screen uses: the top bar, status pills, a connection banner.

import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

import type { SessionStatus, WorkerView } from "../protocol";
import { href } from "../app/route";
import { relativeTime } from "../lib/format";
import { client, conn, drawerOpen, now } from "../app/store";
import { IconLink, IconMenu, IconRefresh } from "./icons";

export function TopBar({
  title,
  subtitle,
  actions,
  titleId,
}: {
  title: ComponentChildren;
  subtitle?: ComponentChildren;
  actions?: ComponentChildren;
  titleId?: string;
}) {
  return (
    <header class="topbar">
      <button
        type="button"
        class="icon-btn menu-btn"
        aria-label="Open menu"
        aria-expanded={drawerOpen.value}
        onClick={() => (drawerOpen.value = true)}
      >
        <IconMenu size={20} />
      </button>
      <div class="topbar-titles">
        <h1 class="topbar-title" id={titleId}>
          {title}
        </h1>
        {subtitle ? <div class="topbar-sub">{subtitle}</div> : null}
      </div>
      {actions ? <div class="topbar-actions">{actions}</div> : null}
    </header>
  );
}

const SESSION_LABEL: Record<SessionStatus, string> = {
  starting: "Starting",
  ready: "Ready",
  busy: "Working",
  ended: "Ended",
  failed: "Failed",
};

export function SessionStatusPill({ status }: { status: SessionStatus }) {
  return (
    <span class={`pill pill-${status}`} data-status={status}>
      <span class="dot" aria-hidden="true" />
      {SESSION_LABEL[status]}
    </span>
  );
}

export type WorkerState = {
  /** Short, for a pill: "Online · 3 models", "Starting opencode…", "Offline · seen 5 min ago". */
  label: string;
  tone: "online" | "offline" | "warn" | "failed";
  /** A sentence beside the pill, when the pill cannot say it all ("opencode is down: …"). */
  detail?: string;
  /** Why no session can start on it now; `null` when one can. */
  cannotStart: string | null;
};

function countModels(n: number): string {
  return `${n} ${n === 1 ? "model" : "models"}`;
}

/**
 * A worker as its owner should read it: its pairing, its presence, then what
 * its opencode is doing (installing, starting, down with why, ready with its
 * models). A session can start only on an online worker whose opencode is
 * ready and offers a model.
 */
export function workerState(w: WorkerView, at: number): WorkerState {
  if (w.status === "pending") return { label: "Waiting for approval", tone: "warn", cannotStart: "The worker is waiting for approval" };
  if (w.status === "revoked") return { label: "Revoked", tone: "offline", cannotStart: "The worker was revoked" };
  if (w.status === "rejected") return { label: "Rejected", tone: "offline", cannotStart: "The worker was rejected" };
  if (!w.online) {
    return { label: `Offline · seen ${relativeTime(w.last_seen, at)}`, tone: "offline", cannotStart: "The worker is offline" };
  }
  switch (w.agent?.state) {
    case "installing":
      return { label: "Installing opencode…", tone: "warn", cannotStart: "opencode is being installed on this worker" };
    case "starting":
      return { label: "Starting opencode…", tone: "warn", cannotStart: "opencode is starting on this worker" };
    case "down": {
      const detail = w.agent.reason ? `opencode is down: ${w.agent.reason}` : "opencode is down";
      return { label: "opencode is down", tone: "failed", detail, cannotStart: detail };
    }
    default:
      // Ready, or a worker too old to say: its models tell.
      if (w.models.length === 0) {
        return {
          label: "Online · no models",
          tone: "warn",
          cannotStart: "This worker offers no model: its opencode has no provider configured",
        };
      }
      return { label: `Online · ${countModels(w.models.length)}`, tone: "online", cannotStart: null };
  }
}

export function PresencePill({ w }: { w: WorkerView }) {
  const p = workerState(w, now.value);
  return (
    <span class={`pill pill-${p.tone}`} data-presence={p.tone}>
      <span class="dot" aria-hidden="true" />
      {p.label}
    </span>
  );
}

/** The sentence a worker's pill cannot hold (why its opencode is down). */
export function WorkerDetail({ w }: { w: WorkerView }) {
  const detail = workerState(w, now.value).detail;
  return detail ? (
    <p class="worker-detail" role="status">
      {detail}
    </p>
  ) : null;
}

/** Says when the websocket is down and when it tries again. */
export function ConnectionBanner() {
  const s = conn.value;
  const [, tick] = useState(0);
  useEffect(() => {
    if (s.status !== "waiting") return;
    const t = setInterval(() => tick((n) => n + 1), 500);
    return () => clearInterval(t);
  }, [s.status]);
  if (s.status === "open" || s.status === "idle") return null;
  if (s.status === "connecting" && !s.everOpened && s.attempts === 0) {
    return (
      <div class="conn-banner conn-connecting" role="status">
        <span class="spinner" aria-hidden="true" /> Connecting…
      </div>
    );
  }
  const secs = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000)) : 0;
  return (
    <div class="conn-banner conn-lost" role="status" aria-label="Connection status">
      <span class="spinner" aria-hidden="true" />
      <span>
        {s.everOpened ? "Connection lost." : "Cannot connect to the host."}{" "}
        {s.status === "connecting" ? "Reconnecting…" : `Reconnecting in ${secs} s…`}
      </span>
      {s.status === "waiting" ? (
        <button type="button" class="btn btn-small btn-ghost" onClick={() => client.retryNow()}>
          <IconRefresh size={14} /> Retry now
        </button>
      ) : null}
    </div>
  );
}

export function EmptyState({
  icon,
  title,
  children,
}: {
  icon?: ComponentChildren;
  title: string;
  children?: ComponentChildren;
}) {
  return (
    <div class="empty">
      {icon ? <div class="empty-icon">{icon}</div> : null}
      <h2 class="empty-title">{title}</h2>
      {children ? <div class="empty-body">{children}</div> : null}
    </div>
  );
}

export function modelLabel(w: WorkerView | undefined, providerId: string, modelId: string): string {
  const m = w?.models.find((x) => x.provider_id === providerId && x.model_id === modelId);
  return m?.name || modelId;
}

/** Workers waiting for approval, each with its code and a link to review it. */
export function PendingList({ workers, hint }: { workers: WorkerView[]; hint?: string }) {
  return (
    <section class="card pending" aria-label="Pending pairings">
      <header class="card-head">
        <h2>Waiting for approval</h2>
        {hint ? <span class="muted small">{hint}</span> : null}
      </header>
      <ul class="pending-list">
        {workers.map((w) => (
          <li key={w.worker_id} class="pending-row">
            <div class="pending-main">
              <div>
                <strong>{w.name}</strong> <span class="muted">on {w.machine}</span>
              </div>
              <div class="mono small muted">{w.workdir}</div>
            </div>
            {w.pairing_code ? <code class="code-chip">{w.pairing_code}</code> : null}
            <a
              class="btn btn-small btn-primary"
              href={href({ name: "pair", code: w.pairing_code ?? "" })}
              aria-label={`Review ${w.name} on ${w.machine}`}
            >
              <IconLink size={14} /> Review
            </a>
          </li>
        ))}
      </ul>
    </section>
  );
}
