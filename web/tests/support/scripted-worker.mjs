// A worker that speaks the real protocol but answers from a script instead
// of running opencode: it pairs over HTTP, connects with its credential,
// says hello with models, makes sessions ready, and streams scripted
// answers as several `chunks` frames over time (text with markdown and a
// code block, reasoning, a tool call with output, a file edit, a permission
// request that waits for the user's answer, usage), honouring aborts.
//
// Which answer it gives depends on the message text (see `scriptFor`), so a
// test picks behaviour by what it types. The browser tests reach it only
// through `tests/support/worker.mjs`, so the real worker can replace it.

import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import WebSocket from "ws";

export const SCRIPTED_MODELS = [
  { provider_id: "anthropic", model_id: "claude-sonnet-4", name: "Claude Sonnet 4", reasoning: true },
  { provider_id: "openai", model_id: "gpt-5", name: "GPT-5", reasoning: true },
  { provider_id: "local", model_id: "qwen-coder", name: "Qwen Coder (local)" },
];
export const SCRIPTED_DEFAULT = { provider_id: "anthropic", model_id: "claude-sonnet-4" };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Splits text into pieces of about `size` characters (on spaces where it can). */
function pieces(text, size = 18) {
  const out = [];
  let rest = text;
  while (rest.length > size) {
    let cut = rest.lastIndexOf(" ", size);
    if (cut < size / 2) cut = size;
    out.push(rest.slice(0, cut + 1));
    rest = rest.slice(cut + 1);
  }
  if (rest) out.push(rest);
  return out;
}

const FENCE = "```";

