import { useEffect, useState } from "preact/hooks";

import type { PairingTokenData, WorkerView } from "../protocol";
import {
  conn,
  createPairingToken,
  decidePairing,
  errorMessage,
  headlessCommand,
  lookupCode,
  navigate,
  newSessionDialog,
  now,
  pendingPairings,
  usePendingPoll,
} from "../app/store";
import { normalizeCode, relativeTime } from "../lib/format";
import { ApiError } from "../net/client";
import { PendingList, TopBar } from "./common";
import { IconCheck, IconCopy, IconKey, IconLaptop, IconPlus, IconX } from "./icons";

type Phase =
  | { kind: "idle" }
  | { kind: "looking" }
  | { kind: "found"; worker: WorkerView }
  | { kind: "deciding"; worker: WorkerView; approve: boolean }
  | { kind: "approved"; worker: WorkerView }
  | { kind: "rejected"; worker: WorkerView }
  | { kind: "error"; message: string };

function lookupError(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === "not_found") return "No worker is waiting with this code. Check it, or restart the worker for a new one.";
    if (e.code === "expired") return "This code has expired. Restart the worker for a new one.";
    if (e.code === "bad_request") return "A pairing code is 8 letters or digits, like KX7P-Q2MD.";
  }
  return errorMessage(e);
}

export function PairPage({ code: routeCode }: { code?: string }) {
  const [code, setCode] = useState(routeCode ? normalizeCode(routeCode) : "");
  const [name, setName] = useState("");
  const [phase, setPhase] = useState<Phase>({ kind: "idle" });
  const open = conn.value.status === "open";
  usePendingPoll(open);

  async function lookup(c: string) {
    if (!c.trim()) return;
    setPhase({ kind: "looking" });
    try {
      const worker = await lookupCode(c);
      setName(worker.name);
      setPhase({ kind: "found", worker });
    } catch (e) {
      setPhase({ kind: "error", message: lookupError(e) });
    }
  }

  // A pairing link: look the code up as soon as the connection is up.
  useEffect(() => {
    if (routeCode) setCode(normalizeCode(routeCode));
    if (routeCode && open) void lookup(routeCode);
  }, [routeCode, open]);

  async function decide(approve: boolean) {
    if (phase.kind !== "found") return;
    const worker = phase.worker;
    setPhase({ kind: "deciding", worker, approve });
    try {
      const updated = await decidePairing(code, approve, approve ? name : undefined);
      setPhase(approve ? { kind: "approved", worker: updated } : { kind: "rejected", worker: updated });
    } catch (e) {
      setPhase({ kind: "error", message: lookupError(e) });
    }
  }

  const pending = pendingPairings.value;

  return (
    <div class="screen">
      <TopBar title="Pair a worker" subtitle="Approve a worker so it can take your sessions" />
      <div class="page page-narrow">
        <section class="card">
          <form
            class="pair-form"
            onSubmit={(e) => {
              e.preventDefault();
              const c = normalizeCode(code);
              setCode(c);
              if (routeCode !== c) navigate({ name: "pair", code: c });
              else void lookup(c);
            }}
          >
            <label class="field grow">
              <span class="field-label">Pairing code</span>
              <input
                class="code-input"
                value={code}
                placeholder="KX7P-Q2MD"
                autocomplete="off"
                autocapitalize="characters"
                spellcheck={false}
                maxLength={16}
                onInput={(e) => setCode((e.target as HTMLInputElement).value)}
              />
            </label>
            <button type="submit" class="btn btn-primary" disabled={!code.trim() || !open || phase.kind === "looking"}>
              {phase.kind === "looking" ? <span class="spinner" aria-hidden="true" /> : null}
              Look up
            </button>
          </form>
          <p class="muted small">
            A worker prints its code (and a link with it) when it starts unpaired. Codes last 15 minutes.
          </p>
        </section>

        {phase.kind === "error" ? (
          <div class="callout callout-error" role="alert">
            {phase.message}
          </div>
        ) : null}

        {phase.kind === "found" || phase.kind === "deciding" ? (
          <section class="card pair-result" aria-label="Worker to approve">
            <header class="card-head">
              <span class="machine-icon">
                <IconLaptop size={18} />
              </span>
              <h2>Approve this worker?</h2>
            </header>
            <dl class="facts">
              <div>
                <dt>Machine</dt>
                <dd>{phase.worker.machine}</dd>
              </div>
              <div>
                <dt>Directory</dt>
                <dd class="mono">{phase.worker.workdir}</dd>
              </div>
              <div>
                <dt>Asked</dt>
                <dd>{relativeTime(phase.worker.created_at, now.value)}</dd>
              </div>
            </dl>
            <label class="field">
              <span class="field-label">Worker name</span>
              <input value={name} maxLength={128} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
            </label>
            <p class="muted small">
              Approving lets anyone with your secret run the agent in this directory on this machine. Approve only a
              worker you started yourself.
            </p>
            <div class="row-actions">
              <button
                type="button"
                class="btn btn-ghost btn-danger-text"
                disabled={phase.kind === "deciding"}
                onClick={() => void decide(false)}
              >
                <IconX size={16} /> Reject
              </button>
              <button
                type="button"
                class="btn btn-primary"
                disabled={phase.kind === "deciding"}
                onClick={() => void decide(true)}
              >
                {phase.kind === "deciding" && phase.approve ? (
                  <span class="spinner" aria-hidden="true" />
                ) : (
                  <IconCheck size={16} />
                )}
                Approve
              </button>
            </div>
          </section>
        ) : null}

        {phase.kind === "approved" ? (
          <div class="callout callout-success" role="status">
            <IconCheck size={18} />
            <div>
              <strong>
                {phase.worker.name} on {phase.worker.machine} is paired.
              </strong>
              <div class="row-actions start">
                <button
                  type="button"
                  class="btn btn-primary btn-small"
                  onClick={() => (newSessionDialog.value = { workerId: phase.worker.worker_id })}
                >
                  <IconPlus size={14} /> Start a session
                </button>
                <a class="btn btn-ghost btn-small" href="#/">
                  See machines
                </a>
              </div>
            </div>
          </div>
        ) : null}

        {phase.kind === "rejected" ? (
          <div class="callout" role="status">
            Rejected {phase.worker.name} on {phase.worker.machine}. It was disconnected.
          </div>
        ) : null}

        <HeadlessPairing open={open} />

        {pending && pending.length > 0 ? <PendingList workers={pending} /> : null}
      </div>
    </div>
  );
}

