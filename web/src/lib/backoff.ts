// Reconnect delays: exponential, capped, with jitter so that many browsers
// dropped at once (a host restart) do not all come back in the same instant.

export interface BackoffOptions {
  /** Delay before the first retry, before jitter. */
  baseMs: number;
  /** Growth per failed attempt. */
  factor: number;
  /** Upper bound, before jitter. */
  maxMs: number;
  /** Share of each delay that is random, 0..1 ("equal jitter" at 0.5). */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  baseMs: 500,
  factor: 2,
  maxMs: 15_000,
  jitter: 0.5,
};

/**
 * The delay before retry number `attempt` (0 for the first retry): the
 * capped exponential delay, of which a `jitter` share is drawn at random.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const n = Math.max(0, Math.floor(attempt));
  const capped = Math.min(options.maxMs, options.baseMs * options.factor ** n);
  const jitter = Math.min(1, Math.max(0, options.jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(capped * (1 - jitter) + capped * jitter * r);
}

/** Counts failed attempts; `reset` after a connection has proved itself. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; counts this attempt. */
  next(): number {
    const delay = backoffDelay(this.attempt, this.options, this.random);
    this.attempt += 1;
    return delay;
  }

  /** How many attempts have failed since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
