import { Component } from "preact";
import { useMemo, useRef, useState } from "preact/hooks";

import type { JsonValue } from "../protocol/serde_json/JsonValue";
import type { ModelRef, PermissionReply } from "../protocol";
import { answerPrompt, discardSend, retrySend } from "../app/store";
import { parseDiff } from "../lib/diff";
import { cost, tokens } from "../lib/format";
import { highlight } from "../lib/markdown";
import { type Block, type Turn, isFinal, promptSubagent } from "../lib/transcript";
import { Markdown } from "./Markdown";
import {
  IconAlert,
  IconCheck,
  IconChevron,
  IconClock,
  IconFile,
  IconHelp,
  IconShield,
  IconSparkle,
  IconTerminal,
  IconTool,
  IconX,
} from "./icons";

export interface TurnContext {
  /** Prompts answered from this page whose answer chunk has not come yet. */
  answering: ReadonlyMap<string, string>;
  workerOnline: boolean;
  sessionStarting: boolean;
  sessionClosed: boolean;
  /** A model's name, as the worker calls it (its id without). */
  modelName?: (m: ModelRef) => string;
}

interface Props {
  turn: Turn;
  index: number;
  ctx: TurnContext;
  /** Changes whenever anything this turn shows changes. */
  stamp: string;
}

/** Re-renders a turn only when its stamp changes (long chats stream smoothly). */
export class TurnView extends Component<Props> {
  override shouldComponentUpdate(next: Props): boolean {
    return next.stamp !== this.props.stamp || next.index !== this.props.index;
  }

  override render({ turn, index, ctx }: Props) {
    return <TurnBody turn={turn} index={index} ctx={ctx} />;
  }
}

export function turnStamp(t: Turn, ctx: TurnContext): string {
  const prompts = t.blocks
    .filter((b) => b.type === "permission" || b.type === "question")
    .map((b) => ctx.answering.get((b as { promptId: string }).promptId) ?? "")
    .join(",");
  return `${t.version}|${prompts}|${ctx.workerOnline}|${ctx.sessionStarting}|${ctx.sessionClosed}`;
}

function userStatus(t: Turn, ctx: TurnContext): { label: string; tone: string } | null {
  if (t.local) {
    return t.local.state === "failed"
      ? { label: `Not sent: ${t.local.error ?? "refused"}`, tone: "error" }
      : { label: "Sending…", tone: "muted" };
  }
  switch (t.view?.status) {
    case "queued":
      if (ctx.sessionClosed) return { label: "Not sent", tone: "muted" };
      if (!ctx.workerOnline) return { label: "Queued · the worker is offline", tone: "warn" };
      if (ctx.sessionStarting) return { label: "Queued · the session is starting", tone: "warn" };
      return { label: "Queued", tone: "warn" };
    case "dispatched":
    case "streaming":
      return { label: "Sent", tone: "muted" };
    default:
      return null;
  }
}

function TurnBody({ turn, index, ctx }: { turn: Turn; index: number; ctx: TurnContext }) {
  const text = turn.view?.text ?? turn.local?.text ?? "";
  const status = turn.view?.status;
  const running = !!status && !isFinal(status) && status !== "queued";
  const us = userStatus(turn, ctx);
  const showAnswer = !!status && status !== "queued";

  return (
    <article class="turn" aria-label={`Message ${index + 1}`} data-message-id={turn.messageId} data-status={status ?? "local"}>
      <div class="user-row">
        <div class="user-bubble">{text}</div>
        {turn.view?.model ? (
          <span class="chip msg-chip" title="Answered by this model instead of the session's">
            {ctx.modelName?.(turn.view.model) ?? turn.view.model.model_id}
          </span>
        ) : null}
        {us ? (
          <div class={`msg-status tone-${us.tone}`} data-state={status ?? turn.local?.state}>
            {us.tone === "warn" ? <IconClock size={13} /> : null}
            {us.label}
            {turn.local?.state === "failed" ? (
              <>
                <button type="button" class="link-btn" onClick={() => retrySend(turn.messageId)}>
                  Retry
                </button>
                <button type="button" class="link-btn" onClick={() => discardSend(turn.messageId)}>
                  Discard
                </button>
              </>
            ) : null}
          </div>
        ) : null}
      </div>
      {showAnswer ? (
        <section class="answer" aria-label={`Answer ${index + 1}`} aria-busy={running ? "true" : "false"} data-status={status}>
          {turn.blocks.map((b, i) => (
            <BlockView key={b.key} block={b} turn={turn} ctx={ctx} live={running} last={i === turn.blocks.length - 1} />
          ))}
          {turn.buffered.size > 0 ? (
            <div class="gap" role="status">
              <span class="spinner" aria-hidden="true" /> Waiting for a missing piece of the answer…
            </div>
          ) : null}
          {running && turn.blocks.length === 0 ? (
            <div class="thinking" role="status">
              <span class="dots" aria-hidden="true">
                <i />
                <i />
                <i />
              </span>
              {status === "dispatched" ? "Waiting for the agent…" : "Thinking…"}
            </div>
          ) : null}
          <AnswerFoot turn={turn} running={running} workerOnline={ctx.workerOnline} />
        </section>
      ) : null}
    </article>
  );
}