type Minted =
  | { kind: "idle" }
  | { kind: "minting" }
  | { kind: "minted"; token: PairingTokenData; copied: boolean }
  | { kind: "error"; message: string };

/**
 * A machine nobody can type a code on (a server, a container): mint a
 * one-time token and run the worker with it; it is approved for you at
 * once. The token is shown here once; the host keeps only its hash.
 */
export function HeadlessPairing({ open }: { open: boolean }) {
  const [state, setState] = useState<Minted>({ kind: "idle" });

  async function mint() {
    setState({ kind: "minting" });
    try {
      setState({ kind: "minted", token: await createPairingToken(), copied: false });
    } catch (e) {
      setState({ kind: "error", message: errorMessage(e) });
    }
  }

  const command = state.kind === "minted" ? headlessCommand(state.token.token) : "";

  async function copy() {
    if (state.kind !== "minted") return;
    try {
      await navigator.clipboard.writeText(command);
      setState({ ...state, copied: true });
    } catch {
      // No clipboard (a plain-HTTP page on another host): select it instead.
      const el = document.querySelector<HTMLElement>(".headless-command code");
      if (el) window.getSelection()?.selectAllChildren(el);
    }
  }

  return (
    <section class="card headless" aria-label="Pair a headless machine">
      <header class="card-head">
        <span class="machine-icon">
          <IconKey size={18} />
        </span>
        <h2>Pair a headless machine</h2>
      </header>
      <p class="muted small">
        For a machine without a browser at hand: run the worker there with a one-time token and it is paired to you
        at once, with no code to type.
      </p>
      {state.kind === "minted" ? (
        <>
          <div class="headless-command">
            <code>{command}</code>
            <button
              type="button"
              class="btn btn-small btn-secondary"
              aria-label="Copy the command"
              onClick={() => void copy()}
            >
              {state.copied ? <IconCheck size={14} /> : <IconCopy size={14} />} {state.copied ? "Copied" : "Copy"}
            </button>
          </div>
          <p class="muted small">
            Works once, until {new Date(state.token.expires_at).toLocaleTimeString()} (10 minutes). It is shown only
            now. The machine prints who approved it when it pairs.
          </p>
        </>
      ) : null}
      {state.kind === "error" ? (
        <div class="callout callout-error" role="alert">
          {state.message}
        </div>
      ) : null}
      <div class="row-actions start">
        <button
          type="button"
          class="btn btn-secondary"
          disabled={!open || state.kind === "minting"}
          onClick={() => void mint()}
        >
          {state.kind === "minting" ? <span class="spinner" aria-hidden="true" /> : <IconKey size={16} />}
          {state.kind === "minted" ? "Mint another token" : "Pair a headless machine"}
        </button>
      </div>
    </section>
  );
}
