import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

import { setBaseTitle } from "../app/attention";
import { href } from "../app/route";
import {
  abortRunning,
  chat,
  chatVersion,
  chooseModel,
  chosenModel,
  endSession,
  messageTooLarge,
  newSessionDialog,
  openChat,
  recheckChat,
  modelChoices,
  sendMessage,
  workers,
} from "../app/store";
import { contextMeter, type ContextMeter } from "../lib/context";
import { tokens } from "../lib/format";
import type { ModelInfo, ModelRef, SessionView, WorkerView } from "../protocol";
import { EmptyState, SessionStatusPill, TopBar, modelLabel } from "./common";
import { IconAlert, IconChat, IconPlus, IconSend, IconStop } from "./icons";
import { TurnView, turnStamp, type TurnContext } from "./Turn";

/** How often a stalled answer is looked at again (the lease is minutes). */
const RECHECK_MS = 15_000;

export function ChatPage({ sessionId }: { sessionId: string }) {
  useEffect(() => {
    openChat(sessionId);
  }, [sessionId]);
  useEffect(() => () => openChat(null), []);

  const c = chat.value;
  const version = chatVersion.value;
  const scroller = useRef<HTMLDivElement>(null);
  const stick = useRef(true);

  const session = c?.transcript.session;
  useEffect(() => {
    setBaseTitle(session?.title ? `${session.title} · Tether` : "Tether");
    return () => setBaseTitle("Tether");
  }, [session?.title]);

  // Follow the answer as it streams, unless the user scrolled up to read.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [version, sessionId]);

  // Keep the newest text in view when the viewport changes (a phone's keyboard).
  useEffect(() => {
    const onResize = () => {
      const el = scroller.current;
      if (el && stick.current) el.scrollTop = el.scrollHeight;
    };
    window.addEventListener("resize", onResize);
    window.visualViewport?.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      window.visualViewport?.removeEventListener("resize", onResize);
    };
  }, []);

  // Esc stops the running answer (unless a dialog is open: Esc closes that).
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "Escape" || e.defaultPrevented) return;
      if (document.querySelector("dialog[open]")) return;
      if (chat.value?.transcript.running()) {
        e.preventDefault();
        void abortRunning();
      }
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);

  // An answer running on an offline worker gets no events: look again now
  // and then, so the host can end it once the worker's lease is over.
  const stalledWorker = session ? workers.value.get(session.worker_id) : undefined;
  const stalled = !!c?.transcript.running() && !!stalledWorker && !stalledWorker.online;
  useEffect(() => {
    if (!stalled) return;
    const t = setInterval(() => void recheckChat(), RECHECK_MS);
    return () => clearInterval(t);
  }, [stalled]);

  if (!c || c.sessionId !== sessionId || (c.status === "loading" && !session)) {
    return (
      <div class="screen chat">
        <TopBar title="Session" />
        <div class="transcript">
          <div class="transcript-inner">
            <div class="loading-line" role="status">
              <span class="spinner" aria-hidden="true" /> Loading the session…
            </div>
          </div>
        </div>
      </div>
    );
  }

  if (c.status === "not_found") {
    return (
      <div class="screen">
        <TopBar title="Session not found" />
        <div class="page">
          <EmptyState icon={<IconAlert size={26} />} title="Session not found">
            <p>There is no session at this address, or it is not yours.</p>
            <a class="btn btn-secondary" href="#/">
              Back to machines
            </a>
          </EmptyState>
        </div>
      </div>
    );
  }

  const w = session ? workers.value.get(session.worker_id) : undefined;
  const turns = c.transcript.ordered();
  const running = c.transcript.running();
  const closed = session?.status === "ended" || session?.status === "failed";
  const ctx: TurnContext = {
    answering: c.answering,
    workerOnline: !!w?.online,
    sessionStarting: session?.status === "starting",
    sessionClosed: closed,
    modelName: (m) => modelLabel(w, m.provider_id, m.model_id),
  };

  const subtitle = session ? (
    <span class="chat-sub">
      <span class="chip">{modelLabel(w, session.model.provider_id, session.model.model_id)}</span>
      {w ? (
        <a href={href({ name: "worker", workerId: w.worker_id })} class="muted">
          <span class={`presence-dot ${w.online ? "on" : ""}`} aria-hidden="true" />
          {w.name} · {w.machine}
        </a>
      ) : null}
    </span>
  ) : undefined;

  return (
    <div class="screen chat">
      <TopBar
        title={session?.title || "Untitled session"}
        subtitle={subtitle}
        actions={
          <>
            {session ? <SessionStatusPill status={session.status} /> : null}
            {session && !closed ? (
              <button type="button" class="btn btn-ghost btn-small" onClick={() => void endSession()}>
                End session
              </button>
            ) : null}
          </>
        }
      />
      <div
        class="transcript"
        ref={scroller}
        onScroll={(e) => {
          const el = e.currentTarget as HTMLDivElement;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
        }}
      >
        <div class="transcript-inner" role="log" aria-label="Conversation">
          {session?.status === "failed" && session.error ? (
            <div class="callout callout-error" role="alert">
              <IconAlert size={16} /> The session failed: {session.error}
            </div>
          ) : null}
          {c.status === "error" ? (
            <div class="callout callout-error" role="alert">
              <IconAlert size={16} /> {c.error}
            </div>
          ) : null}
          {turns.length === 0 && c.status === "ready" ? (
            <EmptyState icon={<IconChat size={26} />} title={closed ? "This session had no messages" : "Start the conversation"}>
              {!closed && w ? (
                <p>
                  The agent works in <code>{w.workdir}</code> on {w.machine}.
                </p>
              ) : null}
            </EmptyState>
          ) : null}
          {turns.map((t, i) => (
            <TurnView key={t.messageId} turn={t} index={i} ctx={ctx} stamp={turnStamp(t, ctx)} />
          ))}
        </div>
      </div>
      {closed ? (
        <div class="composer-wrap">
          <div class="closed-note" role="status">
            This session has {session?.status === "failed" ? "failed" : "ended"}.
            <button
              type="button"
              class="btn btn-secondary btn-small"
              onClick={() => (newSessionDialog.value = { workerId: session?.worker_id })}
            >
              <IconPlus size={14} /> New session
            </button>
          </div>
        </div>
      ) : (
        <Composer
          running={!!running}
          models={w?.models ?? []}
          sessionModel={session?.model}
          chosen={(void modelChoices.value, chosenModel(c.sessionId))}
          onChoose={(m) => chooseModel(c.sessionId, m)}
          meter={contextMeter(c.transcript.lastStep(), sessionModel(w, session)?.context_limit)}
          onSend={(text) => {
            stick.current = true;
            return sendMessage(text);
          }}
        />
      )}
    </div>
  );
}