function AnswerFoot({ turn, running, workerOnline }: { turn: Turn; running: boolean; workerOnline: boolean }) {
  const v = turn.view;
  if (!v) return null;
  const u = turn.usage;
  const figures =
    turn.steps > 0 ? (
      <span class="usage" aria-label="Usage">
        <span title="Input tokens">{tokens(u.input)} in</span>
        <span title="Output tokens">{tokens(u.output)} out</span>
        {u.reasoning ? <span title="Reasoning tokens">{tokens(u.reasoning)} reasoning</span> : null}
        {u.cache_read ? <span title="Tokens read from cache">{tokens(u.cache_read)} cached</span> : null}
        <span title="Cost">{cost(u.cost)}</span>
      </span>
    ) : null;
  if (running) {
    return (
      <footer class="answer-foot">
        {workerOnline ? (
          <span class="working">
            <span class="spinner" aria-hidden="true" /> Working…
          </span>
        ) : (
          <span class="working tone-warn" role="status" data-state="worker-offline">
            <IconClock size={13} /> The worker is offline. The answer goes on if it is back soon; Stop ends it now.
          </span>
        )}
        {figures}
      </footer>
    );
  }
  if (v.status === "complete") {
    return (
      <footer class="answer-foot">
        <span class="done" aria-label="Answer complete">
          <IconCheck size={14} />
        </span>
        {figures}
      </footer>
    );
  }
  if (v.status === "aborted") {
    return (
      <footer class="answer-foot">
        <span class="pill pill-offline">Stopped</span>
        {figures}
      </footer>
    );
  }
  if (v.status === "failed") {
    // The reason is said once: not again when an error in the answer says it.
    const said = turn.blocks.some((b) => b.type === "error" && b.message === v.error);
    return (
      <footer class="answer-foot column">
        <div class="callout callout-error" role="alert">
          <IconAlert size={16} /> The answer failed{v.error && !said ? `: ${v.error}` : "."}
        </div>
        {figures}
      </footer>
    );
  }
  return null;
}

function BlockView({
  block,
  turn,
  ctx,
  live,
  last,
}: {
  block: Block;
  turn: Turn;
  ctx: TurnContext;
  live: boolean;
  last: boolean;
}) {
  switch (block.type) {
    case "text":
      return <Markdown text={block.text} class={live && last ? "answer-text md-streaming" : "answer-text"} />;
    case "reasoning":
      return (
        <details class="reasoning">
          <summary>
            <IconSparkle size={14} />
            <span>{live && last ? "Thinking…" : "Reasoning"}</span>
            <IconChevron size={14} class="chev" />
          </summary>
          <div class="reasoning-body">
            <Markdown text={block.text} />
          </div>
        </details>
      );
    case "tool":
      return (
        <ToolCard
          block={block}
          live={live}
          awaiting={live && turn.blocks.some((b) => b.type === "permission" && b.callId === block.callId && !b.reply)}
        />
      );
    case "file_edit":
      return <FileEdit block={block} />;
    case "permission":
      return <Permission block={block} ctx={ctx} ended={!live} from={promptSubagent(turn, block.callId)} />;
    case "subagent":
      return <SubagentCard block={block} live={live} />;
    case "question":
      return <Question block={block} ctx={ctx} ended={!live} />;
    case "retry":
      return (
        <div class="callout callout-warn" role="status">
          <IconClock size={16} />
          <span>
            {live && last
              ? `The model call failed (${block.message}); trying again, attempt ${block.attempt}…`
              : `The model call failed ${block.attempt === 1 ? "once" : `${block.attempt} times`} along the way (${block.message}).`}
          </span>
        </div>
      );
    case "error":
      return (
        <div class="callout callout-error" role="alert">
          <IconAlert size={16} /> {block.message}
        </div>
      );
  }
}

