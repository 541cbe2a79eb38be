import type { ComponentChildren } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";

import type { WorkerView } from "../protocol";
import { confirmRequest, errorMessage, navigate, newSessionDialog, now, workers } from "../app/store";
import { startSession } from "../app/store";
import { workerState } from "./common";
import { IconX } from "./icons";

/** A native modal dialog (focus trap, Esc, backdrop) shown while `open`. */
function Modal({
  open,
  labelledBy,
  onClose,
  children,
  class: cls,
}: {
  open: boolean;
  labelledBy: string;
  onClose: () => void;
  children: ComponentChildren;
  class?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog
      ref={ref}
      class={cls ? `dialog ${cls}` : "dialog"}
      aria-labelledby={labelledBy}
      onCancel={(e) => {
        // Esc: the state closes the dialog (a native close would race a reopening).
        e.preventDefault();
        onClose();
      }}
      onClick={(e) => {
        // A click on the backdrop (the dialog element itself) closes it.
        if (e.target === ref.current) onClose();
      }}
    >
      {open ? children : null}
    </dialog>
  );
}

function modelKey(m: { provider_id: string; model_id: string }): string {
  return `${m.provider_id}/${m.model_id}`;
}

function defaultModelKey(w: WorkerView | undefined): string {
  if (!w) return "";
  if (w.default_model && w.models.some((m) => modelKey(m) === modelKey(w.default_model!))) {
    return modelKey(w.default_model);
  }
  return w.models[0] ? modelKey(w.models[0]) : "";
}

export function NewSessionDialog() {
  const req = newSessionDialog.value;
  return (
    <Modal open={!!req} labelledBy="new-session-title" onClose={() => (newSessionDialog.value = null)} class="dialog-form">
      {req ? <NewSessionForm initialWorker={req.workerId} /> : null}
    </Modal>
  );
}

function NewSessionForm({ initialWorker }: { initialWorker?: string }) {
  const all = [...workers.value.values()].filter((w) => w.status === "approved");
  const blockedBy = (w: WorkerView) => workerState(w, now.value).cannotStart;
  const firstReady = all.find((w) => blockedBy(w) === null);
  const [workerId, setWorkerId] = useState<string>(
    initialWorker && all.some((w) => w.worker_id === initialWorker)
      ? initialWorker
      : (firstReady ?? all.find((w) => w.online))?.worker_id ?? "",
  );
  const worker = all.find((w) => w.worker_id === workerId);
  // Why the chosen worker cannot take a session now (it may change while
  // the dialog is open: its opencode starts, it goes offline).
  const blocked = worker ? blockedBy(worker) : null;
  const [model, setModel] = useState<string>(defaultModelKey(worker));
  // The models arrive with a worker's opencode: until one is chosen, its default.
  const shownModel = model && worker?.models.some((m) => modelKey(m) === model) ? model : defaultModelKey(worker);
  const [title, setTitle] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  function chooseWorker(id: string) {
    setWorkerId(id);
    setModel(defaultModelKey(all.find((w) => w.worker_id === id)));
  }

  async function submit(e: Event) {
    e.preventDefault();
    if (!worker || blocked) return;
    const chosen = worker.models.find((m) => modelKey(m) === shownModel);
    const ref = chosen
      ? { provider_id: chosen.provider_id, model_id: chosen.model_id }
      : worker.default_model;
    if (!ref) {
      setError("This worker offers no model.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const s = await startSession(worker.worker_id, ref, title);
      newSessionDialog.value = null;
      navigate({ name: "session", sessionId: s.session_id });
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  }

  return (
    <form class="dialog-body" onSubmit={submit}>
      <header class="dialog-head">
        <h2 id="new-session-title">New session</h2>
        <button type="button" class="icon-btn" aria-label="Close" onClick={() => (newSessionDialog.value = null)}>
          <IconX size={18} />
        </button>
      </header>
      {all.length === 0 ? (
        <p class="muted">
          No worker is paired yet. <a href="#/pair" onClick={() => (newSessionDialog.value = null)}>Pair a worker</a>{" "}
          first.
        </p>
      ) : (
        <>
          <label class="field">
            <span class="field-label">Worker</span>
            <select value={workerId} onChange={(e) => chooseWorker((e.target as HTMLSelectElement).value)} required>
              {!workerId ? <option value="">Choose a worker</option> : null}
              {all.map((w) => (
                <option key={w.worker_id} value={w.worker_id} disabled={!w.online}>
                  {w.name} · {w.machine}
                  {w.online ? "" : " (offline)"}
                </option>
              ))}
            </select>
          </label>
          {worker ? <div class="muted small mono dialog-dir">{worker.workdir}</div> : null}
          <label class="field">
            <span class="field-label">Model</span>
            <select
              value={shownModel}
              onChange={(e) => setModel((e.target as HTMLSelectElement).value)}
              disabled={!worker || worker.models.length === 0}
            >
              {(worker?.models ?? []).map((m) => (
                <option key={modelKey(m)} value={modelKey(m)}>
                  {m.name || m.model_id} ({m.provider_id})
                </option>
              ))}
            </select>
          </label>
          <label class="field">
            <span class="field-label">
              Title <span class="muted">(optional)</span>
            </span>
            <input
              value={title}
              maxLength={200}
              placeholder="What is this session about?"
              onInput={(e) => setTitle((e.target as HTMLInputElement).value)}
            />
          </label>
          {!all.some((w) => w.online) ? (
            <p class="muted small">Every worker is offline. Start one, then try again.</p>
          ) : blocked ? (
            <p class="muted small" role="status" id="new-session-blocked">
              {blocked}.
            </p>
          ) : null}
          {error ? (
            <p class="form-error" role="alert">
              {error}
            </p>
          ) : null}
        </>
      )}
      <footer class="dialog-foot">
        <button type="button" class="btn btn-ghost" onClick={() => (newSessionDialog.value = null)}>
          Cancel
        </button>
        <button
          type="submit"
          class="btn btn-primary"
          disabled={busy || !worker || blocked !== null}
          aria-describedby={blocked ? "new-session-blocked" : undefined}
        >
          {busy ? <span class="spinner" aria-hidden="true" /> : null}
          Start session
        </button>
      </footer>
    </form>
  );
}

export function ConfirmDialog() {
  const req = confirmRequest.value;
  const done = (ok: boolean) => {
    if (!req) return;
    confirmRequest.value = null;
    req.resolve(ok);
  };
  return (
    <Modal open={!!req} labelledBy="confirm-title" onClose={() => done(false)} class="dialog-confirm">
      {req ? (
        <div class="dialog-body">
          <h2 id="confirm-title">{req.title}</h2>
          <p class="muted">{req.body}</p>
          <footer class="dialog-foot">
            <button type="button" class="btn btn-ghost" onClick={() => done(false)}>
              Cancel
            </button>
            <button
              type="button"
              class={req.danger ? "btn btn-danger" : "btn btn-primary"}
              onClick={() => done(true)}
              autoFocus
            >
              {req.confirmLabel}
            </button>
          </footer>
        </div>
      ) : null}
    </Modal>
  );
}
