// The worker the browser tests talk to: a real `tether worker` process
// running real opencode, whose model is the project's scripted fake LLM
// (`tether-fakellm`). Each worker gets its own fake LLM process, a project
// directory with an `opencode.json` pointing the custom provider `fake` at
// it, its own opencode data, config and state (XDG_*), and its own worker
// config directory (the credential); opencode's download cache is shared
// ($HOME/.cache/tether/test-opencode-cache), as in the Rust agent tests.
//
// What the agent answers is chosen by directives in the message (see
// fakellm/src/lib.rs): `[tokens N]` says `w0 w1 … w(N-1)`, `[delay MS]`
// slows each piece, `[think]` adds reasoning, `[bash CMD]` runs a command
// after asking for permission and then says `Ran it. <first line>`,
// `[write PATH CONTENT]` writes a file, `[question]` asks one. Without
// directives it answers `Echo: <text>`, so markdown sent comes back as
// markdown.

import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, join } from "node:path";

import { tetherBinary } from "./server.mjs";

/** The model the fake provider offers, as the UI labels it. */
export const FAKE_MODEL = { provider_id: "fake", model_id: "fake-model", name: "Fake Model" };
export const FAKE_MODEL_LABEL = "Fake Model (fake)";
/** The worker's default: the `model` of its opencode.json. */
export const DEFAULT_MODEL = { provider_id: "fake", model_id: "fake-model" };

/** What the fake LLM says for `[tokens n]`. */
export function numberedText(n) {
  return Array.from({ length: n }, (_, i) => `w${i}`).join(" ");
}

/** The `tether-fakellm` binary next to `tether`. */
export function fakeLlmBinary() {
  if (process.env.TETHER_FAKELLM_BIN) return process.env.TETHER_FAKELLM_BIN;
  return join(tetherBinary(), "..", "tether-fakellm");
}

/** The opencode binary: `TETHER_TEST_OPENCODE`, or where `scripts/install-opencode` puts it. */
export function opencodeBinary() {
  return process.env.TETHER_TEST_OPENCODE ?? join(homedir(), ".cache/tether/opencode/node_modules/.bin/opencode");
}

function cleanEnv(extra) {
  const env = { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "info,tether_worker=debug" };
  for (const key of Object.keys(env)) if (key.startsWith("TETHER_")) delete env[key];
  return { ...env, ...extra };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows a child's stdout and stderr line by line: `waitFor(re, what)`
 * resolves with the match of the first line (past or future) matching `re`,
 * and rejects if the process exits first.
 */
function follow(child, onText = () => {}) {
  const lines = [];
  const waiters = new Set();
  let exited = null;
  for (const s of [child.stdout, child.stderr]) {
    let partial = "";
    s.setEncoding("utf8");
    s.on("data", (d) => {
      onText(d);
      partial += d;
      const parts = partial.split("\n");
      partial = parts.pop();
      for (const line of parts) {
        lines.push(line);
        for (const w of [...waiters]) w.line(line);
      }
    });
  }
  child.once("exit", (code, signal) => {
    exited = code ?? signal;
    for (const w of [...waiters]) w.exit();
  });
  return {
    text: () => lines.join("\n"),
    waitFor(re, what, timeout = 20_000) {
      return new Promise((resolve, reject) => {
        const w = {
          line(line) {
            const m = re.exec(line);
            if (m) done(() => resolve(m));
          },
          exit() {
            done(() => reject(new Error(`${what}: the process exited (${exited})\n${lines.join("\n")}`)));
          },
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`${what}: nothing after ${timeout} ms\n${lines.join("\n")}`))),
          timeout,
        );
        function done(f) {
          clearTimeout(timer);
          waiters.delete(w);
          f();
        }
        waiters.add(w);
        for (const line of lines) {
          const m = re.exec(line);
          if (m) return done(() => resolve(m));
        }
        if (exited != null) w.exit();
      });
    },
  };
}

