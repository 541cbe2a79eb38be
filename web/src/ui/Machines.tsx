import type { WorkerView } from "../protocol";
import { href } from "../app/route";
import {
  conn,
  machines,
  machinesLoaded,
  newSessionDialog,
  now,
  pendingPairings,
  revokeWorker,
  sessions,
  usePendingPoll,
} from "../app/store";
import { relativeTime } from "../lib/format";
import { EmptyState, PendingList, PresencePill, TopBar, WorkerDetail, workerState } from "./common";
import { HeadlessPairing } from "./Pair";
import { IconBan, IconChat, IconLaptop, IconLink, IconPlus } from "./icons";

export function MachinesPage() {
  const list = machines.value;
  const pending = pendingPairings.value;
  usePendingPoll(conn.value.status === "open");

  return (
    <div class="screen">
      <TopBar
        title="Machines"
        subtitle="Your machines and the workers on them"
        actions={
          <a class="btn btn-secondary" href="#/pair">
            <IconLink size={16} /> <span class="hide-narrow">Pair a worker</span>
            <span class="show-narrow">Pair</span>
          </a>
        }
      />
      <div class="page">
        {pending && pending.length > 0 ? <PendingList workers={pending} hint="Workers that asked to pair and nobody has approved yet." /> : null}

        {!machinesLoaded.value ? (
          <div class="skeleton-list" aria-label="Loading machines" role="status">
            <div class="skeleton" />
            <div class="skeleton" />
          </div>
        ) : list.length === 0 ? (
          <EmptyState icon={<IconLaptop size={28} />} title="No machines yet">
            <p>
              Start a worker on one of your machines. It prints a pairing code and a link: open the link, or enter the
              code here.
            </p>
            <a class="btn btn-primary" href="#/pair">
              <IconLink size={16} /> Pair a worker
            </a>
          </EmptyState>
        ) : (
          <div class="machine-grid">
            {list.map((m) => (
              <section class="card machine" key={m.name} aria-label={`Machine ${m.name}`}>
                <header class="machine-head">
                  <span class={`machine-icon ${m.online ? "is-online" : ""}`}>
                    <IconLaptop size={18} />
                  </span>
                  <h2 class="machine-name">{m.name}</h2>
                  <span class={`pill ${m.online ? "pill-online" : "pill-offline"}`}>
                    <span class="dot" aria-hidden="true" />
                    {m.online ? "Online" : "Offline"}
                  </span>
                </header>
                <ul class="worker-list">
                  {m.workers.map((w) => (
                    <WorkerRow key={w.worker_id} w={w} />
                  ))}
                </ul>
              </section>
            ))}
          </div>
        )}
        <HeadlessPairing open={conn.value.status === "open"} />
      </div>
    </div>
  );
}

function WorkerRow({ w }: { w: WorkerView }) {
  const count = sessions.value.filter((s) => s.worker_id === w.worker_id).length;
  const usable = w.status === "approved";
  const blocked = workerState(w, now.value).cannotStart;
  return (
    <li class={`worker-row ${usable ? "" : "is-inactive"}`} aria-label={`Worker ${w.name}`}>
      <div class="worker-main">
        <div class="worker-title">
          <a href={href({ name: "worker", workerId: w.worker_id })} class="worker-name">
            {w.name}
          </a>
          <PresencePill w={w} />
        </div>
        <div class="worker-dir mono" title={w.workdir}>
          {w.workdir}
        </div>
        <WorkerDetail w={w} />
        <div class="worker-meta">
          {count ? `${count} ${count === 1 ? "session" : "sessions"} · ` : ""}
          {`paired ${relativeTime(w.created_at, now.value)}`}
        </div>
      </div>
      {usable ? (
        <div class="worker-actions">
          <button
            type="button"
            class="btn btn-small btn-secondary"
            disabled={blocked !== null}
            aria-label={`New session on ${w.name}`}
            title={blocked ?? "Start a session"}
            onClick={() => (newSessionDialog.value = { workerId: w.worker_id })}
          >
            <IconPlus size={14} /> New session
          </button>
          <a
            class="btn btn-small btn-ghost"
            href={href({ name: "worker", workerId: w.worker_id })}
            aria-label={`Sessions of ${w.name}`}
          >
            <IconChat size={14} /> Sessions
          </a>
          <button
            type="button"
            class="btn btn-small btn-ghost btn-danger-text"
            aria-label={`Revoke ${w.name}`}
            title="Revoke"
            onClick={() => void revokeWorker(w)}
          >
            <IconBan size={14} />
          </button>
        </div>
      ) : null}
    </li>
  );
}
