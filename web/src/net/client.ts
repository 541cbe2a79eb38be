// The browser's websocket client: a one-use ticket from `POST /api/ticket`
// (the secret goes in a header, never in a URL), then `GET /ws?ticket=`.
// Requests get promises resolved by their reply; everything else is an
// event. When the socket drops it reconnects by itself with jittered
// exponential backoff and a new ticket each time; `onOpen` then restores
// what the page had (lists, the watched session from its cursor).

import type { MeData } from "../protocol";
import { Backoff } from "../lib/backoff";
import type { ReplyData, RequestOf, ServerEvent, UserAction } from "./replies";

export type ConnStatus = "idle" | "connecting" | "open" | "waiting";

export interface ConnState {
  status: ConnStatus;
  /** Failed attempts since the last good connection. */
  attempts: number;
  /** When `waiting`: the time of the next attempt. */
  retryAt?: number;
  /** Why the last attempt or connection ended. */
  reason?: string;
  /** Whether a connection has been open since `start`. */
  everOpened: boolean;
}

/** An error reply, or `disconnected` when the socket went away first. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export const DISCONNECTED = "disconnected";

export interface ClientOptions {
  /** The user's secret, read at each connection attempt. */
  secret: () => string | null;
  onEvent: (event: ServerEvent) => void;
  /** The connection is up and `me` answered: restore state here. */
  onOpen: (me: MeData) => void | Promise<void>;
  onState: (state: ConnState) => void;
  /** The host refused the secret: sign out. */
  onUnauthorized: (message: string) => void;
}

interface Pending {
  resolve: (data: unknown) => void;
  reject: (error: ApiError) => void;
  timer: ReturnType<typeof setTimeout>;
}

const REQUEST_TIMEOUT_MS = 20_000;
/** A ping unanswered this long means the connection is dead. */
const PING_TIMEOUT_MS = 10_000;

export class Client {
  private ws?: WebSocket;
  private pending = new Map<string, Pending>();
  private backoff = new Backoff();
  private retryTimer?: ReturnType<typeof setTimeout>;
  private heartbeatTimer?: ReturnType<typeof setInterval>;
  private generation = 0;
  private running = false;
  private nextId = 1;
  private readonly idPrefix = `b${Math.random().toString(36).slice(2, 8)}`;
  private state: ConnState = { status: "idle", attempts: 0, everOpened: false };

  constructor(private readonly options: ClientOptions) {}

  get connState(): ConnState {
    return this.state;
  }

  get isOpen(): boolean {
    return this.state.status === "open";
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.state = { status: "idle", attempts: 0, everOpened: false };
    window.addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", this.wake);
    void this.connect();
  }