function str(v: JsonValue | undefined, key: string): string | undefined {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const x = v[key];
    if (typeof x === "string") return x;
  }
  return undefined;
}

/** A short line saying what a tool call does. */
function toolSummary(b: Extract<Block, { type: "tool" }>): string {
  return (
    b.title ||
    str(b.input, "command") ||
    str(b.input, "filePath") ||
    str(b.input, "path") ||
    str(b.input, "pattern") ||
    str(b.input, "url") ||
    str(b.input, "description") ||
    ""
  );
}

const TOOL_STATUS: Record<string, string> = {
  pending: "Pending",
  running: "Running",
  completed: "Done",
  error: "Failed",
  stopped: "Stopped",
  approval: "Needs approval",
};

function ToolStatusBadge({ status }: { status: string }) {
  return (
    <span class={`tool-status ts-${status}`}>
      {status === "approval" ? (
        <IconShield size={13} />
      ) : status === "running" || status === "pending" ? (
        <span class="spinner" aria-hidden="true" />
      ) : status === "completed" ? (
        <IconCheck size={13} />
      ) : (
        <IconX size={13} />
      )}
      {TOOL_STATUS[status] ?? status}
    </span>
  );
}

function ToolCard({
  block,
  live,
  awaiting,
}: {
  block: Extract<Block, { type: "tool" }>;
  live: boolean;
  /** Its permission request waits for the user: it has not started. */
  awaiting: boolean;
}) {
  // A call the answer ended without finishing (it failed or the worker
  // went away) no longer runs.
  const unfinished = block.status === "running" || block.status === "pending";
  const status = unfinished && !live ? "stopped" : unfinished && awaiting ? "approval" : block.status;
  // Open while it runs when first shown; after that the user decides. A
  // question's input is the question itself, shown as its own card.
  const initiallyOpen = useRef(unfinished && live && block.tool !== "question");
  const summary = toolSummary(block);
  const command = str(block.input, "command");
  const input =
    command ?? (block.input == null ? "" : JSON.stringify(block.input, null, 2));
  const isBash = block.tool === "bash" || block.tool === "shell";
  return (
    <details class={`tool tool-${status}`} open={initiallyOpen.current} aria-label={`Tool ${block.tool}`}>
      <summary>
        <span class="tool-icon">{isBash ? <IconTerminal size={14} /> : <IconTool size={14} />}</span>
        <span class="tool-name">{block.tool}</span>
        <span class="tool-summary mono">{summary}</span>
        <ToolStatusBadge status={status} />
        <IconChevron size={14} class="chev" />
      </summary>
      <div class="tool-body">
        {input ? (
          <div class="tool-section">
            <div class="tool-label">Input</div>
            <pre class="tool-pre">{command ? `$ ${input}` : input}</pre>
          </div>
        ) : null}
        {block.output ? (
          <div class="tool-section">
            <div class="tool-label">Output</div>
            <pre class="tool-pre tool-output" aria-label={`Output of ${block.tool}`}>
              {block.output}
            </pre>
          </div>
        ) : null}
        {block.error ? (
          <div class="callout callout-error">
            <IconAlert size={14} /> {block.error}
          </div>
        ) : null}
      </div>
    </details>
  );
}

const SUBAGENT_STATUS: Record<string, string> = {
  running: "running",
  completed: "completed",
  error: "error",
  aborted: "stopped",
};

/**
 * A subagent working for the answer: its agent, task, status, and its tool
 * calls (collapsible; open while it runs when first shown).
 */