/** The scripted answer to a message: a list of steps. */
export function scriptFor(text) {
  const lower = text.toLowerCase();
  const steps = [];
  const textSteps = (part, body, size, perFrame = 2) => {
    const ps = pieces(body, size);
    for (let i = 0; i < ps.length; i += perFrame) {
      steps.push({ chunks: ps.slice(i, i + perFrame).map((delta) => ({ kind: "text", part_id: part, delta })) });
    }
  };
  const usage = (input, output, reasoning, cost) => ({
    chunks: [
      {
        kind: "step",
        reason: "stop",
        usage: { input, output, reasoning, cache_read: 0, cache_write: 0, cost },
      },
    ],
  });

  if (lower.includes("slow") || lower.includes("long")) {
    // A long answer streamed slowly: for aborting and for dropped connections.
    steps.push({ chunks: [{ kind: "reasoning", part_id: "prt_r", delta: "Counting slowly, one line at a time." }] });
    const lines = [];
    for (let i = 1; i <= 40; i++) lines.push(`Line ${i} of the slow answer.`);
    for (const line of lines) {
      steps.push({ chunks: [{ kind: "text", part_id: "prt_t", delta: `${line}\n\n` }], pause: 2 });
    }
    steps.push(usage(900, 1200, 40, 0.0123));
    return steps;
  }

  if (lower.includes("permission") || lower.includes("run the tests")) {
    steps.push({ chunks: [{ kind: "reasoning", part_id: "prt_r", delta: "I should run the test suite to see what fails." }] });
    textSteps("prt_a", "Let me run the tests first.", 14);
    steps.push({
      chunks: [
        {
          kind: "tool_call",
          part_id: "prt_tool",
          call_id: "call_tests",
          tool: "bash",
          status: "pending",
          input: { command: "cargo test --workspace", description: "Run the tests" },
        },
      ],
    });
    steps.push({
      permission: {
        permission: "bash",
        patterns: ["cargo test --workspace"],
        metadata: { command: "cargo test --workspace" },
        call_id: "call_tests",
      },
    });
    steps.push({
      chunks: [
        {
          kind: "tool_call",
          part_id: "prt_tool",
          call_id: "call_tests",
          tool: "bash",
          status: "running",
          input: { command: "cargo test --workspace", description: "Run the tests" },
          title: "cargo test --workspace",
        },
      ],
    });
    steps.push({ chunks: [{ kind: "tool_output", part_id: "prt_tool", call_id: "call_tests", delta: "running 12 tests\n" }] });
    steps.push({
      chunks: [
        {
          kind: "tool_output",
          part_id: "prt_tool",
          call_id: "call_tests",
          delta: "test result: ok. 12 passed; 0 failed; finished in 0.42s\n",
        },
        { kind: "tool_result", part_id: "prt_tool", call_id: "call_tests", status: "completed", metadata: { exit: 0 } },
      ],
    });
    textSteps("prt_b", "All **12 tests pass**, so the flaky failure is not reproducible right now.", 16);
    steps.push(usage(2400, 310, 60, 0.0067));
    return steps;
  }

  if (lower.includes("huge")) {
    // A big tool output (about 160 KB): its history takes several pages.
    textSteps("prt_a", "Listing every row:", 20);
    steps.push({
      chunks: [
        { kind: "tool_call", part_id: "prt_big", call_id: "call_big", tool: "bash", status: "running", input: { command: "seq-rows 2000" } },
      ],
    });
    for (let block = 0; block < 20; block++) {
      let delta = "";
      for (let i = block * 100 + 1; i <= block * 100 + 100; i++) delta += `row ${String(i).padStart(4, "0")}: ${"x".repeat(68)}\n`;
      steps.push({ chunks: [{ kind: "tool_output", part_id: "prt_big", call_id: "call_big", delta }], pause: 0.2 });
    }
    steps.push({
      chunks: [{ kind: "tool_result", part_id: "prt_big", call_id: "call_big", status: "completed", metadata: { exit: 0 } }],
    });
    textSteps("prt_b", "That was all 2000 rows.", 20);
    steps.push(usage(300, 40000, 0, 0.09));
    return steps;
  }

  if (lower.includes("evil")) {
    // Markup an agent might echo from a web page: none of it may run.
    steps.push({
      chunks: [
        {
          kind: "text",
          part_id: "prt_a",
          delta:
            "Safe **bold**, a [good link](https://example.com/docs) and a [bad link](javascript:window.__xss=1).\n\n" +
            '<img src="x" onerror="window.__xss=2">\n\n' +
            "<script>window.__xss=3</script>\n\n" +
            '<a href="#" onclick="window.__xss=4">click me</a>\n\n' +
            '<iframe src="https://example.com"></iframe>\n\nThe end.',
        },
      ],
    });
    steps.push(usage(10, 10, 0, 0));
    return steps;
  }

  if (lower.includes("question")) {
    textSteps("prt_a", "Before I change anything:", 14);
    steps.push({
      question: [
        {
          question: "Which colour should the button be?",
          header: "Style",
          options: [{ label: "Blue", description: "the brand colour" }, { label: "Green" }],
        },
      ],
    });
    textSteps("prt_b", "Done: the button uses the colour you picked.", 16);
    steps.push(usage(800, 120, 0, 0.0021));
    return steps;
  }

  // The full answer: reasoning, markdown with a code block, a tool call with
  // output, a file edit, a summary, usage.
  steps.push({
    chunks: [{ kind: "reasoning", part_id: "prt_r", delta: "The user wants to know why the test hangs. " }],
  });
  steps.push({
    chunks: [{ kind: "reasoning", part_id: "prt_r", delta: "The server in the test never closes its socket." }],
  });
  textSteps(
    "prt_a",
    "The test **hangs** because the test server never closes its socket, so `accept()` waits forever. Here is the fix:\n\n",
    22,
  );
  textSteps(
    "prt_a",
    `${FENCE}rust\nfn shutdown(listener: TcpListener) {\n    drop(listener); // closes the socket\n}\n${FENCE}\n\n`,
    26,
  );
  steps.push({
    chunks: [
      {
        kind: "tool_call",
        part_id: "prt_grep",
        call_id: "call_grep",
        tool: "grep",
        status: "running",
        input: { pattern: "TcpListener::bind", path: "src" },
        title: "TcpListener::bind in src",
      },
    ],
  });
  steps.push({
    chunks: [
      {
        kind: "tool_output",
        part_id: "prt_grep",
        call_id: "call_grep",
        delta: "src/server.rs:14:    let listener = TcpListener::bind(addr)?;\n",
      },
      { kind: "tool_result", part_id: "prt_grep", call_id: "call_grep", status: "completed", metadata: { matches: 1 } },
    ],
  });
  steps.push({
    chunks: [
      {
        kind: "file_edit",
        path: "src/server.rs",
        diff: "@@ -12,4 +12,5 @@ pub fn serve(addr: SocketAddr) {\n     let listener = TcpListener::bind(addr)?;\n-    loop {\n+    for stream in listener.incoming() {\n+        handle(stream?);\n     }\n }\n",
        additions: 2,
        deletions: 1,
      },
    ],
  });
  textSteps("prt_b", "I changed `src/server.rs` so the listener is dropped when the loop ends.", 18);
  steps.push(usage(1200, 340, 80, 0.0042));
  return steps;
}

