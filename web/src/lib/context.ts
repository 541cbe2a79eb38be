// How full the model's context is, from the figures of the latest step.

import type { Usage } from "../protocol";

/** At this share of the limit the meter warns; at `FULL` it says so. */
export const WARN_AT = 0.8;
export const FULL_AT = 0.95;

export interface ContextMeter {
  /** Tokens the model had in its context at the latest step. */
  used: number;
  limit: number;
  /** `used / limit`, 0 to 1 (more past an overflow, shown as 100%). */
  share: number;
  level: "ok" | "warn" | "full";
}

/**
 * Tokens in the context after a step: what the model read (fresh and from
 * cache) and what it wrote, which the next step reads back.
 */
export function contextTokens(u: Usage): number {
  return u.input + u.cache_read + u.cache_write + u.output + u.reasoning;
}

/** The meter, or nothing when there is no step yet or the model's limit is not known. */
export function contextMeter(step: Usage | undefined, limit: number | null | undefined): ContextMeter | null {
  if (!step || !limit || limit <= 0) return null;
  const used = contextTokens(step);
  const share = used / limit;
  const level = share >= FULL_AT ? "full" : share >= WARN_AT ? "warn" : "ok";
  return { used, limit, share, level };
}