export function SubagentCard({ block, live }: { block: Extract<Block, { type: "subagent" }>; live: boolean }) {
  // A subagent the answer ended without an end of its own no longer runs.
  const running = block.status === "running" && live;
  const status = block.status === "running" && !live ? "stopped" : SUBAGENT_STATUS[block.status] ?? block.status;
  const initiallyOpen = useRef(running);
  const n = block.tools.length;
  return (
    <details
      class={`tool subagent subagent-${block.status}`}
      open={initiallyOpen.current}
      aria-label={`Subagent ${block.agent || "subagent"}`}
      data-subagent-id={block.subagentId}
      data-status={block.status}
    >
      <summary>
        <span class="tool-icon">
          <IconSparkle size={14} />
        </span>
        <span class="tool-name">{block.agent || "subagent"}</span>
        <span class="tool-summary">{block.description}</span>
        <span class="subagent-count muted" aria-label={`${n} tool calls`}>
          {n}
          <IconTool size={12} />
        </span>
        <ToolStatusBadge status={status} />
        <IconChevron size={14} class="chev" />
      </summary>
      <div class="tool-body subagent-body">
        {block.error && block.status !== "completed" ? (
          <div class="callout callout-error">
            <IconAlert size={14} /> {block.error}
          </div>
        ) : null}
        {n === 0 ? (
          <div class="muted subagent-empty">{running ? "Starting…" : "No tool calls."}</div>
        ) : (
          <ul class="subagent-tools" aria-label="Subagent tool calls">
            {block.tools.map((t) => {
              const unfinished = t.status === "running" || t.status === "pending";
              return (
                <li key={t.partId} class="subagent-tool" data-status={t.status}>
                  <span class="tool-icon">
                    {t.tool === "bash" || t.tool === "shell" ? <IconTerminal size={12} /> : <IconTool size={12} />}
                  </span>
                  <span class="tool-name">{t.tool}</span>
                  <span class="tool-summary mono">{t.title}</span>
                  <ToolStatusBadge status={unfinished && !running ? "stopped" : t.status} />
                </li>
              );
            })}
          </ul>
        )}
      </div>
    </details>
  );
}

function FileEdit({ block }: { block: Extract<Block, { type: "file_edit" }> }) {
  const lines = useMemo(() => parseDiff(block.diff), [block.diff]);
  const lang = block.path.split(".").pop();
  return (
    <details class="file-edit" open={lines.length <= 60} aria-label={`Edit of ${block.path}`}>
      <summary>
        <span class="tool-icon">
          <IconFile size={14} />
        </span>
        <span class="file-path mono">{block.path}</span>
        <span class="diffstat">
          <span class="add">+{block.additions}</span> <span class="del">−{block.deletions}</span>
        </span>
        <IconChevron size={14} class="chev" />
      </summary>
      <div class="diff" role="table" aria-label={`Diff of ${block.path}`}>
        {lines.map((l, i) => (
          <div class={`diff-line dl-${l.kind}`} role="row" key={i}>
            <span class="ln" role="cell">
              {l.oldNo ?? ""}
            </span>
            <span class="ln" role="cell">
              {l.newNo ?? ""}
            </span>
            <span class="sign" role="cell" aria-hidden="true">
              {l.kind === "add" ? "+" : l.kind === "del" ? "−" : ""}
            </span>
            {l.kind === "add" || l.kind === "del" || l.kind === "context" ? (
              <code role="cell" dangerouslySetInnerHTML={{ __html: highlight(l.text, lang).html || " " }} />
            ) : (
              <code role="cell">{l.text}</code>
            )}
          </div>
        ))}
      </div>
    </details>
  );
}

const REPLY_LABEL: Record<PermissionReply, string> = {
  once: "Allowed once",
  always: "Always allowed",
  reject: "Denied",
};

function Permission({
  block,
  ctx,
  ended,
  from,
}: {
  block: Extract<Block, { type: "permission" }>;
  ctx: TurnContext;
  /** The answer it belongs to is over: nothing can take a reply any more. */
  ended: boolean;
  /** The subagent that asks, if it is not the answer's own agent. */
  from?: Extract<Block, { type: "subagent" }>;
}) {
  const pending = ctx.answering.get(block.promptId);
  const decided = block.reply ? REPLY_LABEL[block.reply] : null;
  const reply = (r: PermissionReply) =>
    void answerPrompt(block.promptId, { kind: "permission", reply: r }, REPLY_LABEL[r]);
  return (
    <div
      class={`prompt permission ${decided ? "is-answered" : "is-open"}`}
      role="group"
      aria-label="Permission request"
      data-prompt-id={block.promptId}
    >
      <div class="prompt-head">
        <IconShield size={16} />
        <span>
          {decided ? "Permission" : "Permission needed"}: <strong>{block.permission}</strong>
        </span>
      </div>
      {from ? (
        <div class="prompt-from muted">
          Asked by the subagent <strong>{from.agent || "subagent"}</strong>
          {from.description ? `: ${from.description}` : ""}
        </div>
      ) : null}
      {block.patterns.length ? (
        <div class="patterns">
          {block.patterns.map((p) => (
            <code key={p}>{p}</code>
          ))}
        </div>
      ) : null}
      {decided ? (
        <div class={`prompt-answer ${block.reply === "reject" ? "tone-error" : "tone-ok"}`}>
          {block.reply === "reject" ? <IconX size={14} /> : <IconCheck size={14} />} {decided}
        </div>
      ) : ended || ctx.sessionClosed ? (
        <div class="prompt-answer tone-muted">Not answered: the answer ended first</div>
      ) : pending ? (
        <div class="prompt-answer tone-muted">
          <span class="spinner" aria-hidden="true" /> {pending}, waiting for the agent…
        </div>
      ) : (
        <div class="prompt-actions">
          <button type="button" class="btn btn-primary btn-small" onClick={() => reply("once")}>
            Allow once
          </button>
          <button type="button" class="btn btn-secondary btn-small" onClick={() => reply("always")}>
            Always allow
          </button>
          <button type="button" class="btn btn-ghost btn-small btn-danger-text" onClick={() => reply("reject")}>
            Deny
          </button>
        </div>
      )}
    </div>
  );
}

