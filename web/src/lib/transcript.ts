// A session's conversation as the browser holds it: messages, and each
// answer assembled from its chunks. Pure logic, no DOM: unit-tested in
// tests/unit/transcript.test.ts.
//
// Chunks come from history pages and live `chunks` events, possibly twice
// (a page and an event overlap; a re-watch after a reconnect resends from
// the cursor) and possibly out of order. Each (message_id, seq) is applied
// once, in seq order: a chunk past a hole waits in a buffer until the hole
// is filled. The cursor is where a re-watch resumes: the first message not
// held whole, and the first seq of it that is missing.

import type {
  ChunkView,
  Cursor,
  HistoryPage,
  MessageStatus,
  MessageView,
  PermissionReply,
  SessionView,
  SubagentStatus,
  ToolStatus,
  Usage,
} from "../protocol";
import type { JsonValue } from "../protocol/serde_json/JsonValue";

export interface QuestionOption {
  label: string;
  description?: string;
}

export interface QuestionItem {
  question: string;
  header?: string;
  options: QuestionOption[];
  multiple: boolean;
}

/** One tool call of a subagent, as its latest `subagent` chunk told it. */
export interface SubagentToolView {
  partId: string;
  callId: string;
  tool: string;
  status: ToolStatus;
  title: string;
}

export type Block =
  | { type: "text"; key: string; text: string }
  | { type: "reasoning"; key: string; text: string }
  | {
      type: "tool";
      key: string;
      callId: string;
      tool: string;
      status: ToolStatus;
      input: JsonValue;
      title?: string;
      output: string;
      error?: string;
      metadata?: JsonValue;
    }
  | {
      type: "file_edit";
      key: string;
      path: string;
      diff: string;
      additions: number;
      deletions: number;
    }
  | {
      type: "permission";
      key: string;
      promptId: string;
      permission: string;
      patterns: string[];
      metadata: JsonValue;
      callId?: string;
      reply?: PermissionReply;
    }
  | {
      type: "question";
      key: string;
      promptId: string;
      questions: QuestionItem[];
      raw: JsonValue;
      answered: boolean;
      answers?: string[][];
    }
  | {
      type: "subagent";
      key: string;
      subagentId: string;
      callId?: string;
      parentId?: string;
      agent: string;
      description: string;
      status: SubagentStatus;
      error?: string;
      /** Its tool calls, in the order they started. */
      tools: SubagentToolView[];
    }
  | { type: "retry"; key: string; attempt: number; message: string; nextAt?: number }
  | { type: "error"; key: string; message: string };

/** A message the user sent but the server has not confirmed yet. */
export interface LocalSend {
  text: string;
  createdAt: number;
  state: "sending" | "failed";
  error?: string;
}

/** One turn: the user's message and the agent's answer to it. */
export interface Turn {
  messageId: string;
  view?: MessageView;
  local?: LocalSend;
  /** Seqs 0..applied-1 are applied to `blocks`. */
  applied: number;
  /** Chunks received past a hole, by seq, waiting for it. */
  buffered: Map<number, ChunkView>;
  blocks: Block[];
  usage: Usage;
  steps: number;
  /** The figures of the answer's latest step: what the model last read and wrote. */
  lastStep?: Usage;
  /** Bumped on every change, for renderers that skip unchanged turns. */
  version: number;
}

const FINAL: ReadonlySet<MessageStatus> = new Set(["complete", "failed", "aborted"]);
const RANK: Record<MessageStatus, number> = {
  queued: 0,
  dispatched: 1,
  streaming: 2,
  complete: 3,
  failed: 3,
  aborted: 3,
};

export function isFinal(status: MessageStatus): boolean {
  return FINAL.has(status);
}

function emptyUsage(): Usage {
  return { input: 0, output: 0, reasoning: 0, cache_read: 0, cache_write: 0, cost: 0 };
}

function newTurn(messageId: string): Turn {
  return {
    messageId,
    applied: 0,
    buffered: new Map(),
    blocks: [],
    usage: emptyUsage(),
    steps: 0,
    version: 0,
  };
}

