import { describe, expect, it } from "vitest";

import type { ChunkView, HistoryPage, MessageView, SessionView } from "../../src/protocol";
import { Transcript, parseQuestions } from "../../src/lib/transcript";

const S = "ses_1";

function msg(number: number, status: MessageView["status"], extra: Partial<MessageView> = {}): MessageView {
  return {
    session_id: S,
    message_id: `msg_${number}`,
    number,
    text: `question ${number}`,
    status,
    created_at: 1000 + number,
    updated_at: 1000 + number,
    ...extra,
  };
}

function text(message: number, seq: number, delta: string, part = "p1"): ChunkView {
  return { session_id: S, message_id: `msg_${message}`, seq, kind: "text", part_id: part, delta };
}

function session(): SessionView {
  return {
    session_id: S,
    worker_id: "wkr_1",
    model: { provider_id: "p", model_id: "m" },
    title: "t",
    status: "ready",
    message_count: 1,
    created_at: 1,
    updated_at: 1,
  };
}

describe("chunk assembly", () => {
  it("appends text deltas in seq order", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "streaming"));
    t.addChunks([text(0, 0, "Hello"), text(0, 1, ", "), text(0, 2, "world")]);
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("Hello, world");
  });

  it("drops a chunk it already has, keyed by (message_id, seq)", () => {
    const t = new Transcript(S);
    t.addChunks([text(0, 0, "a"), text(0, 1, "b")]);
    const applied = t.addChunks([text(0, 1, "b"), text(0, 0, "a"), text(0, 2, "c")]);
    expect(applied.map((c) => c.seq)).toEqual([2]);
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("abc");
  });

  it("keeps one retry notice per answer, at its latest attempt", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "streaming"));
    const retry = (seq: number, attempt: number): ChunkView => ({
      session_id: S,
      message_id: "msg_0",
      seq,
      kind: "retry",
      attempt,
      message: `HTTP 500 (${attempt})`,
      next_at: 5000 + attempt,
    });
    // Out of order: attempt 2 arrives before attempt 1.
    t.addChunks([retry(1, 2), retry(0, 1), text(0, 2, "finally")]);
    const blocks = t.turn("msg_0")!.blocks;
    expect(blocks.map((b) => b.type)).toEqual(["retry", "text"]);
    expect(blocks[0]).toMatchObject({ type: "retry", attempt: 2, message: "HTTP 500 (2)", nextAt: 5002 });
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("finally");
  });

  it("keeps the same seq of two messages apart", () => {
    const t = new Transcript(S);
    t.addChunks([text(0, 0, "first"), text(1, 0, "second")]);
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("first");
    expect(Transcript.answerText(t.turn("msg_1")!)).toBe("second");
  });

  it("buffers chunks past a hole until the hole is filled", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "streaming"));
    expect(t.addChunks([text(0, 2, "C"), text(0, 1, "B")])).toEqual([]);
    const turn = t.turn("msg_0")!;
    expect(Transcript.answerText(turn)).toBe("");
    expect(t.hasGap(turn)).toBe(true);
    // A duplicate of a buffered chunk is still dropped.
    expect(t.addChunks([text(0, 2, "C")])).toEqual([]);
    const applied = t.addChunks([text(0, 0, "A")]);
    expect(applied.map((c) => c.seq)).toEqual([0, 1, 2]);
    expect(Transcript.answerText(turn)).toBe("ABC");
    expect(t.hasGap(turn)).toBe(false);
  });

  it("assembles the same answer whatever the order and repetition", () => {
    const chunks = Array.from({ length: 30 }, (_, i) => text(0, i, `${i};`));
    const expected = chunks.map((c) => (c.kind === "text" ? c.delta : "")).join("");
    // A fixed pseudo-random shuffle with repeats (deterministic test).
    let seed = 7;
    const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let round = 0; round < 20; round++) {
      const t = new Transcript(S);
      const stream = [...chunks, ...chunks.filter(() => rnd() < 0.3)].sort(() => rnd() - 0.5);
      for (let i = 0; i < stream.length; i += 3) t.addChunks(stream.slice(i, i + 3));
      expect(Transcript.answerText(t.turn("msg_0")!)).toBe(expected);
    }
  });

  it("ignores chunks of another session", () => {
    const t = new Transcript(S);
    t.addChunks([{ ...text(0, 0, "x"), session_id: "ses_other" }]);
    expect(t.turn("msg_0")).toBeUndefined();
  });

  it("builds tool, permission, question, edit, error and usage blocks", () => {
    const t = new Transcript(S);
    const base = { session_id: S, message_id: "msg_0" } as const;
    t.addChunks([
      { ...base, seq: 0, kind: "reasoning", part_id: "r", delta: "think" },
      { ...base, seq: 1, kind: "tool_call", part_id: "t", call_id: "c1", tool: "bash", status: "pending", input: { command: "ls" } },
      { ...base, seq: 2, kind: "permission_request", prompt_id: "per_1", permission: "bash", patterns: ["ls"], metadata: {}, call_id: "c1" },
      { ...base, seq: 3, kind: "permission_answer", prompt_id: "per_1", reply: "once" },
      { ...base, seq: 4, kind: "tool_call", part_id: "t", call_id: "c1", tool: "bash", status: "running", input: { command: "ls" }, title: "ls" },
      { ...base, seq: 5, kind: "tool_output", part_id: "t", call_id: "c1", delta: "a\n" },
      { ...base, seq: 6, kind: "tool_output", part_id: "t", call_id: "c1", delta: "b\n" },
      { ...base, seq: 7, kind: "tool_result", part_id: "t", call_id: "c1", status: "completed", metadata: { exit: 0 } },
      { ...base, seq: 8, kind: "file_edit", path: "x.rs", diff: "@@ -1 +1 @@\n-a\n+b\n", additions: 1, deletions: 1 },
      { ...base, seq: 9, kind: "question", prompt_id: "que_1", questions: [{ question: "Colour?", options: [{ label: "Blue" }] }] },
      { ...base, seq: 10, kind: "question_answer", prompt_id: "que_1", answers: [["Blue"]] },
      { ...base, seq: 11, kind: "step", reason: "stop", usage: { input: 10, output: 5, reasoning: 1, cache_read: 0, cache_write: 0, cost: 0.5 } },
      { ...base, seq: 12, kind: "step", reason: "stop", usage: { input: 1, output: 1, reasoning: 0, cache_read: 2, cache_write: 0, cost: 0.25 } },
      { ...base, seq: 13, kind: "error", message: "rate limited" },
    ]);
    const turn = t.turn("msg_0")!;
    expect(turn.blocks.map((b) => b.type)).toEqual(["reasoning", "tool", "permission", "file_edit", "question", "error"]);
    const tool = turn.blocks[1];
    expect(tool.type === "tool" && [tool.status, tool.output, tool.title]).toEqual(["completed", "a\nb\n", "ls"]);
    const perm = turn.blocks[2];
    expect(perm.type === "permission" && perm.reply).toBe("once");
    const q = turn.blocks[4];
    expect(q.type === "question" && [q.answered, q.answers, q.questions[0].question]).toEqual([true, [["Blue"]], "Colour?"]);
    expect(turn.usage).toEqual({ input: 11, output: 6, reasoning: 1, cache_read: 2, cache_write: 0, cost: 0.75 });
    expect(turn.steps).toBe(2);
  });

  it("skips chunk kinds it does not know", () => {
    const t = new Transcript(S);
    t.addChunks([
      { session_id: S, message_id: "msg_0", seq: 0, kind: "hologram" } as unknown as ChunkView,
      text(0, 1, "still here"),
    ]);
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("still here");
  });
});