function Question({
  block,
  ctx,
  ended,
}: {
  block: Extract<Block, { type: "question" }>;
  ctx: TurnContext;
  ended: boolean;
}) {
  const [chosen, setChosen] = useState<string[][]>(() => block.questions.map(() => []));
  const pending = ctx.answering.get(block.promptId);
  const toggle = (qi: number, label: string, multiple: boolean) => {
    setChosen((prev) =>
      prev.map((list, i) => {
        if (i !== qi) return list;
        if (!multiple) return [label];
        return list.includes(label) ? list.filter((x) => x !== label) : [...list, label];
      }),
    );
  };
  const complete = chosen.every((c, i) => c.length > 0 || block.questions[i].options.length === 0);

  return (
    <div
      class={`prompt question ${block.answered ? "is-answered" : "is-open"}`}
      role="group"
      aria-label="Question from the agent"
      data-prompt-id={block.promptId}
    >
      <div class="prompt-head">
        <IconHelp size={16} />
        <span>{block.answered ? "The agent asked" : "The agent asks"}</span>
      </div>
      {block.questions.length === 0 ? <pre class="tool-pre">{JSON.stringify(block.raw, null, 2)}</pre> : null}
      {block.questions.map((q, qi) => (
        <fieldset class="question-item" key={qi} disabled={block.answered || !!pending || ended || ctx.sessionClosed}>
          <legend>{q.header ? <span class="muted">{q.header}: </span> : null}{q.question}</legend>
          <div class="options">
            {q.options.map((o) => {
              const on = block.answered
                ? !!block.answers?.[qi]?.includes(o.label)
                : chosen[qi]?.includes(o.label);
              return (
                <button
                  type="button"
                  key={o.label}
                  class={`option ${on ? "is-on" : ""}`}
                  aria-pressed={on ? "true" : "false"}
                  onClick={() => toggle(qi, o.label, q.multiple)}
                  title={o.description}
                >
                  {o.label}
                  {o.description ? <span class="option-desc">{o.description}</span> : null}
                </button>
              );
            })}
          </div>
        </fieldset>
      ))}
      {block.answered ? (
        <div class="prompt-answer tone-ok">
          {block.answers ? (
            <>
              <IconCheck size={14} /> Answered
            </>
          ) : (
            <>
              <IconX size={14} /> Declined
            </>
          )}
        </div>
      ) : ended || ctx.sessionClosed ? (
        <div class="prompt-answer tone-muted">Not answered: the answer ended first</div>
      ) : pending ? (
        <div class="prompt-answer tone-muted">
          <span class="spinner" aria-hidden="true" /> {pending}, waiting for the agent…
        </div>
      ) : (
        <div class="prompt-actions">
          <button
            type="button"
            class="btn btn-primary btn-small"
            disabled={!complete}
            onClick={() => void answerPrompt(block.promptId, { kind: "question", answers: chosen }, "Answered")}
          >
            Send answer
          </button>
          <button
            type="button"
            class="btn btn-ghost btn-small"
            onClick={() => void answerPrompt(block.promptId, { kind: "question_rejected" }, "Declined")}
          >
            Decline
          </button>
        </div>
      )}
    </div>
  );
}