/** Reads the `questions` of a question chunk into a shape the UI can show. */
export function parseQuestions(raw: JsonValue): QuestionItem[] {
  const list = Array.isArray(raw)
    ? raw
    : raw && typeof raw === "object" && !Array.isArray(raw) && Array.isArray(raw.questions)
      ? (raw.questions as JsonValue[])
      : [];
  const out: QuestionItem[] = [];
  for (const q of list) {
    if (!q || typeof q !== "object" || Array.isArray(q)) continue;
    const text = typeof q.question === "string" ? q.question : "";
    const options: QuestionOption[] = [];
    if (Array.isArray(q.options)) {
      for (const o of q.options) {
        if (typeof o === "string") options.push({ label: o });
        else if (o && typeof o === "object" && !Array.isArray(o) && typeof o.label === "string") {
          options.push({
            label: o.label,
            description: typeof o.description === "string" ? o.description : undefined,
          });
        }
      }
    }
    out.push({
      question: text,
      header: typeof q.header === "string" ? q.header : undefined,
      options,
      multiple: q.multiple === true || q.multiSelect === true,
    });
  }
  return out;
}

export class Transcript {
  session?: SessionView;
  private turns = new Map<string, Turn>();

  constructor(readonly sessionId: string) {}

  /** Every turn: confirmed ones by number, then unconfirmed ones by time. */
  ordered(): Turn[] {
    const all = [...this.turns.values()];
    return all.sort((a, b) => {
      const an = a.view?.number ?? Number.MAX_SAFE_INTEGER;
      const bn = b.view?.number ?? Number.MAX_SAFE_INTEGER;
      if (an !== bn) return an - bn;
      const at = a.view?.created_at ?? a.local?.createdAt ?? 0;
      const bt = b.view?.created_at ?? b.local?.createdAt ?? 0;
      return at - bt;
    });
  }

  /** The latest step of the latest answer that has one: what the model last had in its context. */
  lastStep(): Usage | undefined {
    const turns = this.ordered();
    for (let i = turns.length - 1; i >= 0; i--) {
      const step = turns[i].lastStep;
      if (step) return step;
    }
    return undefined;
  }

  turn(messageId: string): Turn | undefined {
    return this.turns.get(messageId);
  }

  private ensure(messageId: string): Turn {
    let t = this.turns.get(messageId);
    if (!t) {
      t = newTurn(messageId);
      this.turns.set(messageId, t);
    }
    return t;
  }

  /** Records the session's state if it is not older than the one held. */
  setSession(view: SessionView): boolean {
    if (view.session_id !== this.sessionId) return false;
    if (this.session && view.updated_at < this.session.updated_at) return false;
    this.session = view;
    return true;
  }

  /** A message the user is sending: shown at once, before the server has it. */
  addLocal(messageId: string, text: string, now: number): Turn {
    const t = this.ensure(messageId);
    t.local = { text, createdAt: now, state: "sending" };
    t.version++;
    return t;
  }

  /** Marks a local message as not sent (the server refused it). */
  failLocal(messageId: string, error: string): void {
    const t = this.turns.get(messageId);
    if (!t?.local || t.view) return;
    t.local = { ...t.local, state: "failed", error };
    t.version++;
  }

  /** Drops a local message that was never confirmed. */
  removeLocal(messageId: string): void {
    const t = this.turns.get(messageId);
    if (t && !t.view) this.turns.delete(messageId);
  }

  /**
   * Records a message's state. Updates may arrive out of order: an older
   * one (by `updated_at`, then by how far along its status is) is ignored.
   */
  addMessage(view: MessageView): boolean {
    if (view.session_id !== this.sessionId) return false;
    const t = this.ensure(view.message_id);
    const old = t.view;
    if (old) {
      if (view.updated_at < old.updated_at) return false;
      if (view.updated_at === old.updated_at && RANK[view.status] < RANK[old.status]) return false;
    }
    t.view = view;
    if (t.local) t.local = undefined;
    t.version++;
    return true;
  }

