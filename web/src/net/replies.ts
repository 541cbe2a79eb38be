// What each action's reply carries in `data`. The element types are the
// generated wire types; the envelopes are the handlers' `{ "key": … }`.

import type {
  HistoryPage,
  MachineView,
  MeData,
  MessageView,
  PairingListData,
  PairingTokenData,
  Request,
  ServerFrame,
  SessionView,
  WorkerView,
} from "../protocol";

export interface ReplyData {
  ping: { now: number; heartbeat_ms: number };
  me: MeData;
  machine_list: { machines: MachineView[] };
  pairing_list: PairingListData;
  pairing_lookup: { worker: WorkerView };
  pairing_approve: { worker: WorkerView };
  pairing_reject: { worker: WorkerView };
  pairing_token_create: PairingTokenData;
  worker_revoke: { worker: WorkerView };
  session_start: { session: SessionView };
  session_list: { sessions: SessionView[] };
  session_watch: HistoryPage;
  session_unwatch: Record<string, never>;
  session_history: HistoryPage;
  session_end: { session: SessionView };
  message_send: { message: MessageView };
  message_abort: { message: MessageView };
  prompt_reply: { prompt_id: string };
}

export type UserAction = keyof ReplyData;
export type RequestOf<A extends UserAction> = Extract<Request, { action: A }>;

/** Every server frame but replies: the events. */
export type ServerEvent = Exclude<ServerFrame, { type: "reply" }>;
