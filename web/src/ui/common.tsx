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

/** "Online", or "Offline · seen 5 min ago", or the pairing state. */
export function workerPresence(w: WorkerView, at: number): { label: string; tone: "online" | "offline" | "warn" } {
  if (w.status === "pending") return { label: "Waiting for approval", tone: "warn" };
  if (w.status === "revoked") return { label: "Revoked", tone: "offline" };
  if (w.status === "rejected") return { label: "Rejected", tone: "offline" };
  if (w.online) return { label: "Online", tone: "online" };
  return { label: `Offline · seen ${relativeTime(w.last_seen, at)}`, tone: "offline" };
}

export function PresencePill({ w }: { w: WorkerView }) {
  const p = workerPresence(w, now.value);
  return (
    <span class={`pill pill-${p.tone}`} data-presence={p.tone}>
      <span class="dot" aria-hidden="true" />
      {p.label}
    </span>
  );
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