  stop(): void {
    this.running = false;
    this.generation++;
    window.removeEventListener("online", this.wake);
    document.removeEventListener("visibilitychange", this.wake);
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      detach(ws);
      ws.close(1000, "signed out");
    }
    this.failPending("signed out");
    this.setState({ status: "idle", attempts: 0, everOpened: false });
  }

  /** Skips the wait before the next attempt. */
  retryNow(): void {
    if (this.running && this.state.status === "waiting") {
      clearTimeout(this.retryTimer);
      void this.connect();
    }
  }

  /** Sends a request; resolves with its reply's data, rejects with an ApiError. */
  request<A extends UserAction>(request: RequestOf<A>): Promise<ReplyData[A]> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ApiError(DISCONNECTED, "not connected"));
    }
    const id = `${this.idPrefix}.${this.nextId++}`;
    return new Promise<ReplyData[A]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ApiError("timeout", `no reply to ${(request as { action: string }).action}`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve: resolve as (d: unknown) => void, reject, timer });
      ws.send(JSON.stringify({ ...request, id }));
    });
  }

  private wake = (): void => {
    if (document.visibilityState === "visible") this.retryNow();
  };

  private setState(state: ConnState): void {
    this.state = state;
    this.options.onState(state);
  }

  private async connect(): Promise<void> {
    const generation = ++this.generation;
    this.setState({ ...this.state, status: "connecting", retryAt: undefined });
    const secret = this.options.secret();
    if (!secret) {
      this.options.onUnauthorized("Sign in with your secret.");
      return;
    }
    let ticket: string;
    try {
      const res = await fetch("/api/ticket", {
        method: "POST",
        headers: { Authorization: `Bearer ${secret}` },
        cache: "no-store",
      });
      if (generation !== this.generation) return;
      if (res.status === 401) {
        this.options.onUnauthorized("The host did not accept this secret.");
        return;
      }
      if (!res.ok) throw new Error(`the host answered ${res.status}`);
      const body = (await res.json()) as { ticket?: string };
      if (!body.ticket) throw new Error("the host sent no ticket");
      ticket = body.ticket;
    } catch (e) {
      if (generation === this.generation) this.scheduleRetry(`cannot reach the host (${errorText(e)})`);
      return;
    }
    if (generation !== this.generation || !this.running) return;

    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/ws?v=1&ticket=${encodeURIComponent(ticket)}`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.scheduleRetry(errorText(e));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => this.onClosed(ws, ev.code === 1000 ? "closed" : `connection lost (${ev.code})`);
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onopen = () => {
      void this.opened(ws);
    };
  }

  private async opened(ws: WebSocket): Promise<void> {
    let me: MeData;
    try {
      me = await this.request({ action: "me" });
    } catch (e) {
      if (this.ws === ws) {
        this.onClosed(ws, `the host did not answer (${errorText(e)})`);
        ws.close();
      }
      return;
    }
    if (this.ws !== ws) return;
    this.backoff.reset();
    this.startHeartbeat(ws, me.heartbeat_ms);
    this.setState({ status: "open", attempts: 0, everOpened: true });
    try {
      await this.options.onOpen(me);
    } catch {
      // The connection dropped while restoring; the next one restores again.
    }
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") return;
    let frame: { type?: string; id?: string | null; ok?: boolean; data?: unknown; error?: { code: string; message: string } };
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "reply") {
      const p = frame.id ? this.pending.get(frame.id) : undefined;
      if (!p || !frame.id) return;
      this.pending.delete(frame.id);
      clearTimeout(p.timer);
      if (frame.ok) p.resolve(frame.data ?? {});
      else p.reject(new ApiError(frame.error?.code ?? "internal", frame.error?.message ?? "request failed"));
      return;
    }
    if (typeof frame.type === "string") {
      try {
        this.options.onEvent(frame as ServerEvent);
      } catch (e) {
        console.error("event handler failed", e);
      }
    }
  }

  private onClosed(ws: WebSocket, reason: string): void {
    if (this.ws !== ws) return;
    detach(ws);
    this.ws = undefined;
    this.stopHeartbeat();
    this.failPending(reason);
    if (this.running) this.scheduleRetry(reason);
  }

  private scheduleRetry(reason: string): void {
    clearTimeout(this.retryTimer);
    const delay = this.backoff.next();
    this.setState({
      status: "waiting",
      attempts: this.backoff.attempts,
      retryAt: Date.now() + delay,
      reason,
      everOpened: this.state.everOpened,
    });
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  private failPending(reason: string): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new ApiError(DISCONNECTED, reason));
    }
  }

  private startHeartbeat(ws: WebSocket, everyMs: number): void {
    this.stopHeartbeat();
    const interval = Math.max(200, everyMs || 60_000);
    this.heartbeatTimer = setInterval(() => {
      if (this.ws !== ws) return;
      const timeout = setTimeout(() => {
        // No answer: the connection is dead even if the browser has not noticed.
        if (this.ws === ws) {
          this.onClosed(ws, "the host stopped answering");
          ws.close();
        }
      }, PING_TIMEOUT_MS);
      this.request({ action: "ping" }).then(
        () => clearTimeout(timeout),
        () => clearTimeout(timeout),
      );
    }, interval);
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }
}

function detach(ws: WebSocket): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
