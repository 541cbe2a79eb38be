// @vitest-environment jsdom
//
// A subagent's `subagent` chunks fold into one card of the answer (its
// latest header, its tool calls by part), and its permission prompt shows in
// the answer like any other, saying which subagent asks.

import { h, render } from "preact";
import { describe, expect, it } from "vitest";

import type { ChunkBody, ChunkView, MessageView } from "../../src/protocol";
import { Transcript, promptSubagent } from "../../src/lib/transcript";
import { TurnView, type TurnContext } from "../../src/ui/Turn";

const S = "ses_1";
const M = "msg_1";

function view(status: MessageView["status"]): MessageView {
  return { session_id: S, message_id: M, number: 0, text: "[subagent [bash echo hi]]", status, created_at: 1, updated_at: status === "complete" ? 3 : 2 };
}

type Body = ChunkBody;

function chunks(bodies: Body[], from = 0): ChunkView[] {
  return bodies.map((b, i) => ({ session_id: S, message_id: M, seq: from + i, ...b }) as ChunkView);
}

const header = { subagent_id: "ses_child", call_id: "call_task", agent: "general", description: "Say hi" };

const running: Body[] = [
  { kind: "tool_call", part_id: "prt_t", call_id: "call_task", tool: "task", status: "running", input: { description: "Say hi", prompt: "[bash echo hi]", subagent_type: "general" }, title: "Say hi" },
  { kind: "subagent", ...header, status: "running" },
  { kind: "subagent", ...header, status: "running", tool: { part_id: "prt_b", call_id: "call_bash", tool: "bash", status: "running", title: "echo hi" } },
  { kind: "permission_request", prompt_id: "per_1", permission: "bash", patterns: ["echo hi"], metadata: {}, call_id: "call_bash" },
];

const done: Body[] = [
  { kind: "permission_answer", prompt_id: "per_1", reply: "once" },
  { kind: "subagent", ...header, status: "running", tool: { part_id: "prt_b", call_id: "call_bash", tool: "bash", status: "completed", title: "echo hi" } },
  { kind: "subagent", ...header, status: "completed" },
  { kind: "tool_result", part_id: "prt_t", call_id: "call_task", status: "completed", metadata: {} },
  { kind: "text", part_id: "prt_x", delta: "The subagent said: Ran it. hi" },
];

const ctx: TurnContext = { answering: new Map(), workerOnline: true, sessionStarting: false, sessionClosed: false };

function show(t: Transcript): HTMLElement {
  const root = document.createElement("div");
  const turn = t.turn(M)!;
  render(h(TurnView, { turn, index: 0, ctx, stamp: String(turn.version) }), root);
  return root;
}

describe("subagent chunks", () => {
  it("fold into one block: the latest header, tool calls by part in order", () => {
    const t = new Transcript(S);
    t.addMessage(view("streaming"));
    t.addChunks(chunks([...running, ...done]));
    const blocks = t.turn(M)!.blocks.filter((b) => b.type === "subagent");
    expect(blocks).toHaveLength(1);
    const b = blocks[0];
    if (b.type !== "subagent") throw new Error("not a subagent");
    expect(b.status).toBe("completed");
    expect([b.agent, b.description, b.callId]).toEqual(["general", "Say hi", "call_task"]);
    expect(b.tools).toEqual([{ partId: "prt_b", callId: "call_bash", tool: "bash", status: "completed", title: "echo hi" }]);
  });

  it("tell which subagent a prompt comes from, and not for the agent's own calls", () => {
    const t = new Transcript(S);
    t.addMessage(view("streaming"));
    t.addChunks(chunks(running));
    const turn = t.turn(M)!;
    expect(promptSubagent(turn, "call_bash")?.agent).toBe("general");
    expect(promptSubagent(turn, undefined)).toBeUndefined();
    // The agent's own bash call with an id a subagent's call also has.
    t.addChunks(chunks([{ kind: "tool_call", part_id: "prt_own", call_id: "call_bash", tool: "bash", status: "running", input: {} }], running.length));
    expect(promptSubagent(turn, "call_bash")).toBeUndefined();
  });
});

describe("the subagent card", () => {
  it("shows agent, description, status and its tool calls; the prompt says who asks", () => {
    const t = new Transcript(S);
    t.addMessage(view("streaming"));
    t.addChunks(chunks(running));
    const root = show(t);
    const card = root.querySelector<HTMLDetailsElement>("details.subagent")!;
    expect(card).not.toBeNull();
    expect(card.getAttribute("aria-label")).toBe("Subagent general");
    expect(card.open).toBe(true);
    const summary = card.querySelector("summary")!.textContent!;
    expect(summary).toContain("general");
    expect(summary).toContain("Say hi");
    expect(summary).toContain("Running");
    const tools = [...card.querySelectorAll(".subagent-tool")].map((li) => li.textContent);
    expect(tools).toHaveLength(1);
    expect(tools[0]).toContain("bash");
    expect(tools[0]).toContain("echo hi");

    const prompt = root.querySelector('[aria-label="Permission request"]')!;
    expect(prompt.textContent).toContain("Asked by the subagent general: Say hi");
    const buttons = [...prompt.querySelectorAll("button")].map((b) => b.textContent);
    expect(buttons).toEqual(["Allow once", "Always allow", "Deny"]);
  });

  it("ends completed, its calls done; a running one in a finished answer shows stopped", () => {
    const t = new Transcript(S);
    t.addMessage(view("streaming"));
    t.addChunks(chunks([...running, ...done]));
    t.addMessage({ ...view("complete"), chunk_count: running.length + done.length });
    let root = show(t);
    let card = root.querySelector("details.subagent")!;
    expect(card.getAttribute("data-status")).toBe("completed");
    expect(card.querySelector("summary")!.textContent).toContain("Done");
    expect(card.querySelector(".subagent-tool")!.textContent).toContain("Done");
    expect(root.querySelector('[aria-label="Permission request"]')!.textContent).toContain("Allowed once");

    const cut = new Transcript(S);
    cut.addMessage(view("streaming"));
    cut.addChunks(chunks(running));
    cut.addMessage({ ...view("complete"), chunk_count: running.length });
    root = show(cut);
    card = root.querySelector("details.subagent")!;
    expect(card.querySelector("summary")!.textContent).toContain("Stopped");
  });

  it("shows why a subagent failed", () => {
    const t = new Transcript(S);
    t.addMessage(view("streaming"));
    t.addChunks(chunks([...running.slice(0, 2), { kind: "subagent", ...header, status: "error", error: "The user rejected permission to use this specific tool call." }]));
    const card = show(t).querySelector("details.subagent")!;
    expect(card.querySelector("summary")!.textContent).toContain("Failed");
    expect(card.textContent).toContain("rejected permission");
  });
});
