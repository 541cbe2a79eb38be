// The app's state (signals) and everything that changes it: the websocket
// client's events and the user's actions.

import { batch, computed, signal } from "@preact/signals";
import { MAX_FRAME_BYTES, MAX_TEXT_BYTES } from "../protocol/limits";
import { useEffect } from "preact/hooks";

import type {
  ChunkView,
  MachineView,
  MeData,
  MessageView,
  ModelRef,
  PairingTokenData,
  PromptAnswer,
  SessionView,
  WorkerView,
} from "../protocol";
import { normalizeCode, randomId } from "../lib/format";
import { type SecretStores, clearSecret, loadSecret, saveSecret } from "../lib/secret";
import { Transcript, isFinal } from "../lib/transcript";
import { ApiError, Client, type ConnState, DISCONNECTED } from "../net/client";
import type { ServerEvent } from "../net/replies";
import { askNotificationPermission, attention } from "./attention";
import { href, parseRoute, type Route } from "./route";

const THEME_KEY = "tether.theme";

/** The browser's storages for the secret (see lib/secret). */
function secretStores(): SecretStores {
  const get = (name: "sessionStorage" | "localStorage") => {
    try {
      return window[name];
    } catch {
      return null; // Storage disabled: the secret lasts as long as the page.
    }
  };
  return { session: get("sessionStorage"), local: get("localStorage") };
}