  /**
   * Adds chunks, each at most once. Returns the chunks applied now, in
   * order (including buffered ones a new chunk released).
   */
  addChunks(chunks: readonly ChunkView[]): ChunkView[] {
    const applied: ChunkView[] = [];
    const touched = new Set<Turn>();
    for (const c of chunks) {
      if (c.session_id !== this.sessionId) continue;
      const t = this.ensure(c.message_id);
      if (c.seq < t.applied || t.buffered.has(c.seq)) continue;
      t.buffered.set(c.seq, c);
      touched.add(t);
    }
    for (const t of touched) {
      let next = t.buffered.get(t.applied);
      while (next) {
        t.buffered.delete(t.applied);
        apply(t, next);
        applied.push(next);
        t.applied++;
        next = t.buffered.get(t.applied);
      }
      t.version++;
    }
    return applied;
  }

  /** Applies a history page (from `session_watch` or `session_history`). */
  applyPage(page: HistoryPage): ChunkView[] {
    this.setSession(page.session);
    for (const m of page.messages) this.addMessage(m);
    return this.addChunks(page.chunks);
  }

  /** True when a turn's answer is final and every chunk of it is applied. */
  isWhole(t: Turn): boolean {
    const v = t.view;
    return !!v && isFinal(v.status) && v.chunk_count != null && t.applied >= v.chunk_count;
  }

  /** Chunks are missing before some that arrived. */
  hasGap(t: Turn): boolean {
    return t.buffered.size > 0;
  }

  /**
   * Where a re-watch resumes: the first message (by number, from 0) not
   * held whole, at its first missing seq; past the last message when all
   * are whole.
   */
  cursor(): Cursor {
    const confirmed = [...this.turns.values()]
      .filter((t): t is Turn & { view: MessageView } => !!t.view)
      .sort((a, b) => a.view.number - b.view.number);
    let expected = 0;
    for (const t of confirmed) {
      if (t.view.number !== expected) return { message: expected, seq: 0 };
      if (!this.isWhole(t)) return { message: expected, seq: t.applied };
      expected++;
    }
    return { message: expected, seq: 0 };
  }

  /** The newest answer still queued or running, if any. */
  running(): Turn | undefined {
    const list = this.ordered();
    for (let i = list.length - 1; i >= 0; i--) {
      const t = list[i];
      if (t.view && !isFinal(t.view.status)) return t;
    }
    return undefined;
  }

  /** The text of an answer: its text parts in order. */
  static answerText(t: Turn): string {
    return t.blocks
      .filter((b): b is Extract<Block, { type: "text" }> => b.type === "text")
      .map((b) => b.text)
      .join("");
  }
}

function findBlock<K extends Block["type"]>(
  t: Turn,
  key: string,
  type: K,
): Extract<Block, { type: K }> | undefined {
  const b = t.blocks.find((x) => x.key === key);
  return b && b.type === type ? (b as Extract<Block, { type: K }>) : undefined;
}

/**
 * The subagent a permission request or question came from: the one whose
 * tool call it is about (a subagent's prompts come as the answer's own).
 */
export function promptSubagent(t: Turn, callId: string | undefined): Extract<Block, { type: "subagent" }> | undefined {
  if (!callId) return undefined;
  // A call of the answer's own agent (call ids are the model's: another
  // session's may repeat one) is not a subagent's.
  if (t.blocks.some((b) => b.type === "tool" && b.callId === callId && b.tool !== "task")) return undefined;
  for (const b of t.blocks) {
    if (b.type === "subagent" && b.tools.some((x) => x.callId === callId)) return b;
  }
  return undefined;
}