async function kill(child, signal = "SIGKILL") {
  if (!child || child.exitCode != null || child.signalCode != null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill(signal);
  await exited;
}

/** A fake LLM process; resolves with { url, stop() }. */
async function startFakeLlm(logFile) {
  const child = spawn(fakeLlmBinary(), ["--port", "0", "--log", logFile], { stdio: ["ignore", "pipe", "pipe"] });
  child.once("error", () => {});
  const out = follow(child);
  const m = await out.waitFor(/fakellm listening on (http:\/\/\S+)/, "tether-fakellm", 10_000).catch((e) => {
    throw new Error(`${e.message}\n(build it with \`cargo build -p tether-fakellm\`)`);
  });
  return { url: m[1].replace(/\/$/, ""), stop: () => kill(child, "SIGTERM") };
}

/**
 * Starts a worker that has asked to pair with the host at `baseUrl`.
 * `machine` names the machine; the project directory is named after the
 * last part of `workdir` (default "project"). With `token` (a pairing
 * token, passed as `TETHER_PAIRING_TOKEN`) it is approved at once and
 * shows no code: `approvedBy` is the name it printed. With
 * `opencodeStartDelayMs` its `--opencode` is a script that waits that long
 * before it runs the real opencode, as a slow machine's first start does:
 * the worker says "starting" meanwhile (no product code is involved).
 * `extraModels` (opencode.json model entries by id) are offered beside the
 * fake model, by the same fake LLM.
 * Returns { code, approvedBy, workerId, machine, workdir, goOffline(), goOnline(), ready(), logs(), stop() }.
 */
export async function startWorker(baseUrl, { machine = "testbox", workdir = "project", token, opencodeStartDelayMs, extraModels = {} } = {}) {
  const root = mkdtempSync(join(tmpdir(), "tether-web-worker-"));
  const project = join(root, basename(workdir));
  const configDir = join(root, "worker-config");
  const xdg = join(root, "xdg");
  for (const d of [project, configDir, join(xdg, "data"), join(xdg, "config"), join(xdg, "state")]) {
    mkdirSync(d, { recursive: true });
  }
  const llm = await startFakeLlm(join(root, "llm-requests.jsonl"));
  const config = {
    $schema: "https://opencode.ai/config.json",
    provider: {
      fake: {
        npm: "@ai-sdk/openai-compatible",
        name: "Fake",
        options: { baseURL: `${llm.url}/v1`, apiKey: "test" },
        models: {
          "fake-model": {
            name: FAKE_MODEL.name,
            tool_call: true,
            reasoning: true,
            limit: { context: 128000, output: 8192 },
          },
          ...extraModels,
        },
      },
    },
    model: "fake/fake-model",
    // Only the fake provider: no models from opencode's own catalogue.
    enabled_providers: ["fake"],
    permission: { bash: "ask" },
  };
  writeFileSync(join(project, "opencode.json"), JSON.stringify(config, null, 2));
  const env = cleanEnv({
    XDG_DATA_HOME: join(xdg, "data"),
    XDG_CONFIG_HOME: join(xdg, "config"),
    XDG_STATE_HOME: join(xdg, "state"),
    XDG_CACHE_HOME: join(homedir(), ".cache/tether/test-opencode-cache"),
    OPENCODE_DISABLE_AUTOUPDATE: "1",
    ...(token ? { TETHER_PAIRING_TOKEN: token } : {}),
  });
  let opencode = opencodeBinary();
  if (opencodeStartDelayMs) {
    const slow = join(root, "slow-opencode");
    const seconds = (opencodeStartDelayMs / 1000).toFixed(3);
    writeFileSync(slow, `#!/bin/sh\nsleep ${seconds}\nexec '${opencode}' "$@"\n`, { mode: 0o755 });
    opencode = slow;
  }
  const args = [
    "worker",
    "--server",
    baseUrl,
    "--dir",
    project,
    "--machine",
    machine,
    "--opencode",
    opencode,
    "--config-dir",
    configDir,
    "--heartbeat-secs",
    "5",
  ];

  let log = "";
  const logs = () => log;
  const logFile = createWriteStream(join(root, "worker.log"));
  let child = null;
  let runs = 0;
  let readyPromise = null;

  /** Spawns the worker and follows its output. */
  function spawnWorker() {
    runs++;
    log += `----- tether worker (run ${runs}) -----\n`;
    const c = spawn(tetherBinary(), args, { env, cwd: project, stdio: ["ignore", "pipe", "pipe"] });
    c.once("error", (e) => (log += `cannot start: ${e.message}\n`));
    const out = follow(c, (d) => {
      log += d;
      logFile.write(d);
    });
    // opencode has started and the worker knows its models.
    readyPromise = out.waitFor(/opencode is ready/, "the worker's opencode", 60_000);
    readyPromise.catch(() => {});
    child = c;
    return out;
  }

  const first = spawnWorker();
  let code;
  let approvedBy;
  try {
    if (token) {
      approvedBy = (await first.waitFor(/approved by ([^:\s]+)/, "tether worker's approval with its token"))[1];
    } else {
      code = (await first.waitFor(/#\/pair\/([A-Z0-9]{4}-[A-Z0-9]{4})/, "tether worker's pairing code"))[1];
    }
  } catch (e) {
    await kill(child);
    await llm.stop();
    throw e;
  }
  // The worker saves its id next to its credential once the host has it.
  let workerId;
  for (let i = 0; i < 100 && !workerId; i++) {
    for (const f of readdirSync(configDir).filter((n) => n.endsWith(".json"))) {
      try {
        workerId = JSON.parse(readFileSync(join(configDir, f), "utf8")).worker_id ?? undefined;
      } catch {}
    }
    if (!workerId) await sleep(50);
  }
  if (!workerId) throw new Error(`the worker saved no id\n${log}`);

  return {
    code,
    approvedBy,
    workerId,
    machine,
    workdir: project,
    logs,
    /** Resolves once opencode is up and the worker knows its models. */
    ready: () => readyPromise,
    /** Kills the worker process (SIGKILL); opencode goes with it. */
    async goOffline() {
      await kill(child);
    },
    /** Starts the worker again with its stored credential; resolves once it is connected. */
    async goOnline() {
      await spawnWorker().waitFor(/connected to the host/, "the restarted worker");
    },
    async stop() {
      await kill(child);
      await llm.stop();
      logFile.end();
      if (!process.env.TETHER_KEEP_WORKER_DIRS) rmSync(root, { recursive: true, force: true });
    },
  };
}