function load(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function save(key: string, value: string | null): void {
  try {
    if (value == null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // Private mode without storage: the value lasts as long as the page.
  }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

export const secret = signal<string | null>(loadSecret(secretStores()));
export const authError = signal<string | null>(null);
export const me = signal<MeData | null>(null);
export const conn = signal<ConnState>({ status: "idle", attempts: 0, everOpened: false });
export const machines = signal<MachineView[]>([]);
export const machinesLoaded = signal(false);
export const sessionMap = signal<ReadonlyMap<string, SessionView>>(new Map());
export const sessionsLoaded = signal(false);
/** Pending pairings nobody has claimed; `null` unless the user is an admin. */
export const pendingPairings = signal<WorkerView[] | null>(null);
export const route = signal<Route>(parseRoute(location.hash));
export const drawerOpen = signal(false);
/** Ticks so relative times ("2 min ago") stay true. */
export const now = signal(Date.now());
export const newSessionDialog = signal<{ workerId?: string } | null>(null);

export type Theme = "light" | "dark";
export const themeChoice = signal<Theme | null>(load(THEME_KEY) as Theme | null);
const systemDark = window.matchMedia?.("(prefers-color-scheme: dark)");
export const systemTheme = signal<Theme>(systemDark?.matches ? "dark" : "light");
export const theme = computed<Theme>(() => themeChoice.value ?? systemTheme.value);

export interface Toast {
  id: number;
  kind: "info" | "error" | "success";
  text: string;
}
export const toasts = signal<Toast[]>([]);

export interface ConfirmRequest {
  title: string;
  body: string;
  confirmLabel: string;
  danger?: boolean;
  resolve: (ok: boolean) => void;
}
export const confirmRequest = signal<ConfirmRequest | null>(null);

export interface ChatState {
  sessionId: string;
  transcript: Transcript;
  status: "loading" | "ready" | "not_found" | "error";
  error?: string;
  /** Messages sent but not confirmed: resent after a reconnect (same id, so harmless). */
  outbox: Map<string, Outgoing>;
  /** Prompts answered from this page, awaiting the worker's answer chunk. */
  answering: Map<string, string>;
}
export const chat = signal<ChatState | null>(null);

/** A message on its way: its text and the model chosen for it, if any. */
export interface Outgoing {
  text: string;
  model?: ModelRef;
}

const MODEL_KEY = "tether.model.";

/** The model chosen in the composer, per session (kept in this browser); none: the session's. */
export const modelChoices = signal<Map<string, ModelRef>>(new Map());

/** The model the composer sends the session's next message for; `null`: the session's own. */
export function chosenModel(sessionId: string): ModelRef | null {
  const held = modelChoices.value.get(sessionId);
  if (held) return held;
  const stored = load(MODEL_KEY + sessionId);
  if (!stored) return null;
  try {
    const m = JSON.parse(stored) as ModelRef;
    return typeof m?.provider_id === "string" && typeof m?.model_id === "string" ? m : null;
  } catch {
    return null;
  }
}

/** Picks the model for the session's next messages; `null` (or its own) goes back to the session's. */
export function chooseModel(sessionId: string, model: ModelRef | null): void {
  const next = new Map(modelChoices.value);
  if (model) next.set(sessionId, model);
  else next.delete(sessionId);
  modelChoices.value = next;
  save(MODEL_KEY + sessionId, model ? JSON.stringify(model) : null);
}

function sameModel(a: ModelRef | null | undefined, b: ModelRef | null | undefined): boolean {
  return !!a && !!b && a.provider_id === b.provider_id && a.model_id === b.model_id;
}
/** Bumped whenever the open transcript changes. */
export const chatVersion = signal(0);

export const workers = computed(() => {
  const map = new Map<string, WorkerView>();
  for (const m of machines.value) for (const w of m.workers) map.set(w.worker_id, w);
  return map;
});

export const sessions = computed(() =>
  [...sessionMap.value.values()].sort((a, b) => b.created_at - a.created_at),
);

export const onlineWorkers = computed(() =>
  [...workers.value.values()].filter((w) => w.status === "approved" && w.online),
);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

let toastId = 0;
export function toast(text: string, kind: Toast["kind"] = "info"): void {
  const id = ++toastId;
  toasts.value = [...toasts.value, { id, kind, text }];
  setTimeout(() => dismissToast(id), kind === "error" ? 8000 : 4000);
}

export function dismissToast(id: number): void {
  toasts.value = toasts.value.filter((t) => t.id !== id);
}

export function confirm(req: Omit<ConfirmRequest, "resolve">): Promise<boolean> {
  return new Promise((resolve) => {
    confirmRequest.value = { ...req, resolve };
  });
}

export function navigate(to: Route): void {
  const target = href(to);
  if (location.hash !== target) location.hash = target;
  else route.value = to;
  drawerOpen.value = false;
}

export function setTheme(t: Theme): void {
  themeChoice.value = t;
  save(THEME_KEY, t);
}

export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.code === DISCONNECTED) return "Not connected to the host. Try again when the connection is back.";
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/**
 * Marks the open transcript changed. Many chunk events can arrive within one
 * frame: they cause one render.
 */
let bumpScheduled = false;
function bump(): void {
  if (bumpScheduled) return;
  bumpScheduled = true;
  const run = () => {
    bumpScheduled = false;
    chatVersion.value++;
  };
  if (document.visibilityState === "visible" && typeof requestAnimationFrame === "function") {
    requestAnimationFrame(run);
  } else {
    setTimeout(run, 100);
  }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

export const client = new Client({
  secret: () => secret.value,
  onEvent: (e) => handleEvent(e),
  onOpen: (m) => restore(m),
  onState: (s) => {
    conn.value = s;
  },
  onUnauthorized: (message) => signOut(message),
});

/**
 * Checks a secret by asking for a ticket, then keeps it (for this tab only,
 * unless `remember`: then on this device) and connects.
 */
export async function signIn(candidate: string, remember = false): Promise<void> {
  const value = candidate.trim();
  if (!value) throw new Error("Enter your secret.");
  let res: Response;
  try {
    res = await fetch("/api/ticket", {
      method: "POST",
      headers: { Authorization: `Bearer ${value}` },
      cache: "no-store",
    });
  } catch {
    throw new Error("Cannot reach the host. Is it running?");
  }
  if (res.status === 401) throw new Error("That secret was not accepted. Check it and try again.");
  if (!res.ok) throw new Error(`The host answered ${res.status}. Try again in a moment.`);
  saveSecret(secretStores(), value, remember);
  batch(() => {
    authError.value = null;
    secret.value = value;
  });
  client.start();
}

export function signOut(reason?: string): void {
  client.stop();
  clearSecret(secretStores());
  batch(() => {
    secret.value = null;
    authError.value = reason ?? null;
    me.value = null;
    machines.value = [];
    machinesLoaded.value = false;
    sessionMap.value = new Map();
    sessionsLoaded.value = false;
    pendingPairings.value = null;
    chat.value = null;
    newSessionDialog.value = null;
  });
}

/** After every (re)connection: reload the lists, re-watch the open session, resend. */
async function restore(m: MeData): Promise<void> {
  me.value = m;
  const jobs: Promise<unknown>[] = [loadMachines(), loadSessions(), loadPending()];
  const c = chat.value;
  // A re-watch after a drop announces what it brings (a prompt that came
  // meanwhile); the first load of a session does not.
  if (c && c.status !== "not_found") jobs.push(watch(c, c.status === "ready"));
  await Promise.all(jobs);
}

export async function loadMachines(): Promise<void> {
  try {
    const data = await client.request({ action: "machine_list" });
    batch(() => {
      machines.value = sortMachines(data.machines);
      machinesLoaded.value = true;
    });
  } catch (e) {
    if (!(e instanceof ApiError && e.code === DISCONNECTED)) toast(errorMessage(e), "error");
  }
}

export async function loadSessions(workerId?: string): Promise<void> {
  try {
    const data = await client.request({
      action: "session_list",
      worker_id: workerId,
      limit: 100,
    });
    batch(() => {
      upsertSessions(data.sessions);
      if (!workerId) sessionsLoaded.value = true;
    });
  } catch (e) {
    if (!(e instanceof ApiError && e.code === DISCONNECTED)) toast(errorMessage(e), "error");
  }
}

/**
 * Pending pairings have no owner yet, so no event announces them: screens
 * that show them poll while they are open (admins only; others skip it).
 */
export function usePendingPoll(open: boolean): void {
  useEffect(() => {
    if (!open || pendingPairings.value === null) return;
    void loadPending();
    const t = setInterval(() => {
      if (document.visibilityState === "visible") void loadPending();
    }, 10_000);
    return () => clearInterval(t);
  }, [open]);
}

/** Pages of `pairing_list` read at most: a screenful of pending workers. */
const PENDING_PAGES = 4;

export async function loadPending(): Promise<void> {
  try {
    const workers: WorkerView[] = [];
    let page = await client.request({ action: "pairing_list" });
    workers.push(...page.workers);
    for (let i = 1; page.next && i < PENDING_PAGES; i++) {
      page = await client.request({ action: "pairing_list", after: page.next });
      workers.push(...page.workers);
    }
    pendingPairings.value = workers;
  } catch (e) {
    // `forbidden`: not an admin, who sees only pairings they have a code for.
    pendingPairings.value = null;
    if (e instanceof ApiError && e.code !== "forbidden" && e.code !== DISCONNECTED) {
      toast(errorMessage(e), "error");
    }
  }
}

function sortMachines(list: MachineView[]): MachineView[] {
  return [...list]
    .map((m) => ({ ...m, workers: [...m.workers].sort((a, b) => a.name.localeCompare(b.name)) }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function upsertWorker(w: WorkerView): void {
  const list = machines.value.map((m) => ({
    ...m,
    workers: m.workers.filter((x) => x.worker_id !== w.worker_id),
  }));
  let machine = list.find((m) => m.name === w.machine);
  if (!machine) {
    machine = { name: w.machine, online: false, workers: [] };
    list.push(machine);
  }
  machine.workers.push(w);
  for (const m of list) m.online = m.workers.some((x) => x.online);
  machines.value = sortMachines(list.filter((m) => m.workers.length > 0));
  if (pendingPairings.value && w.status !== "pending") {
    pendingPairings.value = pendingPairings.value.filter((p) => p.worker_id !== w.worker_id);
  }
}

function upsertSessions(list: SessionView[]): void {
  const map = new Map(sessionMap.value);
  for (const s of list) {
    const old = map.get(s.session_id);
    if (!old || s.updated_at >= old.updated_at) map.set(s.session_id, s);
  }
  sessionMap.value = map;
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

function handleEvent(e: ServerEvent): void {
  switch (e.type) {
    case "worker_updated":
      upsertWorker(e.worker);
      break;
    case "session_updated": {
      upsertSessions([e.session]);
      const c = chat.value;
      if (c && c.transcript.setSession(e.session)) bump();
      break;
    }
    case "message_updated": {
      const c = chat.value;
      if (!c) break;
      const before = c.transcript.turn(e.message.message_id)?.view?.status;
      if (c.transcript.addMessage(e.message)) {
        bump();
        if (before && !isFinal(before) && isFinal(e.message.status)) announceEnd(c, e.message);
      }
      break;
    }
    case "chunks": {
      const c = chat.value;
      if (!c || e.session_id !== c.sessionId) break;
      const applied = c.transcript.addChunks(e.chunks);
      bump();
      announceChunks(c, applied);
      break;
    }
    default:
      break;
  }
}

function sessionLabel(c: ChatState): string {
  return c.transcript.session?.title || "Tether session";
}

function announceChunks(c: ChatState, applied: ChunkView[]): void {
  for (const ch of applied) {
    if (ch.kind === "permission_request") {
      const what = ch.patterns.length ? `${ch.permission}: ${ch.patterns.join(", ")}` : ch.permission;
      attention("Permission needed", `${sessionLabel(c)} — ${what}`, `prompt-${ch.prompt_id}`);
    } else if (ch.kind === "question") {
      attention("The agent has a question", sessionLabel(c), `prompt-${ch.prompt_id}`);
    } else if (ch.kind === "permission_answer" || ch.kind === "question_answer") {
      c.answering.delete(ch.prompt_id);
    }
  }
}

function announceEnd(c: ChatState, m: MessageView): void {
  if (m.status === "complete") attention("Answer ready", sessionLabel(c), `done-${m.message_id}`);
  else if (m.status === "failed") attention("Answer failed", m.error ?? sessionLabel(c), `done-${m.message_id}`);
}

// ---------------------------------------------------------------------------
// Sessions and chat
// ---------------------------------------------------------------------------

/** Opens (or keeps) the chat for the session the route names. */
export function openChat(sessionId: string | null): void {
  const current = chat.value;
  if (current?.sessionId === sessionId) return;
  if (current && client.isOpen) {
    client.request({ action: "session_unwatch", session_id: current.sessionId }).catch(() => {});
  }
  if (!sessionId) {
    chat.value = null;
    return;
  }
  const next: ChatState = {
    sessionId,
    transcript: new Transcript(sessionId),
    status: "loading",
    outbox: new Map(),
    answering: new Map(),
  };
  const known = sessionMap.value.get(sessionId);
  if (known) next.transcript.setSession(known);
  chat.value = next;
  bump();
  if (client.isOpen) void watch(next, false);
}

/**
 * `session_watch` from the transcript's cursor, then `session_history`
 * pages until `next` is null; then resends what is still unconfirmed.
 */
async function watch(c: ChatState, resumed: boolean): Promise<void> {
  const cursor = c.transcript.cursor();
  const after = cursor.message === 0 && cursor.seq === 0 ? undefined : cursor;
  try {
    let page = await client.request({ action: "session_watch", session_id: c.sessionId, after });
    for (;;) {
      if (chat.value !== c) return;
      const applied = c.transcript.applyPage(page);
      upsertSessions([page.session]);
      c.status = "ready";
      bump();
      if (resumed) announceChunks(c, applied);
      if (!page.next) break;
      page = await client.request({ action: "session_history", session_id: c.sessionId, after: page.next });
    }
  } catch (e) {
    if (chat.value !== c) return;
    if (e instanceof ApiError && e.code === "not_found") {
      c.status = "not_found";
      bump();
      return;
    }
    if (e instanceof ApiError && e.code === DISCONNECTED) return;
    c.status = "error";
    c.error = errorMessage(e);
    bump();
    return;
  }
  for (const [id, out] of c.outbox) void deliver(c, id, out);
}

/**
 * Reads the open chat's history from its cursor once more. While an answer
 * runs with its worker offline nothing else would come: the host ends such
 * an answer when the worker stays away past its lease, on the next read.
 */
export async function recheckChat(): Promise<void> {
  const c = chat.value;
  if (!c || !client.isOpen || c.status !== "ready") return;
  try {
    const page = await client.request({ action: "session_history", session_id: c.sessionId, after: c.transcript.cursor() });
    if (chat.value !== c) return;
    c.transcript.applyPage(page);
    upsertSessions([page.session]);
    bump();
  } catch {
    // The next tick, or the reconnect's watch, tries again.
  }
}

async function deliver(c: ChatState, messageId: string, out: Outgoing): Promise<void> {
  try {
    const data = await client.request({
      action: "message_send",
      session_id: c.sessionId,
      message_id: messageId,
      text: out.text,
      ...(out.model ? { model: out.model } : {}),
    });
    c.outbox.delete(messageId);
    c.transcript.addMessage(data.message);
    bump();
  } catch (e) {
    if (e instanceof ApiError && (e.code === DISCONNECTED || e.code === "timeout")) return; // resent on reconnect
    c.outbox.delete(messageId);
    c.transcript.failLocal(messageId, errorMessage(e));
    bump();
  }
}

/**
 * Why a message cannot be sent as it is (too long for the protocol), in
 * words; `null` when it can. Checked as the user types, so the text is
 * never sent only to be refused.
 */
export function messageTooLarge(text: string): string | null {
  const body = text.trim();
  const encoder = new TextEncoder();
  const bytes = encoder.encode(body).length;
  // The frame that carries it: its JSON escapes count too.
  const frame = encoder.encode(
    JSON.stringify({ action: "message_send", id: "r_000000", session_id: "s".repeat(40), message_id: "m".repeat(40), text: body }),
  ).length;
  if (bytes <= MAX_TEXT_BYTES && frame <= MAX_FRAME_BYTES) return null;
  const kb = (n: number) => `${Math.ceil(n / 1024)} KB`;
  const size = bytes > MAX_TEXT_BYTES ? `is ${kb(bytes)}` : `takes ${kb(frame)} once encoded`;
  return `This message ${size}; a message can be at most ${kb(MAX_TEXT_BYTES)}. Put long text in a file in the project and ask the agent to read it.`;
}

export function sendMessage(text: string): boolean {
  const c = chat.value;
  const body = text.trim();
  if (!c || !body || messageTooLarge(body)) return false;
  askNotificationPermission();
  const id = randomId("msg_");
  const out = outgoing(c, body);
  c.transcript.addLocal(id, body, Date.now());
  c.outbox.set(id, out);
  bump();
  if (client.isOpen) void deliver(c, id, out);
  return true;
}

/** `text` with the model chosen for the chat's session, unless that is the session's own. */
function outgoing(c: ChatState, text: string): Outgoing {
  const model = chosenModel(c.sessionId);
  const own = sessionMap.value.get(c.sessionId)?.model;
  return model && !sameModel(model, own) ? { text, model } : { text };
}

export function retrySend(messageId: string): void {
  const c = chat.value;
  const t = c?.transcript.turn(messageId);
  if (!c || !t?.local) return;
  const text = t.local.text;
  const out = outgoing(c, text);
  c.transcript.addLocal(messageId, text, t.local.createdAt);
  c.outbox.set(messageId, out);
  bump();
  if (client.isOpen) void deliver(c, messageId, out);
}

/** Drops a message the host refused, so it no longer sits in the way. */
export function discardSend(messageId: string): void {
  const c = chat.value;
  const t = c?.transcript.turn(messageId);
  if (!c || t?.local?.state !== "failed") return;
  c.outbox.delete(messageId);
  c.transcript.removeLocal(messageId);
  bump();
}

export async function abortRunning(): Promise<void> {
  const c = chat.value;
  const t = c?.transcript.running();
  if (!c || !t) return;
  try {
    const data = await client.request({ action: "message_abort", message_id: t.messageId });
    c.transcript.addMessage(data.message);
    bump();
  } catch (e) {
    toast(errorMessage(e), "error");
  }
}

export async function answerPrompt(promptId: string, answer: PromptAnswer, label: string): Promise<void> {
  const c = chat.value;
  if (!c) return;
  c.answering.set(promptId, label);
  bump();
  try {
    await client.request({ action: "prompt_reply", prompt_id: promptId, answer });
  } catch (e) {
    if (e instanceof ApiError && e.code === "already_answered") {
      c.answering.set(promptId, "Answered");
    } else {
      c.answering.delete(promptId);
      toast(errorMessage(e), "error");
    }
  }
  bump();
}

export async function startSession(workerId: string, model: ModelRef, title: string): Promise<SessionView> {
  askNotificationPermission();
  const data = await client.request({
    action: "session_start",
    session_id: randomId("ses_"),
    worker_id: workerId,
    model,
    title: title.trim() || undefined,
  });
  upsertSessions([data.session]);
  return data.session;
}

export async function endSession(): Promise<void> {
  const c = chat.value;
  const s = c?.transcript.session;
  if (!c || !s) return;
  const ok = await confirm({
    title: "End this session?",
    body: "A running answer is stopped and no more messages can be sent. The history stays.",
    confirmLabel: "End session",
    danger: true,
  });
  if (!ok) return;
  try {
    const data = await client.request({ action: "session_end", session_id: c.sessionId });
    upsertSessions([data.session]);
    c.transcript.setSession(data.session);
    bump();
    toast("Session ended.", "success");
    navigate({ name: "worker", workerId: s.worker_id });
  } catch (e) {
    toast(errorMessage(e), "error");
  }
}

// ---------------------------------------------------------------------------
// Pairing and workers
// ---------------------------------------------------------------------------

export async function lookupCode(code: string): Promise<WorkerView> {
  const data = await client.request({ action: "pairing_lookup", code: normalizeCode(code) });
  return data.worker;
}

export async function decidePairing(code: string, approve: boolean, name?: string): Promise<WorkerView> {
  const data = approve
    ? await client.request({ action: "pairing_approve", code: normalizeCode(code), name: name?.trim() || undefined })
    : await client.request({ action: "pairing_reject", code: normalizeCode(code) });
  if (approve) upsertWorker(data.worker);
  if (pendingPairings.value) {
    pendingPairings.value = pendingPairings.value.filter((p) => p.worker_id !== data.worker.worker_id);
  }
  return data.worker;
}

/**
 * A one-time pairing token for a headless worker, shown once: the worker
 * started with it is approved for this user at once.
 */
export async function createPairingToken(): Promise<PairingTokenData> {
  return client.request({ action: "pairing_token_create" });
}

/** The command that pairs a headless machine with `token` to this host. */
export function headlessCommand(token: string): string {
  return `tether-worker --server ${location.origin} --token ${token}`;
}

export async function revokeWorker(w: WorkerView): Promise<void> {
  const ok = await confirm({
    title: `Revoke ${w.name}?`,
    body: `The worker on ${w.machine} is disconnected at once and its credential stops working. To use it again, pair it anew.`,
    confirmLabel: "Revoke",
    danger: true,
  });
  if (!ok) return;
  try {
    const data = await client.request({ action: "worker_revoke", worker_id: w.worker_id });
    upsertWorker(data.worker);
    toast(`${w.name} was revoked.`, "success");
  } catch (e) {
    toast(errorMessage(e), "error");
  }
}

// ---------------------------------------------------------------------------
// Boot
// ---------------------------------------------------------------------------

export function boot(): void {
  window.addEventListener("hashchange", () => {
    route.value = parseRoute(location.hash);
    drawerOpen.value = false;
  });
  systemDark?.addEventListener?.("change", (e) => {
    systemTheme.value = e.matches ? "dark" : "light";
  });
  setInterval(() => {
    now.value = Date.now();
  }, 15_000);
  // Presence lapses without an event (a worker that went quiet): refresh now and then.
  setInterval(() => {
    if (client.isOpen && document.visibilityState === "visible") void loadMachines();
  }, 60_000);
  if (secret.value) client.start();
}