function sessionModel(w: WorkerView | undefined, session: SessionView | undefined): ModelInfo | undefined {
  if (!w || !session) return undefined;
  return w.models.find((m) => m.provider_id === session.model.provider_id && m.model_id === session.model.model_id);
}

/** How full the model's context is after the latest step; warns near the limit. */
function ContextGauge({ meter }: { meter: ContextMeter }) {
  const pct = Math.min(100, Math.round(meter.share * 100));
  const label =
    meter.level === "full"
      ? "Context is full: the agent will summarise the session or fail"
      : meter.level === "warn"
        ? "Context is nearly full"
        : "Context";
  return (
    <div
      class={`context-meter level-${meter.level}`}
      role="meter"
      aria-label="Context used"
      aria-valuemin={0}
      aria-valuemax={meter.limit}
      aria-valuenow={Math.min(meter.used, meter.limit)}
      aria-valuetext={`${pct}% of ${tokens(meter.limit)} tokens`}
      data-level={meter.level}
      title={`${meter.used.toLocaleString()} of ${meter.limit.toLocaleString()} tokens in the model's context after the latest step`}
    >
      <span class="context-bar" aria-hidden="true">
        <span class="context-fill" style={{ width: `${pct}%` }} />
      </span>
      <span class="context-text">
        {label} {pct}% · {tokens(meter.used)} / {tokens(meter.limit)}
      </span>
    </div>
  );
}

