// The types of requests and their replies, by action. `ReplyData` (what
// each action's reply carries in `data`) is generated from the Rust reply
// types, as every wire type is; these only pick from it.

import type { ReplyData, Request, ServerFrame } from "../protocol";

export type { ReplyData };
export type UserAction = keyof ReplyData;
export type RequestOf<A extends UserAction> = Extract<Request, { action: A }>;

/** Every server frame but replies: the events. */
export type ServerEvent = Exclude<ServerFrame, { type: "reply" }>;