describe("messages", () => {
  it("ignores an older update that arrives late", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { updated_at: 2000, chunk_count: 0 }));
    expect(t.addMessage(msg(0, "streaming", { updated_at: 1500 }))).toBe(false);
    expect(t.turn("msg_0")!.view!.status).toBe("complete");
  });

  it("prefers the further status when times are equal", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "streaming", { updated_at: 2000 }));
    expect(t.addMessage(msg(0, "dispatched", { updated_at: 2000 }))).toBe(false);
    expect(t.addMessage(msg(0, "complete", { updated_at: 2000 }))).toBe(true);
  });

  it("shows a local message until the server confirms it", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { chunk_count: 0 }));
    t.addLocal("msg_new", "hi", 5000);
    expect(t.ordered().map((x) => x.messageId)).toEqual(["msg_0", "msg_new"]);
    t.addMessage({ ...msg(1, "queued"), message_id: "msg_new", text: "hi" });
    const turn = t.turn("msg_new")!;
    expect(turn.local).toBeUndefined();
    expect(turn.view!.status).toBe("queued");
  });

  it("finds the running answer", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { chunk_count: 0 }));
    expect(t.running()).toBeUndefined();
    t.addMessage(msg(1, "streaming"));
    expect(t.running()!.messageId).toBe("msg_1");
  });
});

