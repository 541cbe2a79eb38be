// `tether serve` as a process on a fresh data directory and port, and
// `tether user add` for its users.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const repo = resolve(here, "../../..");

/** The `tether` binary `cargo build -p tether-local` made. */
export function tetherBinary() {
  if (process.env.TETHER_BIN) return process.env.TETHER_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  return join(target, "debug", "tether");
}

/** Settings come from flags alone, whatever this environment holds. */
function cleanEnv() {
  const env = { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "info" };
  for (const key of Object.keys(env)) if (key.startsWith("TETHER_") && key !== "TETHER_BIN") delete env[key];
  return env;
}

export async function startServer({ extraArgs = [] } = {}) {
  const root = mkdtempSync(join(tmpdir(), "tether-web-e2e-"));
  const dataDir = join(root, "data");
  const bin = tetherBinary();
  const child = spawn(bin, ["serve", "--bind", "127.0.0.1:0", "--data-dir", dataDir, ...extraArgs], {
    env: cleanEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = [];
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    log.push(d);
    if (log.length > 2000) log.splice(0, 1000);
  });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`tether serve printed no address in 15 s\n${log.join("")}`)), 15_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${e.message} (build it with \`cargo build -p tether-local\`)`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tether serve exited (${code})\n${log.join("")}`));
    });
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const m = /tether listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ""));
      }
    });
  });

  return {
    url,
    dataDir,
    logs: () => log.join(""),
    /** `tether user add NAME`: the new user's secret. */
    addUser(name, { admin = false } = {}) {
      const args = ["user", "add", name, "--data-dir", dataDir, ...(admin ? ["--admin"] : [])];
      return new Promise((resolveSecret, reject) => {
        execFile(bin, args, { env: cleanEnv() }, (err, stdout, stderr) => {
          if (err) return reject(new Error(`tether user add ${name} failed: ${err.message}\n${stderr}`));
          const m = /(tsk_[A-Za-z0-9_-]+)/.exec(stdout);
          if (!m) return reject(new Error(`tether user add printed no secret:\n${stdout}`));
          resolveSecret(m[1]);
        });
      });
    },
    async stop() {
      if (child.exitCode == null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
}