/** Applies one chunk, the next in seq order, to a turn's blocks. */
function apply(t: Turn, c: ChunkView): void {
  switch (c.kind) {
    case "text":
    case "reasoning": {
      const key = `${c.kind}:${c.part_id}`;
      const b = findBlock(t, key, c.kind);
      if (b) b.text += c.delta;
      else t.blocks.push({ type: c.kind, key, text: c.delta });
      break;
    }
    case "tool_call": {
      const key = `tool:${c.call_id}`;
      const b = findBlock(t, key, "tool");
      if (b) {
        b.tool = c.tool;
        b.status = c.status;
        b.input = c.input;
        if (c.title) b.title = c.title;
      } else {
        t.blocks.push({
          type: "tool",
          key,
          callId: c.call_id,
          tool: c.tool,
          status: c.status,
          input: c.input,
          title: c.title ?? undefined,
          output: "",
        });
      }
      break;
    }
    case "tool_output": {
      const key = `tool:${c.call_id}`;
      const b = findBlock(t, key, "tool");
      if (b) b.output += c.delta;
      else {
        t.blocks.push({
          type: "tool",
          key,
          callId: c.call_id,
          tool: "tool",
          status: "running",
          input: null,
          output: c.delta,
        });
      }
      break;
    }
    case "tool_result": {
      const key = `tool:${c.call_id}`;
      const b = findBlock(t, key, "tool");
      if (b) {
        b.status = c.status;
        b.error = c.error ?? undefined;
        b.metadata = c.metadata;
      } else {
        t.blocks.push({
          type: "tool",
          key,
          callId: c.call_id,
          tool: "tool",
          status: c.status,
          input: null,
          output: "",
          error: c.error ?? undefined,
          metadata: c.metadata,
        });
      }
      break;
    }
    case "file_edit":
      t.blocks.push({
        type: "file_edit",
        key: `edit:${c.seq}`,
        path: c.path,
        diff: c.diff,
        additions: c.additions,
        deletions: c.deletions,
      });
      break;
    case "permission_request":
      t.blocks.push({
        type: "permission",
        key: `prompt:${c.prompt_id}`,
        promptId: c.prompt_id,
        permission: c.permission,
        patterns: c.patterns,
        metadata: c.metadata,
        callId: c.call_id ?? undefined,
      });
      break;
    case "permission_answer": {
      const b = findBlock(t, `prompt:${c.prompt_id}`, "permission");
      if (b) b.reply = c.reply;
      break;
    }
    case "question":
      t.blocks.push({
        type: "question",
        key: `prompt:${c.prompt_id}`,
        promptId: c.prompt_id,
        questions: parseQuestions(c.questions),
        raw: c.questions,
        answered: false,
      });
      break;
    case "question_answer": {
      const b = findBlock(t, `prompt:${c.prompt_id}`, "question");
      if (b) {
        b.answered = true;
        b.answers = c.answers ?? undefined;
      }
      break;
    }
    case "step": {
      const u = c.usage;
      t.usage.input += u.input;
      t.usage.output += u.output;
      t.usage.reasoning += u.reasoning;
      t.usage.cache_read += u.cache_read;
      t.usage.cache_write += u.cache_write;
      t.usage.cost += u.cost;
      t.lastStep = { ...u };
      t.steps++;
      break;
    }
    case "retry": {
      // One notice per answer, showing the latest attempt.
      const b = findBlock(t, "retry", "retry");
      if (!b) {
        t.blocks.push({ type: "retry", key: "retry", attempt: c.attempt, message: c.message, nextAt: c.next_at ?? undefined });
      } else if (c.attempt > b.attempt) {
        b.attempt = c.attempt;
        b.message = c.message;
        b.nextAt = c.next_at ?? undefined;
      }
      break;
    }
    case "error":
      t.blocks.push({ type: "error", key: `error:${c.seq}`, message: c.message });
      break;
    case "subagent": {
      // Each chunk repeats the subagent's header (the latest is its state)
      // and may carry one of its tool calls' new state.
      const key = `subagent:${c.subagent_id}`;
      let b = findBlock(t, key, "subagent");
      if (!b) {
        b = { type: "subagent", key, subagentId: c.subagent_id, agent: "", description: "", status: c.status, tools: [] };
        t.blocks.push(b);
      }
      b.callId = c.call_id ?? b.callId;
      b.parentId = c.parent_id ?? b.parentId;
      if (c.agent) b.agent = c.agent;
      if (c.description) b.description = c.description;
      b.status = c.status;
      b.error = c.error ?? undefined;
      if (c.tool) {
        const tool = c.tool;
        const view: SubagentToolView = {
          partId: tool.part_id,
          callId: tool.call_id,
          tool: tool.tool,
          status: tool.status,
          title: tool.title,
        };
        const i = b.tools.findIndex((x) => x.partId === tool.part_id);
        if (i >= 0) b.tools[i] = view;
        else b.tools.push(view);
      }
      break;
    }
    default:
      // A chunk kind this UI does not know yet (additive protocol change): skip it.
      break;
  }
}