describe("cursor", () => {
  it("starts at the beginning", () => {
    expect(new Transcript(S).cursor()).toEqual({ message: 0, seq: 0 });
  });

  it("points at the first missing seq of a running answer", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "streaming"));
    t.addChunks([text(0, 0, "a"), text(0, 1, "b"), text(0, 3, "d")]);
    expect(t.cursor()).toEqual({ message: 0, seq: 2 });
  });

  it("moves past answers held whole", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { chunk_count: 2 }));
    t.addChunks([text(0, 0, "a"), text(0, 1, "b")]);
    expect(t.cursor()).toEqual({ message: 1, seq: 0 });
    t.addMessage(msg(1, "streaming"));
    t.addChunks([text(1, 0, "x")]);
    expect(t.cursor()).toEqual({ message: 1, seq: 1 });
  });

  it("stays on a final answer whose chunks are not all here", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { chunk_count: 3 }));
    t.addChunks([text(0, 0, "a")]);
    expect(t.cursor()).toEqual({ message: 0, seq: 1 });
  });

  it("stops at a message number it has not seen", () => {
    const t = new Transcript(S);
    t.addMessage(msg(0, "complete", { chunk_count: 0 }));
    t.addMessage(msg(2, "complete", { chunk_count: 0 }));
    expect(t.cursor()).toEqual({ message: 1, seq: 0 });
  });

  it("resumes without gap or duplicate when pages overlap live events", () => {
    // Live events up to seq 4, a drop, then a re-watch page from the cursor
    // that overlaps what arrived live meanwhile.
    const t = new Transcript(S);
    const page1: HistoryPage = {
      session: session(),
      messages: [msg(0, "streaming")],
      chunks: [text(0, 0, "0 "), text(0, 1, "1 ")],
      next: null,
    };
    t.applyPage(page1);
    t.addChunks([text(0, 2, "2 "), text(0, 4, "4 ")]); // 3 lost in the drop
    expect(t.cursor()).toEqual({ message: 0, seq: 3 });
    const page2: HistoryPage = {
      session: session(),
      messages: [msg(0, "complete", { chunk_count: 6, updated_at: 3000 })],
      chunks: [text(0, 3, "3 "), text(0, 4, "4 "), text(0, 5, "5")],
      next: null,
    };
    t.applyPage(page2);
    t.addChunks([text(0, 5, "5")]); // the live copy, late
    expect(Transcript.answerText(t.turn("msg_0")!)).toBe("0 1 2 3 4 5");
    expect(t.cursor()).toEqual({ message: 1, seq: 0 });
  });
});

describe("questions", () => {
  it("reads options as objects or strings, and multiple choice", () => {
    expect(
      parseQuestions([
        { question: "A?", header: "H", options: [{ label: "x", description: "d" }, "y"], multiple: true },
        "junk",
      ]),
    ).toEqual([
      {
        question: "A?",
        header: "H",
        options: [{ label: "x", description: "d" }, { label: "y" }],
        multiple: true,
      },
    ]);
    expect(parseQuestions({ questions: [{ question: "B?" }] })[0].question).toBe("B?");
    expect(parseQuestions(null)).toEqual([]);
  });
});