const modelKey = (m: ModelRef) => `${m.provider_id}/${m.model_id}`;

/**
 * The composer's choices for the next message: the model (the session's
 * unless another of the worker's is picked). Shown when there is a choice.
 */
function ComposerControls({
  models,
  sessionModel,
  chosen,
  onChoose,
}: {
  models: ModelInfo[];
  sessionModel?: ModelRef;
  chosen: ModelRef | null;
  onChoose: (m: ModelRef | null) => void;
}) {
  if (!sessionModel || models.length < 2) return null;
  const offered = (m: ModelRef | null) => !!m && models.some((x) => modelKey(x) === modelKey(m));
  const current = offered(chosen) ? chosen! : sessionModel;
  return (
    <div class="composer-controls">
      <label class="composer-model">
        <select
          aria-label="Model for the next message"
          value={modelKey(current)}
          onChange={(e) => {
            const key = (e.target as HTMLSelectElement).value;
            const m = models.find((x) => modelKey(x) === key);
            onChoose(!m || modelKey(m) === modelKey(sessionModel) ? null : { provider_id: m.provider_id, model_id: m.model_id });
          }}
        >
          {models.map((m) => (
            <option key={modelKey(m)} value={modelKey(m)}>
              {m.name || m.model_id}
              {modelKey(m) === modelKey(sessionModel) ? " (session)" : ""}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}

function Composer({
  running,
  models,
  sessionModel,
  chosen,
  onChoose,
  meter,
  onSend,
}: {
  running: boolean;
  models: ModelInfo[];
  sessionModel?: ModelRef;
  chosen: ModelRef | null;
  onChoose: (m: ModelRef | null) => void;
  meter: ContextMeter | null;
  onSend: (text: string) => boolean;
}) {
  const [text, setText] = useState("");
  const area = useRef<HTMLTextAreaElement>(null);

  const resize = () => {
    const el = area.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 220)}px`;
  };
  useLayoutEffect(resize, [text]);

  // Cheap for short text; below 5,000 characters nothing can be too large.
  const tooLarge = text.length > 5_000 ? messageTooLarge(text) : null;
  const submit = () => {
    if (!text.trim() || tooLarge) return;
    if (onSend(text)) setText("");
  };

  return (
    <div class="composer-wrap">
      <ComposerControls models={models} sessionModel={sessionModel} chosen={chosen} onChoose={onChoose} />
      <form
        class="composer"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <textarea
          ref={area}
          rows={1}
          aria-label="Message"
          placeholder="Ask the agent…"
          value={text}
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              submit();
            }
          }}
        />
        <div class="composer-buttons">
          {running ? (
            <button
              type="button"
              class="icon-btn round stop"
              aria-label="Abort answer"
              title="Stop the answer (Esc)"
              onClick={() => void abortRunning()}
            >
              <IconStop size={14} />
            </button>
          ) : null}
          <button
            type="submit"
            class="icon-btn round send"
            aria-label="Send message"
            title="Send (Enter)"
            disabled={!text.trim() || !!tooLarge}
          >
            <IconSend size={16} />
          </button>
        </div>
      </form>
      {meter ? <ContextGauge meter={meter} /> : null}
      {tooLarge ? (
        <div class="callout callout-error composer-error" role="alert">
          <IconAlert size={16} /> {tooLarge}
        </div>
      ) : null}
      <div class="composer-hint" aria-hidden="true">
        <kbd>Enter</kbd> to send · <kbd>Shift</kbd>+<kbd>Enter</kbd> new line{running ? <> · <kbd>Esc</kbd> to stop</> : null}
      </div>
    </div>
  );
}