/**
 * Starts a scripted worker against a running host: pairs (POST /api/pair)
 * and connects. Approve it with `worker.code`; it becomes online by itself.
 */
export async function startScriptedWorker({
  baseUrl,
  machine = "laptop",
  workdir = "/home/ada/src/app",
  name,
  models = SCRIPTED_MODELS,
  defaultModel = SCRIPTED_DEFAULT,
  pace = 110,
} = {}) {
  const w = new ScriptedWorker({ baseUrl, machine, workdir, name, models, defaultModel, pace });
  await w.pair();
  await w.connect();
  return w;
}

export class ScriptedWorker extends EventEmitter {
  constructor(opts) {
    super();
    Object.assign(this, opts);
    // 32 random bytes, base64url: 43 characters.
    this.credential = randomBytes(32).toString("base64url");
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.taken = new Set();
    this.running = new Map(); // message_id -> { aborted, session_id, wake }
    this.prompts = new Map(); // prompt_id -> resolve(answer)
    this.sessions = new Map(); // session_id -> agent session id
    this.heartbeat = null;
    this.status = "unpaired";
    this.received = [];
  }

  async pair() {
    const res = await fetch(`${this.baseUrl}/api/pair`, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.credential}`, "Content-Type": "application/json" },
      body: JSON.stringify({ machine: this.machine, workdir: this.workdir, ...(this.name ? { name: this.name } : {}) }),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`pairing failed: ${res.status} ${JSON.stringify(body)}`);
    this.workerId = body.worker_id;
    this.code = body.code;
    this.status = body.status;
    return body;
  }

  /** Opens the websocket and says hello; resolves with the hello reply. */
  async connect() {
    const url = `${this.baseUrl.replace(/^http/, "ws")}/ws?v=1`;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${this.credential}` } });
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`worker refused: HTTP ${res.statusCode}`)));
    });
    ws.on("message", (data) => this.onFrame(String(data)));
    ws.on("close", () => {
      if (this.ws === ws) this.ws = null;
      clearInterval(this.heartbeat);
      for (const p of this.pending.values()) p.reject(new Error("worker socket closed"));
      this.pending.clear();
    });
    const reply = await this.hello();
    const every = reply.data?.heartbeat_ms ?? 60_000;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.call("ping", {}).catch(() => {}), every);
    return reply;
  }

  hello() {
    return this.call("worker_hello", {
      machine: this.machine,
      workdir: this.workdir,
      ...(this.name ? { name: this.name } : {}),
      version: "scripted",
      models: this.models,
      default_model: this.defaultModel,
      active_messages: [...this.running.keys()],
    });
  }

  /** Closes the socket (the worker goes offline). */
  async disconnect() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    clearInterval(this.heartbeat);
    await new Promise((resolve) => {
      ws.once("close", resolve);
      ws.close(1000, "bye");
    });
  }

  async stop() {
    for (const r of this.running.values()) r.aborted = true;
    await this.disconnect();
  }

  call(action, fields) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("worker not connected"));
    const id = `w${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ action, id, ...fields }));
    });
  }

  async callOk(action, fields) {
    const reply = await this.call(action, fields);
    if (!reply.ok) throw new Error(`${action} refused: ${JSON.stringify(reply.error)}`);
    return reply.data;
  }

  onFrame(text) {
    const frame = JSON.parse(text);
    if (frame.type === "reply") {
      const p = this.pending.get(frame.id);
      if (p) {
        this.pending.delete(frame.id);
        p.resolve(frame);
      }
      return;
    }
    this.received.push(frame);
    this.emit(frame.type, frame);
    switch (frame.type) {
      case "pairing_status":
        this.status = frame.status;
        if (frame.status === "approved") this.hello().catch(() => {});
        break;
      case "session_start":
        this.onSessionStart(frame).catch((e) => this.emit("failure", e));
        break;
      case "message_dispatch":
        if (this.taken.has(frame.message_id)) return;
        this.taken.add(frame.message_id);
        this.answer(frame).catch((e) => this.emit("failure", e));
        break;
      case "message_abort": {
        const r = this.running.get(frame.message_id);
        if (r) {
          r.aborted = true;
          r.wake?.();
        }
        break;
      }
      case "session_end":
        for (const r of this.running.values()) {
          if (r.session_id === frame.session_id) {
            r.aborted = true;
            r.wake?.();
          }
        }
        break;
      case "prompt_answer": {
        const resolve = this.prompts.get(frame.prompt_id);
        this.callOk("prompt_delivered", { prompt_id: frame.prompt_id }).catch(() => {});
        if (resolve) {
          this.prompts.delete(frame.prompt_id);
          resolve(frame.answer);
        }
        break;
      }
      default:
        break;
    }
  }

  async onSessionStart(frame) {
    const agent = `ag_${randomBytes(6).toString("hex")}`;
    this.sessions.set(frame.session_id, agent);
    await sleep(60);
    await this.callOk("session_ready", { session_id: frame.session_id, agent_session_id: agent });
  }

  async answer(frame) {
    const id = frame.message_id;
    const run = { aborted: false, session_id: frame.session_id, wake: null, seq: 0 };
    this.running.set(id, run);
    const pause = (ms) =>
      new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        run.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    const send = async (bodies) => {
      const chunks = bodies.map((b) => ({ seq: run.seq++, ...b }));
      await this.callOk("chunks", { message_id: id, chunks });
    };
    try {
      await this.callOk("message_started", { message_id: id });
      await pause(this.pace);
      for (const step of scriptFor(frame.text)) {
        if (run.aborted) break;
        if (step.chunks) {
          await send(step.chunks);
          await pause(this.pace * (step.pause ?? 1));
        } else if (step.permission || step.question) {
          const prompt_id = `${step.permission ? "per" : "que"}_${randomBytes(5).toString("hex")}`;
          const answered = new Promise((resolve) => this.prompts.set(prompt_id, resolve));
          await send([
            step.permission
              ? { kind: "permission_request", prompt_id, ...step.permission }
              : { kind: "question", prompt_id, questions: step.question },
          ]);
          this.emit("prompt", { prompt_id, message_id: id });
          const answer = await Promise.race([
            answered,
            new Promise((resolve) => {
              run.wake = () => resolve(null);
            }),
          ]);
          if (!answer || run.aborted) break;
          if (answer.kind === "permission") {
            await send([{ kind: "permission_answer", prompt_id, reply: answer.reply }]);
            if (answer.reply === "reject") {
              await send([
                { kind: "tool_result", part_id: "prt_tool", call_id: step.permission.call_id, status: "error", error: "permission denied", metadata: {} },
                { kind: "text", part_id: "prt_denied", delta: "Understood, I will not run it." },
              ]);
              break;
            }
          } else if (answer.kind === "question") {
            await send([{ kind: "question_answer", prompt_id, answers: answer.answers }]);
          } else {
            await send([{ kind: "question_answer", prompt_id }]);
          }
          await pause(this.pace);
        }
      }
      const outcome = run.aborted ? "aborted" : "complete";
      await this.callOk("message_complete", { message_id: id, outcome, chunk_count: run.seq });
      this.emit("complete", { message_id: id, outcome, chunk_count: run.seq });
    } finally {
      this.running.delete(id);
    }
  }
}
